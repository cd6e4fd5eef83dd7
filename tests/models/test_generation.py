"""Generation on attnlab's decoder: greedy, beams, sampling, stop tokens, padding and the cache.

Parity with Hugging Face's ``generate`` is in test_hf_gpt2.py.
"""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.models.decoder import Decoder, DecoderConfig
from attnlab.models.generation import CausalLMState
from attnlab.models.sampling import choose_next, filter_logits, top_k_filter, top_p_filter


def _model(seed=0, **kw) -> Decoder:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=50, d_model=32, num_layers=2, num_heads=4, ffn_dim=64, max_len=64,
               dropout=0.0, attn_dropout=0.0, init_std=0.2)  # a large init gives peaked, varied outputs
    return Decoder(DecoderConfig(**{**cfg, **kw})).eval()


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def prompt():
    torch.manual_seed(1)
    return torch.randint(0, 50, (3, 5))


def _greedy_reference(model, ids, n):
    """Argmax of a full forward pass, one token at a time: no cache, no generation code."""
    for _ in range(n):
        nxt = model(ids).logits[:, -1].argmax(-1)  # (B,)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
    return ids


# ----------------------------------------------------------------------------- greedy and cache


def test_greedy_matches_argmax_loop_and_keeps_prompt(model, prompt):
    out = model.generate(prompt, max_new_tokens=12)
    assert out.shape == (3, 17) and torch.equal(out[:, :5], prompt)
    with torch.no_grad():
        assert torch.equal(out, _greedy_reference(model, prompt, 12))


@pytest.mark.parametrize("num_beams", [1, 3])
def test_cache_on_and_off_give_the_same_tokens(model, prompt, num_beams):
    a = model.generate(prompt, max_new_tokens=15, use_cache=True, num_beams=num_beams)
    b = model.generate(prompt, max_new_tokens=15, use_cache=False, num_beams=num_beams)
    assert torch.equal(a, b)


@pytest.mark.parametrize("kw", [{}, {"position": "rope"}, {"position": "alibi"}, {"num_kv_heads": 2}])
def test_cache_gives_full_recompute_logits_at_every_step(kw, prompt):
    model = _model(**kw)
    mask = torch.ones_like(prompt)
    mask[0, :2] = 0  # left padding in one row
    cached = CausalLMState(model, prompt, mask, use_cache=True)
    full = CausalLMState(model, prompt, mask, use_cache=False)
    new = prompt
    with torch.no_grad():
        for _ in range(10):
            a, b = cached.advance(new), full.advance(new)  # (B, V) each
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
            new = a.argmax(-1, keepdim=True)  # (B, 1)


def test_left_padded_batch_equals_rows_alone(model):
    torch.manual_seed(2)
    rows = [torch.randint(0, 50, (n,)) for n in (6, 3, 5)]
    L = max(len(r) for r in rows)
    ids = torch.zeros(3, L, dtype=torch.long)
    mask = torch.zeros(3, L, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, L - len(r):], mask[i, L - len(r):] = r, 1
    for beams, cache in itertools.product((1, 2), (True, False)):
        batch = model.generate(ids, max_new_tokens=8, attention_mask=mask, num_beams=beams, use_cache=cache)
        for i, r in enumerate(rows):
            alone = model.generate(r[None], max_new_tokens=8, num_beams=beams)
            assert torch.equal(batch[i, L:], alone[0, len(r):]), (beams, cache, i)


def test_max_new_tokens_zero_returns_the_prompt(model, prompt):
    assert torch.equal(model.generate(prompt, max_new_tokens=0), prompt)


# ----------------------------------------------------------------------------- stop tokens


def test_stop_tokens_end_rows_and_pad_after(model, prompt):
    free = model.generate(prompt, max_new_tokens=12)
    eos = int(free[0, 5 + 3])  # the 4th token row 0 generates
    out = model.generate(prompt, max_new_tokens=12, eos_token_id=eos, pad_token_id=49)
    for row, ref in zip(out, free):
        gen, ref_gen = row[5:].tolist(), ref[5:].tolist()
        if eos in ref_gen:
            k = ref_gen.index(eos)
            assert gen[: k + 1] == ref_gen[: k + 1]  # identical up to and including the stop token
            assert all(t == 49 for t in gen[k + 1:])  # then padding
        else:
            assert gen == ref_gen[: len(gen)]
    ends = [r[5:].tolist().index(eos) + 1 if eos in r[5:].tolist() else 12 for r in free]
    assert out.shape[1] == 5 + max(ends)  # stops as soon as every row has stopped


def test_several_stop_tokens_and_default_pad(model, prompt):
    free = model.generate(prompt, max_new_tokens=10)
    stops = [int(free[0, 6]), int(free[1, 7])]
    out = model.generate(prompt, max_new_tokens=10, eos_token_id=stops)
    for row in out[:2]:
        gen = row[5:].tolist()
        first = min(gen.index(s) for s in stops if s in gen)
        assert all(t == stops[0] for t in gen[first + 1:])  # padded with the first stop token


def test_all_rows_stopping_at_once_ends_generation(model):
    ids = torch.tensor([[3, 4, 5]])
    first = int(model.generate(ids, max_new_tokens=1)[0, -1])
    assert model.generate(ids, max_new_tokens=20, eos_token_id=first).shape == (1, 4)


# ----------------------------------------------------------------------------- beam search


def test_one_beam_equals_greedy(model, prompt):
    for eos in (None, 7):
        assert torch.equal(
            model.generate(prompt, max_new_tokens=10, num_beams=1, eos_token_id=eos),
            model.generate(prompt, max_new_tokens=10, eos_token_id=eos),
        )


def test_wide_beam_finds_the_exact_best_sequence():
    """With K >= V^(N-1) beams nothing is pruned: the result is the exhaustive argmax of the
    summed log-probability."""
    model = _model(vocab_size=4, seed=3)
    ids = torch.tensor([[1, 2, 0]])
    N, V = 3, 4
    best, best_score = None, -float("inf")
    with torch.no_grad():
        for tail in itertools.product(range(V), repeat=N):
            seq = torch.cat([ids, torch.tensor([tail])], dim=1)  # (1, 3 + N)
            logp = model(seq).logits.log_softmax(-1)[0, 2:-1]  # (N, V): predictions of the tail
            score = float(logp.gather(-1, torch.tensor(tail)[:, None]).sum())
            if score > best_score:
                best, best_score = tail, score
    out = model.generate(ids, max_new_tokens=N, num_beams=V ** (N - 1))
    assert tuple(out[0, 3:].tolist()) == best


@pytest.mark.parametrize("early_stopping", [True, False, "never"])
def test_beam_search_with_stop_token_returns_valid_rows(model, prompt, early_stopping):
    free = model.generate(prompt, max_new_tokens=10, num_beams=3)
    eos = int(free[1, 8])
    out = model.generate(prompt, max_new_tokens=10, num_beams=3, eos_token_id=eos, pad_token_id=49,
                         length_penalty=0.5, early_stopping=early_stopping)
    assert out.shape[0] == 3 and 5 < out.shape[1] <= 15 and torch.equal(out[:, :5], prompt)
    for row in out[:, 5:].tolist():
        if eos in row:
            assert all(t == 49 for t in row[row.index(eos) + 1:])


# ----------------------------------------------------------------------------- sampling


def test_sampling_is_reproducible_with_a_generator(model, prompt):
    def run(seed, **kw):
        g = torch.Generator().manual_seed(seed)
        return model.generate(prompt, max_new_tokens=12, do_sample=True, generator=g, **kw)

    assert torch.equal(run(0), run(0))
    assert torch.equal(run(5, temperature=0.7, top_k=10, top_p=0.9), run(5, temperature=0.7, top_k=10, top_p=0.9))
    assert not torch.equal(run(0, temperature=3.0), run(1, temperature=3.0))


def test_top_k_one_equals_greedy(model, prompt):
    g = torch.Generator().manual_seed(0)
    sampled = model.generate(prompt, max_new_tokens=12, do_sample=True, top_k=1, generator=g, temperature=2.0)
    assert torch.equal(sampled, model.generate(prompt, max_new_tokens=12))


def test_samples_come_from_the_kept_set():
    torch.manual_seed(0)
    logits = torch.randn(4, 30)
    g = torch.Generator().manual_seed(0)
    keep = filter_logits(logits, top_k=5, top_p=0.8).isfinite()  # (4, 30)
    for _ in range(50):
        tok = choose_next(logits, do_sample=True, top_k=5, top_p=0.8, generator=g)  # (4,)
        assert keep.gather(1, tok[:, None]).all()


def test_sampling_frequencies_follow_the_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).expand(20000, 4)
    g = torch.Generator().manual_seed(0)
    tok = choose_next(logits, do_sample=True, temperature=0.5, generator=g)
    freq = torch.bincount(tok, minlength=4).float() / tok.numel()
    torch.testing.assert_close(freq, (logits[0] / 0.5).softmax(-1), atol=0.01, rtol=0)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.05, 1.0), st.floats(0.2, 4.0))
def test_top_p_keeps_the_smallest_most_likely_set_reaching_p(seed, p, scale):
    logits = torch.randn(3, 40, generator=torch.Generator().manual_seed(seed)) * scale
    probs = logits.softmax(-1)
    kept = top_p_filter(logits, p).isfinite()  # (3, 40)
    for row in range(3):
        pr, k = probs[row], kept[row]
        mass = float(pr[k].sum())
        assert mass >= p - 1e-6  # the kept tokens reach p
        assert float(pr[k].min()) >= float(pr[~k].max()) if (~k).any() else True  # the most likely ones
        assert mass - float(pr[k].min()) < p + 1e-6  # and no smaller such set exists


def test_top_k_filter_keeps_k():
    logits = torch.randn(5, 20)
    assert (top_k_filter(logits, 3).isfinite().sum(-1) == 3).all()
    assert top_k_filter(logits, 100).isfinite().all()


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kw, msg", [
    (dict(temperature=0.0), "temperature"),
    (dict(top_k=0), "top_k"),
    (dict(top_p=1.5), "top_p"),
    (dict(num_beams=2, do_sample=True), "beam search"),
    (dict(num_beams=0), "num_beams"),
    (dict(early_stopping="sometimes"), "early_stopping"),
    (dict(max_new_tokens=-1), "max_new_tokens"),
    (dict(eos_token_id="x"), "eos_token_id"),
    (dict(attention_mask=torch.tensor([[1, 1, 0]])), "pad on the left"),
])
def test_bad_arguments_raise(model, kw, msg):
    with pytest.raises(ValueError, match=msg):
        model.generate(torch.tensor([[1, 2, 3]]), **kw)


def test_float_input_ids_raise(model):
    with pytest.raises(ValueError, match="long tensor"):
        model.generate(torch.zeros(1, 3))
