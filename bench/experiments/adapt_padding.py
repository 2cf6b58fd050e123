"""How much of adaptation's compute is padding? The main job's adaptation batches (1,500 AG News
target texts, 16 a batch, max_length 96, the step plan `adapt` draws), with real tokens against
the tokens computed (each batch padded to its longest text, a multiple of 8). Packing texts into
full blocks could save at most the padding share.

    python bench/adapt_padding.py
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from transformers import AutoTokenizer

from textlora.augment.adapt import AdaptConfig, _encode, _step_plan
from textlora.registry import resolve_model_path
from textlora.runtime import PAD_MULTIPLE


def main() -> None:
    cfg = AdaptConfig(texts="../shared/data/agnews/target_unlabelled.csv", output_dir="unused", max_texts=1500, max_length=96, batch_size=16)
    tok = AutoTokenizer.from_pretrained(str(resolve_model_path(cfg.model)))
    texts = pd.read_csv(cfg.texts)[cfg.text_column].astype(str).tolist()
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(texts))
    train = [texts[i] for i in order[cfg.heldout :][: cfg.max_texts]]
    enc = _encode(tok, train, cfg.max_length)
    steps = int(np.ceil(len(enc) / cfg.batch_size))
    real = computed = 0
    for idx in _step_plan(enc, cfg.batch_size, steps, rng):
        lengths = [len(enc[i]) for i in idx]
        real += sum(lengths)
        computed += -(-max(lengths) // PAD_MULTIPLE) * PAD_MULTIPLE * len(lengths)
    print(f"{len(enc)} texts, {np.mean([len(e) for e in enc]):.1f} tokens on average, {np.mean([len(e) >= cfg.max_length for e in enc]):.1%} cut at {cfg.max_length}")
    print(f"one epoch: {real:,} real tokens of {computed:,} computed: {1 - real / computed:.1%} padding")


if __name__ == "__main__":
    main()
