"""textlora: LoRA text classifiers under a trainable-parameter budget.

The public API mirrors the CLI verbs.
"""

__version__ = "0.1.0"

from textlora.config import Config, load_config  # noqa: E402
from textlora.errors import UserError  # noqa: E402
from textlora.evaluate import compute_metrics, evaluate  # noqa: E402
from textlora.models import count_trainable, load_classifier  # noqa: E402
from textlora.predict import Classifier, load, predict  # noqa: E402
from textlora.train import train  # noqa: E402

__all__ = [
    "Classifier",
    "Config",
    "UserError",
    "compute_metrics",
    "count_trainable",
    "evaluate",
    "load",
    "load_classifier",
    "load_config",
    "predict",
    "train",
]
