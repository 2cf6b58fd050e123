"""What a pipeline's stages share: the config, the output folder, what was read once, and each
stage's result. Stages read and extend it; none reads another stage's files to learn its result."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

SYNTHETIC_SET = "synthetic"  # the eval set of held-out generated rows
LABELLED_SET = "labelled"  # the eval set of target texts a person labelled (target.labelled): it chooses


@dataclass
class Context:
    config: object  # textlora.pipeline.PipelineConfig
    out: Path
    source: object = None  # the classifier's config as the user wrote it (textlora.config.Config), read once
    label_names: list[str] = field(default_factory=list)
    target_texts: list = field(default_factory=list)  # the unlabelled target texts, read once
    eval_files: list[str] = field(default_factory=list)  # labelled files never trained or adapted on
    eval_sets: dict = field(default_factory=dict)  # name -> file, evaluated by every classifier
    extra_train: list[str] = field(default_factory=list)  # rows the classifier trains on beside the source rows
    notes: list[str] = field(default_factory=list)  # what the summary must say (e.g. a class with no synthetic rows)
    results: dict = field(default_factory=dict)  # stage name -> textlora.stages.StageResult
    resolved: dict = field(default_factory=dict)  # stage name -> the settings it ran with, auto values resolved
    run: Path | None = None  # the classifier that teaches the next round and is evaluated: the latest, or the best on the labelled target rows
    candidates: list = field(default_factory=list)  # (stage, run directory, accuracy on the labelled target rows) of each classifier trained
    splits: object = None  # the classifier's split of the source rows alone (textlora.data.Splits), made once
    skip_synthetic: str | None = None  # why adapt/generate/filter are skipped (the trial's rows failed), else None

    def note(self, text: str, warn: bool = False) -> None:
        self.notes.append(text)
        if warn:
            print(f"warning: {text}", flush=True)

    def source_splits(self):
        """The classifier's own split of the source rows; made once a run."""
        if self.splits is None:
            self.splits = source_splits(self.source)
        return self.splits

    def source_split_file(self) -> Path:
        """The source training split (the dev split left out) as text + label name: what prompts and labelled adaptation may see."""
        import pandas as pd

        splits = self.source_splits()
        path = self.out / "source_train_split.csv"
        pd.DataFrame({"text": splits.train_texts, "label": [splits.label_names[k] for k in splits.train_labels]}).to_csv(path, index=False)
        return path


def source_splits(source, seed: int | None = None):
    """The split of the source rows alone (textlora.data.Splits) that a classifier config makes at
    ``seed`` (default: its own): no extra rows, no eval sets."""
    from textlora.data import load_splits

    cfg = copy.deepcopy(source)
    cfg.data.extra_train = []
    cfg.data.eval_sets = {}
    return load_splits(cfg.data, cfg.seed if seed is None else seed)
