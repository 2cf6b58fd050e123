"""Minutes a training plan costs on this machine, measured: the planner's time budget.

Two passes of one batch (the run's batch size, at its texts' mean token length) are timed on the
model itself (random weights: the speed is the same): a forward pass without gradients, and a
training step (forward and backward) with LoRA on every layer. Divided by the number of layers they
give what one layer costs each way; the encoder's blocks are alike, so a plan's cost follows:

- LoRA on the top k of L layers with the prefix cache: the cache once (L - k frozen layers forward
  over every distinct text), then each epoch k layers trained a batch, and dev and the eval sets
  forward through k layers;
- without the cache (k = L, or ``train.prefix_cache: off``): every step also runs the L - k frozen
  layers forward.

The adapters' own work (a few percent at the planner's ranks) and the optimizer step are not
modelled; on the CPUs measured the estimate lands within about 20% of the run (docs/results.md).
With ``budget.max_train_minutes`` the planner takes the most layers whose estimate fits
(:func:`choose_layers`); ``textlora budget`` prints the estimate of the plan.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from textlora.runtime import PAD_MULTIPLE


@dataclass
class Timing:
    """Measured seconds per batch for one layer, and the sizes of the run they are for."""

    forward_s: float  # one layer, one batch, no gradients
    train_s: float  # one layer with LoRA, one batch, forward and backward
    num_layers: int
    batch_size: int
    length: int  # tokens a row in the timed batch (the texts' mean, rounded up to a multiple of 8)
    train_rows: int
    eval_rows: int  # dev and eval sets, scored every epoch
    cached_texts: int  # distinct texts the prefix cache would hold

    def cache_minutes(self, k: int, cache: bool = True) -> float:
        """The one-time prefix cache for LoRA on the top ``k`` layers (0 when there is none)."""
        if k >= self.num_layers or not cache:
            return 0.0
        return math.ceil(self.cached_texts / self.batch_size) * (self.num_layers - k) * self.forward_s / 60

    def epoch_minutes(self, k: int, cache: bool = True) -> float:
        """One epoch: training steps, then dev and the eval sets scored."""
        frozen = 0 if cache or k >= self.num_layers else self.num_layers - k
        steps = math.ceil(self.train_rows / self.batch_size)
        evals = math.ceil(self.eval_rows / self.batch_size)
        depth = k if cache else self.num_layers
        return (steps * (k * self.train_s + frozen * self.forward_s) + evals * depth * self.forward_s) / 60

    def total_minutes(self, k: int, epochs: float, cache: bool = True) -> float:
        return self.cache_minutes(k, cache) + epochs * self.epoch_minutes(k, cache)

    def describe(self, k: int, epochs: float, cache: bool = True) -> str:
        where = "all layers" if k >= self.num_layers else f"top {k} of {self.num_layers} layers" + (" with the prefix cache" if cache else "")
        once = f"{self.cache_minutes(k, cache):.1f} min once for the cache + " if self.cache_minutes(k, cache) else ""
        return (
            f"estimated on this machine ({where}): {once}{self.epoch_minutes(k, cache):.1f} min an epoch, "
            f"{self.total_minutes(k, epochs, cache):.1f} min for {epochs:g} epoch(s) "
            f"[{self.train_rows:,} training rows, {self.eval_rows:,} scored each epoch, batch {self.batch_size} at ~{self.length} tokens; "
            f"a layer: {1000 * self.forward_s:.0f} ms forward, {1000 * self.train_s:.0f} ms trained, a batch]"
        )


def mean_length(tokenizer, texts: list, max_length: int) -> int:
    """The texts' mean token length (a sample of them), rounded up to the multiple of 8 batches are padded to."""
    from textlora.runtime import encode_texts

    sample = texts[:: max(1, len(texts) // 2000)]
    lengths = [len(ids) for ids in encode_texts(tokenizer, sample, max_length)] or [8]
    return int(-(-round(sum(lengths) / len(lengths)) // PAD_MULTIPLE) * PAD_MULTIPLE)


def measure(model, *, batch_size: int, length: int, precision: str, device, repeats: int = 2) -> tuple[float, float]:
    """(seconds a batch forward without gradients, seconds a batch trained) for the whole ``model``,
    a peft model with LoRA on every layer; each the best of ``repeats`` after a warm-up."""
    import torch

    from textlora.device import autocast

    model.to(device)
    vocab = model.config.vocab_size
    ids = torch.randint(min(1000, vocab - 1), vocab, (batch_size, length), device=device)
    mask = torch.ones_like(ids)
    labels = torch.zeros(batch_size, dtype=torch.long, device=device)

    def forward() -> None:
        model.eval()
        with torch.inference_mode(), autocast(precision, device):
            model(input_ids=ids, attention_mask=mask)

    def step() -> None:
        model.train()
        with autocast(precision, device):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return min(times)

    return best(forward), best(step)


def time_plan(config, label_names: list[str], train_texts: list, *, eval_rows: int) -> Timing:
    """Measure ``config``'s model on this machine (LoRA on every layer, the config's rank and
    targets) for ``train_texts`` and ``eval_rows`` rows scored each epoch (the prefix cache would
    hold both); ``config`` is a resolved config (textlora.resolve)."""
    import copy

    from textlora.device import default_device, resolve_precision
    from textlora.models import build_model, load_tokenizer

    config = copy.deepcopy(config)
    config.lora.layers = None
    model, _ = build_model(config, label_names, weights=False)
    device = default_device()
    precision = resolve_precision(config.train.precision, device)
    length = mean_length(load_tokenizer(config.model.name), train_texts, config.model.max_length)
    forward_s, train_s = measure(model, batch_size=config.train.batch_size, length=length, precision=precision, device=device)
    layers = model.get_base_model().config.num_hidden_layers
    return Timing(forward_s / layers, train_s / layers, layers, config.train.batch_size, length, len(train_texts), eval_rows, len(train_texts) + eval_rows)


def choose_layers(timing: Timing, minutes: float, epochs: float, cache: bool = True) -> tuple[int, bool]:
    """The most layers (top k) whose estimate fits ``minutes``, and whether it fits (else the top 1)."""
    for k in range(timing.num_layers, 0, -1):
        if timing.total_minutes(k, epochs, cache) <= minutes:
            return k, True
    return 1, False
