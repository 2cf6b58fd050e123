"""Loading a causal LM for ``adapt`` and ``generate``: a hub id, a local folder, or an alias
(``smollm2``: the pip-packaged SmolLM2-135M-Instruct, converted once from its GGUF file; where
weights come from is ``textlora.registry``'s)."""

from __future__ import annotations

from textlora.errors import UserError
from textlora.registry import resolve_model_path


def load_causal_lm(name: str):
    """(model, tokenizer) with a pad token and left padding, ready for batched generation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(name)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise UserError(f"model '{name}': cannot load as a causal LM ({str(e).splitlines()[0][:200]})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return model, tok
