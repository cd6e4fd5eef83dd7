"""explain_eval over many texts on a tiny random classifier with MiniLM's tokenizer: the random
baseline's own order per text and draw, its averaged draws, the randomisation check (agreeing
with faithfulness.randomization_check, NaN for a constant explanation, independent random
draws) and DecompX's AOPC protocol against a direct loop."""

import json
import math
from dataclasses import replace

import pytest
import torch

from attnlab.explain import faithfulness
from attnlab.explain.evaluation import RANDOM_DRAWS, explain_eval, print_table, random_draw, randomization
from attnlab.explain.faithfulness import (
    faithfulness_scores, masked_scorer, randomization_check, rank_agreement, spearman,
)
from attnlab.explain.methods import METHODS, Method
from attnlab.explain.pipeline import Subject, _explain, explain_text, load_subject, prepare
from attnlab.models.classifier import ClassifierConfig

TEXT = "A man is playing a guitar on a busy street at night."
SAME_LENGTH = "A dog is chasing a red ball across the big green park."
SHORT = "A woman slices an onion."


def Classifier():
    """The registered classifier family, tiny, random, 3 classes on MiniLM's vocabulary, read through
    BERT's pooler; init_std 0.2, ten times BERT's, so that masking tokens moves its probabilities
    (by some 0.05 here)."""
    model = ClassifierConfig(d_model=32, num_layers=2, num_heads=2, ffn_dim=64, dropout=0.0, attn_dropout=0.0,
                             init_std=0.2, num_labels=3, pooling="pooler").build()
    model.head.classifier.reset_parameters()  # torch's default init: a head large enough to move the probabilities
    return model


@pytest.fixture(scope="module")
def subject(minilm_dir):
    torch.manual_seed(0)
    return Subject(Classifier().double().eval(), load_subject(minilm_dir).tokenizer, "classifier", "tiny")


@pytest.fixture
def flat():
    """A registered method whose explanation is constant (it ignores the model)."""
    METHODS.register("flat", Method("flat", lambda attns, grads=None: torch.ones_like(attns[-1][0]),
                                    False, "constant"))
    yield "flat"
    METHODS.unregister("flat")


def test_random_baseline_draws_its_own_order_per_text_and_draw(subject, monkeypatch):
    assert len(prepare(subject, TEXT).tokens) == len(prepare(subject, SAME_LENGTH).tokens)
    orders = []
    original = faithfulness._order

    def recording(score_fn, relevance, protected):
        order, prot = original(score_fn, relevance, protected)
        orders.append(tuple(order.tolist()))
        return order, prot

    monkeypatch.setattr(faithfulness, "_order", recording)
    explain_eval(subject, [TEXT, SAME_LENGTH], ("random",), sanity=0)
    # each of the 5 metrics ranks one draw of one text: 2 texts x RANDOM_DRAWS draws, all different
    assert len(set(orders)) == 2 * RANDOM_DRAWS
    assert len(orders) == 5 * 2 * RANDOM_DRAWS


def test_random_metrics_are_the_mean_over_draws(subject):
    one = {r["method"]: r for r in explain_eval(subject, [TEXT], ("occlusion", "random"), sanity=0, random_draws=1)}
    five = {r["method"]: r for r in explain_eval(subject, [TEXT], ("occlusion", "random"), sanity=0)}
    ex = prepare(subject, TEXT)
    score = masked_scorer(subject.model, ex.inputs, ex.target.fn, replace_id=ex.replace_id, protected=ex.special)
    draws = [faithfulness_scores(score, random_draw(len(ex.tokens), 0, 0, d)) for d in range(RANDOM_DRAWS)]
    for metric in draws[0]:
        assert five["random"][metric] == pytest.approx(sum(d[metric] for d in draws) / RANDOM_DRAWS, abs=1e-12)
        assert one["random"][metric] == pytest.approx(draws[0][metric], abs=1e-12)
        assert one["occlusion"][metric] == five["occlusion"][metric]
    assert one["random"]["aopc"] != pytest.approx(five["random"]["aopc"])
    with pytest.raises(ValueError, match="random_draws"):
        explain_eval(subject, [TEXT], ("random",), random_draws=0)


def test_randomization_agrees_with_randomization_check(subject, flat):
    """The same model, example, seed and explanations give the same ρ in both; a constant
    explanation is NaN (a failure) in both, never 0."""
    ex = prepare(subject, TEXT)
    methods = (flat, "rollout", "occlusion", "ig")
    got = randomization(subject, [ex], methods, seed=3, ig_steps=8)
    assert math.isnan(got[flat])

    def fn(method):  # the same example, so the same target (the trained model's class) on both models
        return lambda model: torch.tensor(_explain(replace(subject, model=model), ex, [method], ig_steps=8)
                                          .relevances[method])

    want = randomization_check({m: fn(m) for m in methods}, subject.model, seed=3, keep=~ex.special)
    assert math.isnan(got[flat]) and math.isnan(want[flat])
    for m in methods[1:]:
        assert got[m] == pytest.approx(want[m], abs=1e-12), m
        assert abs(got[m]) < 0.99, m


def test_the_random_baseline_gets_independent_draws_on_the_two_models(subject):
    exs = [prepare(subject, t) for t in (TEXT, SHORT)]
    got = randomization(subject, exs, ("random",), seed=2)["random"]
    assert abs(got) < 0.5  # not 1 by construction
    want = []
    for i, ex in enumerate(exs):
        keep, L = ~ex.special, len(ex.tokens)
        want.append(sum(spearman(random_draw(L, 2, i, d)[keep], random_draw(L, 2, i, d, 1)[keep])
                        for d in range(RANDOM_DRAWS)) / RANDOM_DRAWS)
    assert got == pytest.approx(sum(want) / 2, abs=1e-12)


def test_undefined_randomization_is_reported_and_flagged(subject, flat, tmp_path, capsys):
    rows = explain_eval(subject, [TEXT, SHORT], (flat, "occlusion", "random"), sanity=2, out_dir=tmp_path)
    by = {r["method"]: r for r in rows}
    assert math.isnan(by[flat]["randomization"]) and by[flat]["randomization_undefined"] == 2
    assert not math.isnan(by["occlusion"]["randomization"]) and by["occlusion"]["randomization_undefined"] == 0
    saved = {r["method"]: r for r in json.loads((tmp_path / "faithfulness.json").read_text())["table"]}
    assert saved[flat]["randomization"] is None and saved[flat]["randomization_undefined"] == 2
    print_table(rows)
    assert "nan ✗" in capsys.readouterr().out
    # a one-token text has no order to compare: skipped, not NaN for everyone
    assert not math.isnan(randomization(subject, [prepare(subject, "Hi"), prepare(subject, SHORT)],
                                        ("occlusion",))["occlusion"])
    assert rank_agreement(torch.ones(3), torch.arange(3.0)) != 0.0


# ----------------------------------------------------------------------------- DecompX's protocol


def direct_decompx(model, tok, text, relevance):
    """DecompX's AOPC (Modarressi et al. 2023) by hand: mask K = 0, 10, ..., 90 % of the
    non-special tokens, most relevant first, by [MASK]; mean drop of the predicted class's
    probability over the ten K."""
    inputs = dict(tok(text, return_tensors="pt"))
    ids = inputs["input_ids"]
    L = ids.shape[1]
    words = list(range(1, L - 1))  # [CLS] ... [SEP]
    ranked = sorted(words, key=lambda i: -relevance[i])
    with torch.no_grad():
        p = torch.softmax(model(**inputs).logits[0], dim=-1)
        c = int(p.argmax())
        total = 0.0
        for K in range(0, 100, 10):
            masked = ids.clone()
            masked[0, ranked[:K * len(words) // 100]] = tok.token_to_id("[MASK]")
            total += float(p[c] - torch.softmax(model(**{**inputs, "input_ids": masked}).logits[0], dim=-1)[c])
    return total / 10


def test_decompx_protocol_matches_a_direct_loop(subject):
    texts = [TEXT, SHORT]
    rows = explain_eval(subject, texts, ("occlusion", "rollout"), protocol="decompx", sanity=0)
    for r in rows:
        m = r["method"]
        assert set(r) == {"method", "aopc_decompx", "aopc_decompx_rank", "mean_rank"}
        want = [direct_decompx(subject.model, subject.tokenizer, t,
                               explain_text(subject, t, [m], target="prob").relevances[m]) for t in texts]
        assert r["aopc_decompx"] == pytest.approx(sum(want) / 2, abs=1e-12), m
        assert abs(r["aopc_decompx"]) > 1e-3, m  # not vacuous: masking moves the probability
    assert explain_text(subject, TEXT, ["rollout"], target="prob").target_description.startswith("probability")
    with torch.no_grad():  # a class that is not the one predicted for TEXT
        other = (int(subject.model(**dict(subject.tokenizer(TEXT, return_tensors="pt"))).logits[0].argmax()) + 1) % 3
    given = explain_eval(subject, texts, ("occlusion", "rollout"), target=f"prob:{other}", protocol="decompx",
                         sanity=0)
    assert given != rows
    with pytest.raises(ValueError, match="prob"):
        explain_eval(subject, texts, ("occlusion",), target="logit", protocol="decompx")
    with pytest.raises(ValueError, match="unknown faithfulness protocol"):
        explain_eval(subject, texts, ("occlusion",), protocol="eraser2")
    with pytest.raises(ValueError, match="classifier"):
        explain_eval(replace(subject, kind="encoder"), texts, ("occlusion",), protocol="decompx")
