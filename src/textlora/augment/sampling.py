"""Batched sampling from a causal LM: transformers' sampling settings at the hardware's speed.

``generate()`` in transformers applies, at every step and for every row, the repetition penalty,
then top-k, then top-p over the whole vocabulary (top-p sorts all 49k logits of SmolLM2), and
keeps computing rows that have already stopped. This loop gives the same distribution with less
work:

- the repetition penalty touches only the tokens a row has seen (gather/scatter);
- top-p is applied to the ``top_k`` candidates only: after top-k every other token has
  probability 0, so sorting the rest changes nothing;
- each row stops at its own length (or EOS) and finished rows leave the batch, KV cache included;
- the model runs in bf16 weights (not autocast) where the hardware has bf16;
- a decode step's attention is two small matmuls (``_decode_attention``), not torch's flash kernel.

Sampling draws from a ``torch.Generator`` seeded by the caller, so a batch gives the same rows
whenever it is run (what makes ``generate`` resumable).
"""

from __future__ import annotations

from dataclasses import dataclass

from textlora.registry import family_for

COMPACT_AT = 0.8  # finished rows leave the batch once at most this share of it is still sampling


@dataclass
class SamplingSettings:
    top_k: int = 50  # 0: no top-k
    top_p: float = 0.95  # 1.0: no top-p
    repetition_penalty: float = 1.3  # 1.0: none; >1 lowers the logits of tokens already in the row


def candidates(logits, seen, s: SamplingSettings):
    """(token ids, probabilities) of the tokens a row may sample next.

    Args:
        logits: (B, V) next-token logits, in any float dtype (not modified).
        seen: (B, T) token ids already in each row (prompt and generated), for the penalty.
        s: the sampling settings.

    Returns:
        ids (B, k) and probs (B, k): the top-k tokens after the penalty, with top-p applied
        (removed tokens get probability 0), rows summing to 1.
    """
    import torch

    vocab = logits.shape[1]
    k = s.top_k if 0 < s.top_k < vocab else vocab
    if s.repetition_penalty == 1.0:
        vals, ids = logits.topk(k, dim=1)  # (B, k), sorted descending
        vals = vals.float()
    else:
        # The penalty only lowers scores, so the top k after it lie within the top k + T before it
        # (at most T of those are penalised): no write to the (B, V) logits at all.
        vals, ids = logits.topk(min(vocab, k + seen.shape[1]), dim=1)
        vals = vals.float()
        hit = (ids[:, :, None] == seen[:, None, :]).any(dim=2)
        p = s.repetition_penalty
        vals = torch.where(hit, torch.where(vals < 0, vals * p, vals / p), vals)
        vals, order = vals.topk(k, dim=1)
        ids = ids.gather(1, order)
    probs = vals.softmax(dim=1)
    if s.top_p < 1.0:
        # transformers removes a token when the mass of the tokens ranked above it is >= top_p;
        # the most likely token always stays
        above = probs.cumsum(dim=1) - probs
        drop = above >= s.top_p
        drop[:, 0] = False
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(dim=1, keepdim=True)
    return ids, probs


class HFStepper:
    """Any transformers causal LM, with its own KV cache (``DynamicCache``)."""

    def __init__(self, model):
        from transformers import DynamicCache

        self.model, self.cache = model, DynamicCache()

    def __call__(self, ids, mask, positions):
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=self.cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1]

    def select(self, keep) -> None:
        self.cache.batch_select_indices(keep)


class LlamaStepper:
    """A Llama-family decoder (SmolLM2, Llama, Mistral without sliding windows) with fused matmuls.

    Per layer, q/k/v are one matmul and gate/up another; the KV cache is preallocated for the
    longest row, so nothing is concatenated per step; RMSNorm uses torch's fused kernel in the
    model's dtype. Gives the logits of the transformers model (tested to bf16 rounding).
    """

    def __init__(self, model, batch: int, max_len: int):
        import torch

        cfg = model.config
        inner = model.model
        self.rotary, self.embed, self.norm, self.lm_head = inner.rotary_emb, inner.embed_tokens, inner.norm, model.lm_head
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        self.layers = []
        for layer in inner.layers:
            a, m = layer.self_attn, layer.mlp
            self.layers.append(
                (
                    layer.input_layernorm.weight,
                    torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).t().contiguous(),
                    a.o_proj.weight.t().contiguous(),
                    layer.post_attention_layernorm.weight,
                    torch.cat([m.gate_proj.weight, m.up_proj.weight]).t().contiguous(),
                    m.down_proj.weight.t().contiguous(),
                )
            )
        dtype, device = self.embed.weight.dtype, self.embed.weight.device
        shape = (len(self.layers), batch, self.kv_heads, max_len, self.head_dim)
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.t = 0  # cache columns filled
        self.key_mask = None

    @staticmethod
    def supports(model) -> bool:
        cfg = model.config
        return (
            getattr(family_for(cfg.model_type), "name", None) == "llama"
            and not getattr(cfg, "attention_bias", False)
            and not getattr(cfg, "mlp_bias", False)
            and getattr(cfg, "sliding_window", None) is None
            and getattr(cfg, "hidden_act", "silu") == "silu"
        )

    def __call__(self, ids, mask, positions):
        import torch
        import torch.nn.functional as F

        b, t = ids.shape
        x = self.embed(ids)
        cos, sin = self.rotary(x, positions)  # (B, T, head_dim)
        cos, sin = cos[:, None], sin[:, None]
        start, end = self.t, self.t + t
        keys = mask[:, None, None, :end].bool()  # (B, 1, 1, end): padding is never attended
        if t > 1:  # prefill: causal as well
            keys = keys & torch.ones(t, end, dtype=torch.bool, device=ids.device).tril(start)
        hq, hk, d = self.heads, self.kv_heads, self.head_dim
        for i, (ln1, wqkv, wo, ln2, wgu, wd) in enumerate(self.layers):
            h = F.rms_norm(x, (x.shape[-1],), ln1, self.eps)
            q, k, v = (h @ wqkv).split([hq * d, hk * d, hk * d], dim=-1)
            q = _rope(q.view(b, t, hq, d).transpose(1, 2), cos, sin)
            self.k[i, :b, :, start:end] = _rope(k.view(b, t, hk, d).transpose(1, 2), cos, sin)
            self.v[i, :b, :, start:end] = v.view(b, t, hk, d).transpose(1, 2)
            ck, cv = self.k[i, :b, :, :end], self.v[i, :b, :, :end]
            o = _decode_attention(q, ck, cv, keys) if t == 1 else F.scaled_dot_product_attention(q, ck, cv, attn_mask=keys, enable_gqa=hq != hk)
            x = x + o.transpose(1, 2).reshape(b, t, hq * d) @ wo
            h = F.rms_norm(x, (x.shape[-1],), ln2, self.eps)
            gate, up = (h @ wgu).chunk(2, dim=-1)
            x = x + (F.silu(gate) * up) @ wd
        self.t = end
        return self.lm_head(self.norm(x[:, -1]))

    def select(self, keep) -> None:
        n, t = len(keep), self.t
        self.k[:, :n, :, :t] = self.k[:, keep, :, :t]
        self.v[:, :n, :, :t] = self.v[:, keep, :, :t]


def _decode_attention(q, k, v, keys):
    """Attention of one new token a row: what ``scaled_dot_product_attention`` gives, faster on the CPU.

    With one query a row, torch's CPU flash kernel spent as long on attention as the matmuls on the
    weights in bf16 (SmolLM2, batch 256: 4-7x these matmuls' time; in fp32 1.2-1.5x, measured by
    bench/attention_paths.py). Here the query heads sharing a KV head are one small matmul against
    the cache slice, in the cache's dtype; the softmax is in fp32.

    Args:
        q: (B, H, 1, d) queries; k, v: (B, Hk, L, d) cached keys and values, H a multiple of Hk.
        keys: (B, 1, 1, L) bool, True where a row may attend.
    """
    b, h, _, d = q.shape
    hk = k.shape[1]
    scores = (k @ q.view(b, hk, h // hk, d).transpose(-1, -2)).transpose(-1, -2)  # (B, Hk, H/Hk, L); K @ q^T reads the cache row by row
    scores = scores.float().mul_(d**-0.5).masked_fill_(~keys, float("-inf"))
    return (scores.softmax(dim=-1).to(v.dtype) @ v).view(b, h, 1, d)


def _rope(x, cos, sin):
    import torch

    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def _left_padded(prompts: list[list[int]], pad_id: int, device, width: int | None = None):
    """(ids, mask, seen), each (B, ``width`` or the longest prompt), left-padded so that the last
    position of every row is its newest token; in ``seen`` (for the penalty) padding repeats the
    row's first token. A row may be empty (all padding)."""
    import torch

    n, width = len(prompts), width or max(len(p) for p in prompts)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    seen = torch.full((n, width), pad_id, dtype=torch.long)
    for i, p in enumerate(prompts):
        if not p:
            continue
        ids[i, width - len(p) :] = torch.as_tensor(p)
        mask[i, width - len(p) :] = 1
        seen[i] = p[0]
        seen[i, width - len(p) :] = torch.as_tensor(p)
    return ids.to(device), mask.to(device), seen.to(device)


def sample(
    model,
    prompts: list[list[int]],
    max_new_tokens: list[int],
    s: SamplingSettings,
    *,
    pad_id: int,
    eos_id: int | None,
    generator,
    device,
    fused: bool = True,
    stop_at_eos: bool = True,
) -> list[list[int]]:
    """New token ids for each prompt (prompt not included), row i stopping after ``max_new_tokens[i]`` or EOS.

    Args:
        model: a causal LM (transformers ``...ForCausalLM``) in eval mode.
        prompts: token ids of each prompt, unpadded.
        max_new_tokens: the most new tokens for each row.
        s: sampling settings.
        pad_id: token used for left padding (masked out; never penalised).
        eos_id: a row stops when it samples this token (not included in its output); None: never.
        generator: a seeded ``torch.Generator`` on ``device``'s type.
        device: where the model runs.
        fused: use :class:`LlamaStepper` where the model supports it (else transformers' forward).
        stop_at_eos: False: ``eos_id`` is never sampled, so every row runs to its ``max_new_tokens``.
    """
    import torch

    n, width = len(prompts), max(len(p) for p in prompts)
    ids, mask, seen = _left_padded(prompts, pad_id, device)
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    limit = torch.as_tensor(max_new_tokens, device=device)
    rows = torch.arange(n, device=device)  # which original row each active row is
    out: list[list[int]] = [[] for _ in range(n)]
    if fused and LlamaStepper.supports(model):
        step_fn = LlamaStepper(model, n, width + max(max_new_tokens))
    else:
        step_fn = HFStepper(model)
    step = 0
    alive = torch.ones(n, dtype=torch.bool, device=device)  # finished rows stay in the batch until compaction
    ban_eos = eos_id is not None and not stop_at_eos
    with torch.inference_mode():
        logits = step_fn(ids, mask, positions)
        while True:
            if ban_eos:
                logits[:, eos_id] = float("-inf")
            cand, probs = candidates(logits, seen, s)
            token = cand.gather(1, torch.multinomial(probs, 1, generator=generator))  # (B, 1)
            step += 1
            done = alive & (step >= limit)
            if eos_id is not None:
                done |= alive & (token[:, 0] == eos_id)
            for r, t, a, d in zip(rows.tolist(), token[:, 0].tolist(), alive.tolist(), done.tolist()):
                if a and not (d and t == eos_id):
                    out[r].append(t)
            alive &= ~done
            n_alive = int(alive.sum())
            if n_alive == 0:
                return out
            if n_alive <= COMPACT_AT * len(rows):  # drop finished rows (KV cache included) in one go
                keep = alive.nonzero()[:, 0]
                step_fn.select(keep)
                rows, limit, token, mask, seen, positions, alive = rows[keep], limit[keep], token[keep], mask[keep], seen[keep], positions[keep], alive[keep]
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
            seen = torch.cat([seen, token], dim=1)
            positions = positions[:, -1:] + 1
            logits = step_fn(token, mask, positions)


def fill_spans(
    model,
    heads: list[list[int]],
    plans: list[list[tuple[int, list[int]]]],
    s: SamplingSettings,
    *,
    pad_id: int,
    eos_id: int | None,
    generator,
    device,
    fused: bool = True,
) -> list[list[list[int]]]:
    """Fill masked spans left to right: each row reads its head, samples its first span, reads its
    own text up to the next span, samples that one, and so on (``textlora.augment.rewrite``).

    The batch moves span by span: the sampling steps of span j run together (a row whose span is
    shorter, or that has no span j, waits with masked padding), then every row's kept text up to
    span j + 1 is read in one chunked forward, left-padded within the chunk. Padding is never
    attended, so a row's fills are those it would get alone (up to float rounding); reading the
    kept text in chunks costs a prefill, not a decoding step a token.

    Args:
        model: a causal LM in eval mode.
        heads: token ids of each row's text before its first span (at least one token).
        plans: per row, ``(tokens to sample, kept token ids after them)`` for each span, in order.
        s: sampling settings; ``eos_id`` is never sampled (a fill does not end the row).
        pad_id: the padding token (masked out).
        generator: a seeded ``torch.Generator`` on ``device``'s type.
        device: where the model runs.
        fused: use :class:`LlamaStepper` where the model supports it.

    Returns:
        per row, the sampled token ids of each span.
    """
    import torch

    n, width = len(heads), max(len(h) for h in heads)
    spans = max((len(p) for p in plans), default=0)
    ids, mask, seen = _left_padded(heads, pad_id, device)
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    last = positions[:, -1:]  # each row's newest position
    steps = [max((p[j][0] for p in plans if j < len(p)), default=0) for j in range(spans)]
    chunks = [max((len(p[j][1]) for p in plans if j < len(p)), default=0) for j in range(spans)]
    if fused and LlamaStepper.supports(model):
        step_fn = LlamaStepper(model, n, width + sum(steps) + sum(chunks))
    else:
        step_fn = HFStepper(model)
    out: list[list[list[int]]] = [[[] for _ in p] for p in plans]

    def advance(tokens, real):
        """Feed (B, T) tokens where ``real`` (B, T) marks a row's own; keep the logits of rows that read nothing."""
        nonlocal mask, seen, last, logits
        mask = torch.cat([mask, real.long()], dim=1)
        pos = last + real.long().cumsum(1)
        fresh = step_fn(tokens, mask, torch.where(real, pos, last))
        moved = real.any(dim=1)
        last = pos[:, -1:]
        logits = torch.where(moved[:, None], fresh, logits)
        seen = torch.cat([seen, torch.where(real, tokens, seen[:, :1])], dim=1)

    with torch.inference_mode():
        logits = step_fn(ids, mask, positions)
        for j in range(spans):
            want = torch.tensor([p[j][0] if j < len(p) else 0 for p in plans], device=device)
            for t in range(steps[j]):
                if eos_id is not None:
                    logits[:, eos_id] = float("-inf")
                cand, probs = candidates(logits, seen, s)
                token = cand.gather(1, torch.multinomial(probs, 1, generator=generator))  # (B, 1)
                real = (want > t)[:, None]
                for i in real[:, 0].nonzero()[:, 0].tolist():
                    out[i][j].append(int(token[i, 0]))
                advance(torch.where(real, token, pad_id), real)
            if chunks[j]:
                kept, real = _left_padded([p[j][1] if j < len(p) else [] for p in plans], pad_id, device, width=chunks[j])[:2]
                advance(kept, real.bool())
    return out
