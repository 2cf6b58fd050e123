"""Labelling rounds: the page's classifier retrained on the answers so far, and the pool ranked again.

A :class:`Learner` holds the run's model in memory (built as training built it, the run's adapter
loaded into it), the token ids of the pool and of a replayed sample of the run's own source rows,
and, when the run trains only its top layers (``lora.layers``), the frozen prefix of all of them
(``textlora.prefix``: computed once, or read back from an earlier cache of the same model). A round
then pays only for the top layers:

1. the trainable weights go back to the run's (every round starts from the same classifier, so a
   round never builds on a previous round's noise);
2. a short training (``steps`` steps of ``batch_size`` rows, half the labelled target texts, half
   replayed source rows, the run's learning rate decaying linearly to 0);
3. the labelled texts and a random sample of ``score_limit`` (600) unanswered pool texts (a new
   sample each round; the whole pool when it is smaller, and at start-up) scored (class
   probabilities and the pooled vectors the strategy reads), and the sample ranked by the strategy
   (``textlora.active.choose``). Scoring the whole pool would cost a round more than the rest of it
   together on a CPU; subsampling the pool each round is the usual remedy in deep active learning.

The page runs rounds in a background thread (``textlora.labelling``); the person keeps answering
from the previous ranking meanwhile. The pipeline's ``target.labelled`` trains the final classifier.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np

REPLAY_ROWS = 256  # source rows a round replays beside the labelled target texts
SCORE_LIMIT = 600  # unanswered pool texts a round scores (a random sample when the pool is larger)


@dataclass
class RoundResult:
    order: list[int]  # pool indices, not yet answered, as the strategy ranks them
    labelled: int  # labelled texts the round trained on
    seconds: dict = field(default_factory=dict)  # train, score, total


class Learner:
    def __init__(
        self,
        run,
        texts: list[str],
        strategy: str = "kcenter",
        steps: int = 16,
        batch_size: int = 16,
        seed: int = 0,
        cache: bool = True,
        score_limit: int | None = SCORE_LIMIT,
    ):
        import torch

        from textlora.data import encode_labels, read_texts
        from textlora.device import default_device, resolve_precision
        from textlora.errors import UserError
        from textlora.models import build_model
        from textlora.run import as_run
        from textlora.runtime import encode_texts

        self.run = as_run(run)
        self.config = cfg = self.run.config
        if cfg.data.multi_label:
            raise UserError(f"--model {self.run.path}: a multi-label run; the labelling page asks for one class a text")
        self.names = self.run.labels
        self.strategy, self.steps, self.batch_size, self.seed, self.score_limit = strategy, steps, batch_size, seed, score_limit
        self.device = default_device()
        self.precision = resolve_precision(cfg.train.precision, self.device)
        torch.manual_seed(seed)
        self.model, _ = build_model(cfg, self.names)  # as training built it: the same frozen layers
        self._load_adapter()
        self.model.to(self.device)
        self.start = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(self.run.path))
        self.pad_id = self.tokenizer.pad_token_id or 0
        encode = lambda xs: encode_texts(self.tokenizer, xs, cfg.model.max_length, cfg.model.truncation)  # noqa: E731
        self.pool = encode(texts)
        source = read_texts(cfg.data.train, cfg.data.text_column, cfg.data.label_column)
        pick = np.random.default_rng([seed, 5]).permutation(len(source.texts))[:REPLAY_ROWS]
        self.replay = encode([source.texts[i] for i in pick])
        self.replay_y = encode_labels(source, self.names)[pick]
        self.cache, self.split = None, 0
        if cfg.lora.layers and cache and cfg.train.prefix_cache != "off":
            from textlora.fsutil import cache_dir
            from textlora.prefix import prefix_cache

            self.split = min(cfg.lora.layers)
            t0 = time.perf_counter()
            self.cache = prefix_cache(
                self.model, [*self.pool, *self.replay], self.split, precision=self.precision, device=self.device,
                root=cache_dir() / "prefix", max_memory_gb=cfg.train.prefix_cache_memory_gb,
            )  # fmt: skip
            self.cache_seconds = round(time.perf_counter() - t0, 1)

    def _load_adapter(self) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(self.model, load_file(str(self.run.path / "adapter_model.safetensors")))

    def _attached(self):
        from textlora.prefix import attached

        return attached(self.model, self.cache, self.split) if self.cache is not None else contextlib.nullcontext()

    def round(self, labelled: dict[int, str], n: int, whole: bool = False) -> RoundResult:
        """Train on ``labelled`` (pool index -> class name) from the run's weights, score the pool (a
        sample of it unless ``whole``), and return the first ``n`` texts not in ``labelled`` (nor
        skipped: pass those with an empty name) in the strategy's order."""

        from textlora.active import choose

        t0 = time.perf_counter()
        rows = [(k, self.names.index(name)) for k, name in labelled.items() if name]
        self._train(rows)
        t1 = time.perf_counter()
        free = np.setdiff1d(np.arange(len(self.pool)), np.fromiter(labelled, dtype=np.int64, count=len(labelled)))
        if not whole and self.score_limit and len(free) > self.score_limit:
            free = np.sort(np.random.default_rng([self.seed, len(labelled), 11]).choice(free, self.score_limit, replace=False))
        scored = np.union1d(free, np.fromiter(labelled, dtype=np.int64, count=len(labelled)))
        probs, pooled = self.score(scored)
        done = np.flatnonzero(np.isin(scored, list(labelled)))
        order = [int(scored[i]) for i in choose(self.strategy, n, len(scored), done, probs, pooled, seed=self.seed + len(labelled))]
        t2 = time.perf_counter()
        return RoundResult(order, len(rows), {"train": round(t1 - t0, 2), "score": round(t2 - t1, 2), "total": round(t2 - t0, 2)})

    def _train(self, rows: list[tuple[int, int]]) -> None:
        import torch

        from textlora.device import autocast
        from textlora.runtime import optimizer_step, pad_batch

        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if name in self.start:
                    p.copy_(self.start[name])
        if not rows:
            return
        params = [p for p in self.model.parameters() if p.requires_grad]
        cfg = self.config.train
        opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / self.steps)
        rng = np.random.default_rng([self.seed, len(rows)])  # a round is a function of its labels: the same labels, the same ranking
        torch.manual_seed(self.seed + len(rows))  # dropout
        half = self.batch_size // 2
        self.model.train()
        with self._attached():
            for _ in range(self.steps):
                mine = rng.choice(len(rows), min(half, len(rows)), replace=False)
                other = rng.choice(len(self.replay), min(self.batch_size - len(mine), len(self.replay)), replace=False)
                seqs = [self.pool[rows[i][0]] for i in mine] + [self.replay[i] for i in other]
                y = torch.tensor([rows[i][1] for i in mine] + [int(self.replay_y[i]) for i in other], device=self.device)
                ids, mask = pad_batch(seqs, self.pad_id)
                with autocast(self.precision, self.device):
                    logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
                torch.nn.functional.cross_entropy(logits.float(), y).backward()
                optimizer_step(opt, sched, params, cfg.max_grad_norm)
        self.model.eval()

    def score(self, which=None) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities and pooled vectors of the pool texts ``which`` (default: all), from the model as it is now."""
        from textlora.active import probabilities_and_pooled

        texts = self.pool if which is None else [self.pool[int(k)] for k in which]
        with self._attached():
            return probabilities_and_pooled(self.model, texts, self.pad_id, len(self.names), self.config, self.precision, self.device)
