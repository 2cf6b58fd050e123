"""Class prompts that nobody has to write: made from the class names or from the labelled rows.

Three ways, each a function from what the user already has to ``{class name: [prompt, ...]}``:

- ``instruct``: instruction-style templates filled with the class name ("Write a text about
  {label}:"), the original notebook's style, for any label set;
- ``source``: the openings (first words) of labelled source rows of each class; the opening carries
  the label's evidence, so the generated row keeps it (``keep_prompt``);
- ``labelled``: ``"{label}:"``, for an LM adapted on the source rows written as ``LABEL: text``
  (label-conditioned adaptation, ``AdaptConfig.labelled``) as well as on the target texts.

A hand-written prompt file (YAML ``classes: {name: [prompt, ...]}``) stays an option.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Instruction templates: generic, so that they fit topics ("World") and tones ("positive") alike.
TEMPLATES = [
    "Write a text about {label}:\n",
    "Here is an example of {label}:\n",
    "Category: {label}\n",
    "The following text is about {label}.\n",
    "An example labelled {label}:\n",
]
LABEL_FORMAT = "{label}: "  # how label-conditioned adaptation writes a labelled row; its prompt is the label part


def instruct_prompts(label_names: list[str], templates: list[str] | None = None) -> dict[str, list[str]]:
    """Every template filled with each class name."""
    templates = templates or TEMPLATES
    return {name: [t.replace("{label}", name) for t in templates] for name in label_names}


def source_prompts(texts: list[str], labels: list[str], label_names: list[str], per_class: int, words: int, seed: int) -> dict[str, list[str]]:
    """The first ``words`` words of up to ``per_class`` rows of each class, drawn with a seeded generator."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in label_names:
        idx = [i for i, y in enumerate(labels) if y == name]
        chosen = rng.permutation(idx)[:per_class] if idx else []
        openings = list(dict.fromkeys(" ".join(texts[i].split()[:words]) for i in chosen))
        out[name] = [o for o in openings if o]
    return out


def labelled_prompts(label_names: list[str]) -> dict[str, list[str]]:
    """The label prefix that label-conditioned adaptation put in front of each source row."""
    return {name: [LABEL_FORMAT.format(label=name).rstrip()] for name in label_names}


def labelled_text(name: str, text: str) -> str:
    """A source row as label-conditioned adaptation trains on it."""
    return LABEL_FORMAT.format(label=name) + text


def write_prompts(classes: dict[str, list[str]], path: str | Path, comment: str) -> Path:
    """Write a prompt file in the format ``generate`` reads (classes in label order)."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {comment}\n" + yaml.safe_dump({"classes": classes}, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path
