"""Integrated Gradients' completeness on a tiny float64 classifier, occlusion against a direct
loop, and the random baseline's reproducibility."""

import pytest
import torch

from attnlab.explain.attribution import integrated_gradients, occlusion, random_relevance
from attnlab.models import create

PAD, MASK = 0, 3


def Classifier(pooling="cls"):
    """The registered classifier-tiny (2 classes). init_std=0.2, ten times BERT's, makes the random
    model clearly non-linear along the IG path (with 0.02 even a two-point rule is complete to
    1e-3, and the completeness test would test nothing)."""
    return create("classifier-tiny", num_labels=2, pooling=pooling, pooler=False, init_std=0.2)


def build(pooling="cls", L=7, seed=0):
    torch.manual_seed(seed)
    model = Classifier(pooling).double().eval()
    ids = torch.randint(5, model.encoder.config.vocab_size, (1, L))  # (1, L)
    ids[0, 0], ids[0, -1] = 1, 2  # [CLS] ... [SEP]
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def target(out):
    return out.logits[0, 1]


def f(model, ids, mask=None):
    with torch.no_grad():
        return float(target(model(ids, attention_mask=mask)))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_ig_completeness(pooling):
    model, inputs = build(pooling)
    ids = inputs["input_ids"]
    keep = torch.zeros(ids.shape[1], dtype=torch.bool)
    keep[[0, -1]] = True
    attr, delta = integrated_gradients(model, inputs, target, model.encoder.embeddings.token,
                                       baseline_ids=MASK, steps=64, keep=keep)
    assert attr.shape == (ids.shape[1],) and attr.dtype == torch.float64
    base = torch.where(keep, ids[0], torch.full_like(ids[0], MASK))[None]  # (1, L)
    gap = f(model, ids, inputs["attention_mask"]) - f(model, base, inputs["attention_mask"])
    assert abs(gap) > 1e-6
    assert abs(float(attr.sum()) - gap) <= 0.01 * abs(gap)
    assert abs(delta) <= 0.01 * abs(gap)
    assert abs(delta - (float(attr.sum()) - gap)) < 1e-9  # captum's delta is the completeness gap
    # the path is non-linear: a two-point trapezoid misses completeness by far more than 1%
    coarse, coarse_delta = integrated_gradients(model, inputs, target, model.encoder.embeddings.token,
                                                baseline_ids=MASK, steps=2, method="riemann_trapezoid", keep=keep)
    assert abs(coarse_delta) > 0.1 * abs(gap)


def test_ig_matches_a_direct_riemann_sum():
    """An independent IG: embeddings interpolated by hand, midpoint rule, autograd."""
    model, inputs = build("mean", L=5, seed=1)
    ids = inputs["input_ids"]
    emb = model.encoder.embeddings.token
    e, e0 = emb(ids).detach(), emb(torch.full_like(ids, PAD)).detach()  # (1, L, D)
    n = 400
    total = torch.zeros_like(e)
    for k in range(n):
        point = (e0 + (k + 0.5) / n * (e - e0)).requires_grad_(True)
        handle = emb.register_forward_hook(lambda mod, args, out, point=point: point)
        try:
            value = target(model(**inputs))
        finally:
            handle.remove()
        total += torch.autograd.grad(value, point)[0]
    direct = ((e - e0) * total / n).sum(-1)[0]  # (L,)
    attr, _ = integrated_gradients(model, inputs, target, emb, baseline_ids=PAD, steps=64)
    torch.testing.assert_close(attr, direct, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("positions", [None, [1, 3, -2], "mask"])
def test_occlusion_equals_a_direct_loop(positions):
    model, inputs = build("mean", L=6)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    L = ids.shape[1]
    if positions == "mask":
        positions = torch.tensor([False, True, True, False, True, False])
    got = occlusion(model, inputs, target, replace_id=MASK, positions=positions, batch_size=2)
    if positions is None:
        which = list(range(L))
    elif isinstance(positions, torch.Tensor):
        which = positions.nonzero().flatten().tolist()
    else:
        which = [p % L for p in positions]
    want = torch.zeros(L, dtype=torch.float64)
    for i in which:
        x = ids.clone()
        x[0, i] = MASK
        want[i] = f(model, ids, mask) - f(model, x, mask)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert bool((got[which] != 0).all())


def test_random_relevance_reproducible():
    a, b, c = random_relevance(9, seed=4), random_relevance(9, seed=4), random_relevance(9, seed=5)
    assert a.shape == (9,)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


def test_random_relevance_keys_give_independent_orders():
    """One seed alone gives every length the same prefix (torch's generator), so every example
    would lose its tokens in one order; a key per example and draw gives each its own."""
    short, long = random_relevance(9, seed=0), random_relevance(20, seed=0)
    torch.testing.assert_close(short, long[:9], rtol=0, atol=0)  # the prefix property itself
    orders = {tuple(random_relevance(9, seed=0, key=(i, d)).argsort().tolist()) for i in range(4) for d in range(3)}
    assert len(orders) == 12
    torch.testing.assert_close(random_relevance(9, 0, key=(2, 1)), random_relevance(9, 0, key=(2, 1)), rtol=0, atol=0)
    assert not torch.equal(random_relevance(9, 0, key=(2, 1)), random_relevance(9, 1, key=(2, 1)))
    assert not torch.equal(random_relevance(9, 0, key=(2, 1))[:5], random_relevance(5, 0, key=(3, 1)))
