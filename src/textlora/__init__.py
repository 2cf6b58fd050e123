"""textlora: LoRA text classifiers under a trainable-parameter budget.

The public API mirrors the CLI verbs. Its names are imported on first use, so that importing one
submodule (``textlora.config``, say) does not import them all.
"""

from textlora.version import __version__

_API = {
    "Classifier": "textlora.prediction",
    "Config": "textlora.config",
    "UserError": "textlora.errors",
    "compute_metrics": "textlora.metrics",
    "count_trainable": "textlora.models",
    "evaluate": "textlora.evaluation",
    "load": "textlora.prediction",
    "load_classifier": "textlora.models",
    "load_config": "textlora.config",
    "predict": "textlora.prediction",
    "train": "textlora.training",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'textlora' has no attribute {name!r}")
