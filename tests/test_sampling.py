"""The sampling loop behind `generate`: transformers' settings applied exactly, per-row lengths,
and the fused Llama forward against transformers' own, on tiny models built from config."""

from __future__ import annotations

import pytest
import torch

from textlora.augment.sampling import LlamaStepper, SamplingSettings, candidates, sample


def _hf_probs(logits, seen, s: SamplingSettings):
    """What transformers' generate samples from: penalty -> top-k -> top-p -> softmax."""
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor, TopKLogitsWarper, TopPLogitsWarper

    x = RepetitionPenaltyLogitsProcessor(s.repetition_penalty)(seen, logits.clone())
    x = TopKLogitsWarper(s.top_k)(seen, x)
    x = TopPLogitsWarper(s.top_p)(seen, x)
    return x.softmax(dim=1)


@pytest.mark.parametrize("settings", [SamplingSettings(), SamplingSettings(top_k=5, top_p=0.5, repetition_penalty=2.0), SamplingSettings(top_k=50, top_p=1.0)])
def test_candidates_give_transformers_distribution(settings):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 300, generator=g) * 3
    seen = torch.randint(0, 300, (16, 40), generator=g)
    seen[:, :10] = logits.topk(10, dim=1).indices  # make the penalty hit the top tokens
    want = _hf_probs(logits, seen, settings)
    ids, probs = candidates(logits.clone(), seen, settings)
    got = torch.zeros_like(want).scatter(1, ids, probs)
    assert torch.allclose(got, want, atol=1e-6)
    assert (ids.shape[1] == settings.top_k) and ((want > 0).sum(dim=1) <= settings.top_k).all()


def _tiny_llama(seed: int = 0, vocab: int = 64):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128
    )
    return LlamaForCausalLM(cfg).eval()


def _tiny_gpt2(seed: int = 0, vocab: int = 64):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=128)).eval()


def test_fused_llama_gives_transformers_logits():
    """Prefill with left padding, decode steps, and rows leaving the batch: the same next-token logits."""
    model = _tiny_llama()
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    width = 5
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    fused = LlamaStepper(model, 3, 16)
    with torch.inference_mode():
        full = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
        assert torch.allclose(fused(ids, mask, pos), full, atol=1e-4)
        # two decode steps, the second after row 1 left the batch
        nxt = torch.tensor([[20], [21], [22]])
        ids2, mask2, pos2 = torch.cat([ids, nxt], 1), torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], 1), pos[:, -1:] + 1
        want = model(input_ids=ids2, attention_mask=mask2, position_ids=(mask2.cumsum(1) - 1).clamp(min=0)).logits[:, -1]
        assert torch.allclose(fused(nxt, mask2, pos2), want, atol=1e-4)
        keep = torch.tensor([0, 2])
        fused.select(keep)
        nxt3 = torch.tensor([[30], [31]])
        ids3 = torch.cat([ids2[keep], nxt3], 1)
        mask3 = torch.cat([mask2[keep], torch.ones(2, 1, dtype=torch.long)], 1)
        want = model(input_ids=ids3, attention_mask=mask3, position_ids=(mask3.cumsum(1) - 1).clamp(min=0)).logits[:, -1]
        assert torch.allclose(fused(nxt3, mask3, pos2[keep] + 1), want, atol=1e-4)


@pytest.mark.parametrize("make", [_tiny_llama, _tiny_gpt2])
def test_sample_lengths_follow_each_row_and_seed_fixes_the_rows(make):
    model = make()
    prompts = [[3, 4, 5], [6], [7, 8], [9, 10, 11, 12]]
    lengths = [1, 9, 4, 17]
    kw = dict(pad_id=0, eos_id=None, device=torch.device("cpu"))
    a = sample(model, prompts, lengths, SamplingSettings(), generator=torch.Generator().manual_seed(1), **kw)
    b = sample(model, prompts, lengths, SamplingSettings(), generator=torch.Generator().manual_seed(1), **kw)
    c = sample(model, prompts, lengths, SamplingSettings(), generator=torch.Generator().manual_seed(2), **kw)
    assert [len(r) for r in a] == lengths
    assert a == b and a != c


def test_eos_ends_a_row_early():
    model = _tiny_llama()
    with torch.no_grad():  # make token 1 (EOS) by far the likeliest
        model.lm_head.weight[1] = model.model.embed_tokens.weight.sum(0) * 0 + 50 * model.model.norm.weight.sign()
    out = sample(model, [[3, 4]] * 4, [20] * 4, SamplingSettings(), pad_id=0, eos_id=1, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    assert all(len(r) < 20 and 1 not in r for r in out)
    # stop_at_eos=False: the likeliest token is banned, every row runs to its own length
    out = sample(
        model,
        [[3, 4]] * 4,
        [20, 5, 9, 1],
        SamplingSettings(),
        pad_id=0,
        eos_id=1,
        generator=torch.Generator().manual_seed(0),
        device=torch.device("cpu"),
        stop_at_eos=False,
    )
    assert [len(r) for r in out] == [20, 5, 9, 1] and not any(1 in r for r in out)


def test_top_k_restricts_and_penalty_lowers_repeats():
    model = _tiny_llama(vocab=48)
    prompts, lengths = [[3, 4, 5]] * 32, [24] * 32
    kw = dict(pad_id=0, eos_id=None, device=torch.device("cpu"))
    top1 = sample(model, prompts, lengths, SamplingSettings(top_k=1, repetition_penalty=1.0), generator=torch.Generator().manual_seed(0), **kw)
    assert all(r == top1[0] for r in top1)  # top-k 1 is greedy: every row the same
    with torch.inference_mode():  # and greedy is transformers' argmax at each step
        ids = torch.tensor([prompts[0]])
        for t in top1[0][:5]:
            assert model(input_ids=ids).logits[0, -1].argmax().item() == t
            ids = torch.cat([ids, torch.tensor([[t]])], 1)
    top3 = sample(model, prompts, lengths, SamplingSettings(top_k=3, top_p=1.0, repetition_penalty=1.0), generator=torch.Generator().manual_seed(0), **kw)
    assert len({tuple(r) for r in top3}) > 1  # sampled

    with torch.no_grad():  # peaked logits: a random tiny model is otherwise close to uniform
        model.lm_head.weight.mul_(8)

    def repeats(rows):
        return sum(len(r) - len(set(r)) for r in rows) / len(rows)

    plain = sample(model, prompts, lengths, SamplingSettings(repetition_penalty=1.0), generator=torch.Generator().manual_seed(0), **kw)
    penal = sample(model, prompts, lengths, SamplingSettings(repetition_penalty=3.0), generator=torch.Generator().manual_seed(0), **kw)
    assert repeats(penal) < 0.7 * repeats(plain)


def test_transformers_stepper_decodes_with_its_cache():
    """The loop over transformers' forward (any non-Llama model) feeds only the new token: the cache must carry the rest."""
    from textlora.augment.sampling import HFStepper

    model = _tiny_gpt2()
    ids, mask = torch.tensor([[0, 0, 5, 6], [7, 8, 9, 10]]), torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    step = HFStepper(model)
    with torch.inference_mode():
        assert torch.allclose(step(ids, mask, pos), model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1], atol=1e-5)
        nxt, mask2 = torch.tensor([[11], [12]]), torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1)
        want = model(input_ids=torch.cat([ids, nxt], 1), attention_mask=mask2, position_ids=(mask2.cumsum(1) - 1).clamp(min=0)).logits[:, -1]
        assert torch.allclose(step(nxt, mask2, pos[:, -1:] + 1), want, atol=1e-5)


@pytest.mark.parametrize("path", ["transformers forward, fp32", "fused, fp32", "fused, bf16 weights"])
def test_every_generation_path_samples_the_reference_distribution(path):
    """Each path `generate` can take, against transformers' own fp32 model and processors: the
    distribution of the next token after a prompt (total-variation distance), and the empirical
    distribution of many sampled first tokens against it."""
    from textlora.augment.sampling import HFStepper

    model = _tiny_llama(seed=3)
    with torch.no_grad():
        model.lm_head.weight.mul_(6)  # peaked: a random tiny model is otherwise near uniform
    settings = SamplingSettings(top_k=20, top_p=0.9, repetition_penalty=1.3)
    prompt = [5, 6, 7, 8]
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        want = _hf_probs(model(input_ids=ids).logits[:, -1], ids, settings)[0]
        ids2 = torch.tensor([prompt + [9]])  # and a decode step (one new token: the cached attention path)
        want2 = _hf_probs(model(input_ids=ids2).logits[:, -1], ids2, settings)[0]
        if path.endswith("bf16 weights"):
            model.to(torch.bfloat16)
        mask = torch.ones_like(ids)
        pos = torch.arange(len(prompt))[None]
        stepper = HFStepper(model) if path.startswith("transformers") else LlamaStepper(model, 1, 8)
        cand, probs = candidates(stepper(ids, mask, pos), ids, settings)
        cand2, probs2 = candidates(stepper(ids2[:, -1:], torch.ones_like(ids2), pos[:, -1:] + 1), ids2, settings)
    for c, p, w in ((cand, probs, want), (cand2, probs2, want2)):
        got = torch.zeros_like(w).scatter(0, c[0], p[0].float())
        tv = 0.5 * (got - w).abs().sum().item()
        assert tv < (0.01 if "bf16" in path else 1e-4), tv  # measured: 1e-7 in fp32, 0.001 in bf16
    # sampling: 4,000 rows from the same prompt, their first tokens against the reference
    n = 4000
    first = sample(model, [prompt] * n, [1] * n, settings, pad_id=0, eos_id=None, generator=torch.Generator().manual_seed(1),
                   device=torch.device("cpu"), fused=not path.startswith("transformers"))
    counts = torch.bincount(torch.tensor([r[0] for r in first]), minlength=want.numel()).float() / n
    assert 0.5 * (counts - want).abs().sum().item() < 0.06  # measured 0.024; uniform over the top k would be 0.18


@pytest.mark.parametrize("make", [_tiny_llama, _tiny_gpt2])
def test_span_filling_reads_each_rows_own_text_and_padding_changes_nothing(make):
    """fill_spans: rows of different heads, span lengths, kept texts and span counts in one batch;
    each sampled token is what greedy decoding of the row alone (head, fills and kept text so far)
    gives, so the padding between rows is never read; EOS is never sampled."""
    from textlora.augment.sampling import fill_spans

    model = make()
    greedy = SamplingSettings(top_k=1, repetition_penalty=1.0)
    heads = [[5, 6, 7], [9], [20, 21]]
    plans = [[(2, [11, 12, 13]), (1, [14])], [(1, [15]), (3, [])], [(2, [])]]
    kw = {"pad_id": 0, "device": torch.device("cpu")}
    got = fill_spans(model, heads, plans, greedy, eos_id=1, generator=torch.Generator().manual_seed(0), **kw)
    for head, plan, fills in zip(heads, plans, got):
        assert [len(f) for f in fills] == [n for n, _ in plan]
        text = list(head)
        for (_, kept), fill in zip(plan, fills):
            for token in fill:
                alone = sample(model, [text], [1], greedy, eos_id=1, stop_at_eos=False, generator=torch.Generator().manual_seed(0), **kw)
                assert token == alone[0][0] and token != 1
                text.append(token)
            text += kept
    seeded = [fill_spans(model, heads, plans, SamplingSettings(), eos_id=1, generator=torch.Generator().manual_seed(3), **kw) for _ in range(2)]
    assert seeded[0] == seeded[1]
