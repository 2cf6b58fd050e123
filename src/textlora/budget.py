"""The budget verb: the trainable-parameter breakdown of a config, without training."""

from __future__ import annotations


def budget(config_path: str, overrides: list[str] | None = None) -> str:
    """Print the trainable-parameter breakdown (LoRA, head, biases, other) against the budget.

    The model is built from its config with random weights (no weight download). The number of
    classes comes from data.label_names, else from the labels of data.train.
    """
    from textlora.config import load_config
    from textlora.data import label_names_for, read_texts
    from textlora.models import build_model

    config = load_config(config_path, overrides)
    names = config.data.label_names
    if not names:
        frame = read_texts(config.data.train, config.data.text_column, config.data.label_column)
        names = label_names_for(frame.labels, None, config.data.train)
    _, breakdown = build_model(config, names, weights=False)
    return (
        f"model {config.model.name}, {len(names)} classes, LoRA r={config.lora.r} on {', '.join(config.lora.target_modules)}, bias {config.lora.bias}\n"
        + breakdown.format(config.budget.max_trainable_params)
    )
