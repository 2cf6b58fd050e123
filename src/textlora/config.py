"""Run configuration: one dataclass per concern, read from YAML plus dotted CLI overrides.

Every default lives here with a one-line comment. ``load_config`` turns a YAML file and
``--section.key value`` overrides into a validated :class:`Config`; any unknown key or value of
the wrong type is a :class:`UserError` naming the key.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from textlora.errors import UserError
from textlora.runtime import TRUNCATIONS


@dataclass
class ModelConfig:
    name: str = "minilm"  # hub id, local folder, or alias ("minilm": the pip-packaged all-MiniLM-L6-v2)
    max_length: int | str = 128  # tokens per text, longer texts are truncated; auto: the 90th percentile of the training texts (at most 512)
    max_length_percentile: float | None = None  # if set, cap max_length at this percentile of the training texts' lengths
    truncation: str = "head"  # a text over max_length keeps: head (its start) | head_tail (its first quarter and its end)
    dropout: float | None = None  # overrides every dropout of the base model while training; None keeps the model's own
    attn_implementation: str = "auto"  # auto (eager on CPU: faster for short texts there; sdpa on GPU) | eager | sdpa
    head: str = "standard"  # standard (the model's own) | linear | mlp (first token) | mean (masked mean of the tokens) | auto (the planner's)
    head_hidden: int = 64  # width of the mlp head's hidden layer

    def __post_init__(self) -> None:
        check(
            self.max_length == "auto" or (isinstance(self.max_length, int) and self.max_length >= 8),
            "model.max_length",
            "an integer >= 8 or auto",
            self.max_length,
        )
        if self.max_length_percentile is not None:
            check(50 <= self.max_length_percentile <= 100, "model.max_length_percentile", "a number in [50, 100]", self.max_length_percentile)
        check(self.truncation in TRUNCATIONS, "model.truncation", " or ".join(TRUNCATIONS), self.truncation)
        if self.dropout is not None:
            check(0 <= self.dropout < 1, "model.dropout", "a number in [0, 1) or null", self.dropout)
        check(self.attn_implementation in ("auto", "eager", "sdpa"), "model.attn_implementation", "auto, eager or sdpa", self.attn_implementation)
        check(self.head in ("auto", "standard", "linear", "mlp", "mean"), "model.head", "auto, standard, linear, mlp or mean", self.head)
        check(self.head_hidden >= 1, "model.head_hidden", "an integer >= 1", self.head_hidden)


@dataclass
class LoraSettings:
    r: int = 4  # rank of each LoRA update
    alpha: float = 64  # scaling numerator: the update is scaled by alpha / r
    dropout: float = 0.1  # dropout on the LoRA input
    target_modules: list[str] | None = None  # None: the model family's attention projections (textlora.registry), e.g. query/key/value for BERT
    bias: str = "all"  # which biases train: none | all | lora_only
    method: str = "lora"  # lora | dora (LoRA plus a learned magnitude per output) | vera (shared frozen random matrices, trained scaling vectors)
    auto: bool = False  # let the budget planner choose r, alpha, target_modules and bias (write `lora: auto`)
    layers: int | list[int] | None = None  # LoRA (and trained biases) in the top k layers (an integer) or in these layers (0 = the lowest); None: every layer

    def __post_init__(self) -> None:
        check(self.r >= 1, "lora.r", "an integer >= 1", self.r)
        check(0 <= self.dropout < 1, "lora.dropout", "a number in [0, 1)", self.dropout)
        check(self.target_modules is None or len(self.target_modules) > 0, "lora.target_modules", "a non-empty list or null", self.target_modules)
        check(self.bias in ("none", "all", "lora_only"), "lora.bias", "none, all or lora_only", self.bias)
        check(self.method in ("lora", "dora", "vera"), "lora.method", "lora, dora or vera", self.method)
        if isinstance(self.layers, int):
            check(self.layers >= 1, "lora.layers", "a number of top layers >= 1, or a non-empty list of layer indices", self.layers)
        elif self.layers is not None:
            check(len(self.layers) > 0 and all(i >= 0 for i in self.layers), "lora.layers", "a number of top layers >= 1, or a non-empty list of layer indices >= 0", self.layers)


@dataclass
class BudgetConfig:
    max_trainable_params: int = 1_000_000  # training refuses to start above this
    max_train_minutes: float | None = None  # with lora.layers unset: LoRA on the most top layers whose cost, timed on this machine, fits

    def __post_init__(self) -> None:
        check(self.max_trainable_params >= 1, "budget.max_trainable_params", "an integer >= 1", self.max_trainable_params)
        if self.max_train_minutes is not None:
            check(self.max_train_minutes > 0, "budget.max_train_minutes", "a number of minutes > 0, or null", self.max_train_minutes)


@dataclass
class DataConfig:
    train: str | None = None  # the labelled rows (required to train): CSV, TSV, JSONL, Parquet, or "hf:NAME[:SPLIT]"
    text_column: str = "text"  # the column that holds the text
    text_pair_column: str | None = None  # a second text column: each row is tokenized as the pair (text, pair)
    label_column: str = "label"  # the column that holds the label (a name or an integer)
    label_names: list[str] | None = None  # names for integer labels 0..K-1; default: the labels themselves
    multi_label: bool = False  # each row has a set of labels: a JSON list ("[\"World\", \"Business\"]") or a list in JSONL/Parquet
    label_separator: str | None = None  # multi_label: labels written as one string split on this (e.g. "|") instead of JSON
    extra_train: list[str] = field(default_factory=list)  # extra rows (e.g. synthetic): training split only
    val_fraction: float = 0.1  # stratified, seeded dev split taken from `train` before extras are added
    dev: str | None = None  # a labelled dev file to use instead of splitting `train` (then val_fraction is unused)
    min_words: int = 0  # training rows with fewer words are dropped
    max_words: int | None = None  # training rows with more words are dropped
    eval_sets: dict[str, str] = field(default_factory=dict)  # name -> labelled file, evaluated with the dev split (never trained on)
    target_texts: str | None = None  # unlabelled texts of the domain the classifier is for: what train.target_objective learns from; with lora.layers their frozen-layer states are cached too (predict reads them back)
    target_text_column: str = "text"  # the column of target_texts that holds the text

    def __post_init__(self) -> None:
        for name in self.eval_sets:
            check(
                name not in ("dev", "") and "." not in name and "/" not in name, f"data.eval_sets.{name}", "a name other than 'dev', without '.' or '/'", name
            )
        check(0 < self.val_fraction < 1, "data.val_fraction", "a number in (0, 1)", self.val_fraction)
        check(self.min_words >= 0, "data.min_words", "an integer >= 0", self.min_words)
        if self.max_words is not None:
            check(self.max_words >= max(self.min_words, 1), "data.max_words", f"an integer >= {max(self.min_words, 1)}", self.max_words)


@dataclass
class TrainConfig:
    epochs: float = 1  # may be fractional
    max_steps: int | None = None  # if set, overrides epochs
    batch_size: int = 32  # per process, per step (the global batch is this x grad_accum x processes)
    eval_batch_size: int = 32  # small batches stay in cache: on 2 cores, 32 rows ran ~1.8x faster than 256
    learning_rate: float = 5e-4  # LoRA wants 10-50x a full fine-tune's rate
    weight_decay: float = 0.01  # not applied to biases and LayerNorm weights
    warmup_ratio: float = 0.06  # fraction of all optimizer steps spent warming up linearly
    lr_scheduler: str = "linear"  # linear | cosine | constant
    optimizer: str = "adamw"  # adamw | sgd
    grad_accum: int = 1  # micro-batches per optimizer step
    max_grad_norm: float = 1.0  # 0 disables clipping
    gradient_checkpointing: bool = False  # trades compute for memory; off unless asked
    precision: str = "auto"  # auto | bf16 | fp16 | fp32 (auto: bf16 where the CPU/GPU has it)
    logging_steps: int = 50  # a training-loss line (and TensorBoard point) every this many steps
    eval_strategy: str = "epoch"  # epoch | steps
    eval_steps: int = 500  # with eval_strategy: steps (checkpoints are saved at each evaluation)
    save_total_limit: int = 2  # checkpoints kept (the best one is always kept)
    metric_for_best: str = "accuracy"  # accuracy | macro_f1 | loss on the dev split, or SET.accuracy (etc.) for a data.eval_sets entry
    early_stopping_patience: int = 0  # evaluations without improvement before stopping; 0 = never
    label_smoothing: float = 0.0  # share of each target spread over the other classes (0: none)
    class_weights: str = "none"  # none | balanced (loss weights n_rows / (n_classes * n_rows_of_class))
    prefix_cache: str = "auto"  # with lora.layers: auto (the frozen layers' output computed once, kept under the cache folder) | off (recomputed every step)
    prefix_cache_memory_gb: float = 4.0  # a prefix cache up to this size is held in memory; a larger one is read from its memory-mapped file
    target_objective: str = "none"  # none | contrastive (SimCSE on data.target_texts) | mlm (masked-LM on them, UDALM): learnt with the classifier, through its LoRA
    target_weight: float | str = "auto"  # w in (1 - w) * classification + w * target loss; auto: m / (n + m), m target texts, n training rows
    target_batch_size: int = 16  # target texts a step (contrastive: each passes twice)

    def __post_init__(self) -> None:
        check(self.epochs > 0, "train.epochs", "a number > 0", self.epochs)
        if self.max_steps is not None:
            check(self.max_steps >= 1, "train.max_steps", "an integer >= 1", self.max_steps)
        check(self.batch_size >= 1, "train.batch_size", "an integer >= 1", self.batch_size)
        check(self.eval_batch_size >= 1, "train.eval_batch_size", "an integer >= 1", self.eval_batch_size)
        check(self.learning_rate > 0, "train.learning_rate", "a number > 0", self.learning_rate)
        check(self.weight_decay >= 0, "train.weight_decay", "a number >= 0", self.weight_decay)
        check(0 <= self.warmup_ratio < 1, "train.warmup_ratio", "a number in [0, 1)", self.warmup_ratio)
        check(self.lr_scheduler in ("linear", "cosine", "constant"), "train.lr_scheduler", "linear, cosine or constant", self.lr_scheduler)
        check(self.optimizer in ("adamw", "sgd"), "train.optimizer", "adamw or sgd", self.optimizer)
        check(self.grad_accum >= 1, "train.grad_accum", "an integer >= 1", self.grad_accum)
        check(self.precision in ("auto", "bf16", "fp16", "fp32"), "train.precision", "auto, bf16, fp16 or fp32", self.precision)
        check(self.logging_steps >= 1, "train.logging_steps", "an integer >= 1", self.logging_steps)
        check(self.eval_strategy in ("epoch", "steps"), "train.eval_strategy", "epoch or steps", self.eval_strategy)
        check(self.eval_steps >= 1, "train.eval_steps", "an integer >= 1", self.eval_steps)
        check(self.save_total_limit >= 1, "train.save_total_limit", "an integer >= 1", self.save_total_limit)
        check(
            self.metric_for_best.rsplit(".", 1)[-1] in ("accuracy", "macro_f1", "loss"),
            "train.metric_for_best",
            "accuracy, macro_f1 or loss, or SET.accuracy / SET.macro_f1 / SET.loss for an eval set",
            self.metric_for_best,
        )
        check(self.early_stopping_patience >= 0, "train.early_stopping_patience", "an integer >= 0", self.early_stopping_patience)
        check(0 <= self.label_smoothing < 1, "train.label_smoothing", "a number in [0, 1)", self.label_smoothing)
        check(self.class_weights in ("none", "balanced"), "train.class_weights", "none or balanced", self.class_weights)
        check(self.prefix_cache in ("auto", "off"), "train.prefix_cache", "auto or off", self.prefix_cache)
        check(self.prefix_cache_memory_gb >= 0, "train.prefix_cache_memory_gb", "a number >= 0", self.prefix_cache_memory_gb)
        check(self.target_objective in ("none", "contrastive", "mlm"), "train.target_objective", "none, contrastive or mlm", self.target_objective)
        check(
            self.target_weight == "auto" or (not isinstance(self.target_weight, str) and 0 < self.target_weight < 1),
            "train.target_weight",
            "auto or a number in (0, 1)",
            self.target_weight,
        )
        check(self.target_batch_size >= 2, "train.target_batch_size", "an integer >= 2", self.target_batch_size)


@dataclass
class Config:
    output_dir: str = "runs/default"  # the run directory: adapter, tokenizer, labels, config, metrics
    seed: int = 42  # seeds the split, the shuffling, dropout and the head's initialisation
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if "." in self.train.metric_for_best:
            name = self.train.metric_for_best.rsplit(".", 1)[0]
            check(
                name in self.data.eval_sets, "train.metric_for_best", f"an eval set named in data.eval_sets ({', '.join(self.data.eval_sets) or 'none'})", name
            )
        if self.train.target_objective != "none":
            check(self.data.target_texts is not None, "data.target_texts", f"a file of target texts for train.target_objective: {self.train.target_objective}", None)
            check(self.data.text_pair_column is None, "train.target_objective", "none with data.text_pair_column (text pairs)", self.train.target_objective)
        if self.data.multi_label:  # one sigmoid a class: these settings are for a softmax over classes
            check(self.train.class_weights == "none", "train.class_weights", "none with data.multi_label", self.train.class_weights)
            check(self.train.label_smoothing == 0, "train.label_smoothing", "0 with data.multi_label", self.train.label_smoothing)
        check(
            self.data.label_separator is None or self.data.multi_label,
            "data.label_separator",
            "unset unless data.multi_label is true",
            self.data.label_separator,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check(ok: bool, key: str, expected: str, found: Any) -> None:
    if not ok:
        raise UserError(f"config: {key}: expected {expected}, found {found!r}")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the type hint ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        first = None
        for option in inner:  # int | str: the first type that takes the value (128 is an int, "auto" a string)
            try:
                return _coerce(value, option, key)
            except UserError as e:
                first = first or e
        raise first
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise UserError(f"config: {key}: expected a mapping, found {value!r}")
        return {_coerce(k, key_tp, key): _coerce(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):  # a single string is a one-item list
            value = [value]
        if not isinstance(value, list):
            raise UserError(f"config: {key}: expected a list, found {value!r}")
        return [_coerce(v, item, key) for v in value]
    if tp is float:
        if isinstance(value, str):  # YAML reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"config: {key}: expected a number, found {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"config: {key}: expected an integer, found {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"config: {key}: expected true or false, found {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise UserError(f"config: {key}: expected a string, found {value!r}")
        return str(value)
    raise TypeError(f"unsupported config type {tp} for {key}")


def build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise UserError(f"config: {prefix.rstrip('.') or 'top level'}: expected a mapping, found {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise UserError(f"config: unknown key '{full}' (known: {', '.join(sorted(names))})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = build(tp, value if value is not None else {}, f"{full}.")
        else:
            kwargs[key] = _coerce(value, tp, full)
    return cls(**kwargs)


# Settings that textlora no longer has: accepted (old configs and runs keep loading) and ignored.
RETIRED = {("train", "num_workers"): "batches are tokenized up front; there were never any workers"}


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build and validate a Config from a nested dict (as read from YAML)."""
    if raw.get("lora") == "auto":  # `lora: auto` is short for letting the budget planner choose
        raw = {**raw, "lora": {"auto": True}}
    for (section, key), why in RETIRED.items():
        if isinstance(raw.get(section), dict) and key in raw[section]:
            raw = {**raw, section: {k: v for k, v in raw[section].items() if k != key}}
            print(f"textlora: config: {section}.{key} is ignored ({why})", file=sys.stderr)
    return build(Config, raw, "")


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """Turn ``["--train.epochs", "3", "--lora.r=8"]`` into a nested dict; values are parsed as YAML."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise UserError(f"override {arg!r}: expected --section.key VALUE")
        if "=" in arg:
            key, text = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise UserError(f"override {arg}: missing a value")
            key, text = arg[2:], args[i + 1]
            i += 2
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"override --{key}: '{part}' is not a section")
        node[parts[-1]] = value
    return out


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config {path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"config {path}: not valid YAML ({first})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"config {path}: expected a mapping of sections, found {type(raw).__name__}")
    return raw


def load_config(path: str | Path | None, overrides: list[str] | None = None, cls: type | None = None):
    """Read a YAML config (or the defaults if ``path`` is None) and apply dotted overrides.

    ``cls`` is the dataclass to build (default: the training :class:`Config`).
    """
    raw = read_yaml(path) if path is not None else {}
    raw = merge(raw, parse_overrides(overrides or []))
    try:
        return config_from_dict(raw) if cls is None else build(cls, raw, "")
    except UserError as e:
        if path is not None:
            raise UserError(f"{e} (in {path})") from None
        raise


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
