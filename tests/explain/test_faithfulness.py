"""Faithfulness metrics on an additive score whose ideal relevance is known (hand-computed on
four tokens), the masked scorer against direct model calls, DecompX's AOPC against a direct
loop, the randomisation check and the ranking table (whose mean rank leaves out deletion AUC,
AOPC's affine twin)."""

import math

import pytest
import torch

from attnlab.explain.attribution import occlusion, random_relevance
from attnlab.explain.faithfulness import (
    HIGHER_IS_BETTER, METRICS, aopc, aopc_decompx, bin_sizes, comprehensiveness, deletion_auc, deletion_curve,
    faithfulness_scores, faithfulness_table, insertion_auc, insertion_curve, masked_scorer, randomization_check,
    randomize_weights, rank_agreement, spearman, sufficiency,
)

from attnlab.models import create

MASK = 3


def Classifier():
    """The registered classifier-tiny on mean pooling (2 classes)."""
    return create("classifier-tiny", num_labels=2, pooling="mean", pooler=False)


def build(L, seed=0):
    torch.manual_seed(seed)
    model = Classifier().double().eval()
    ids = torch.randint(5, model.encoder.config.vocab_size, (1, L))  # (1, L)
    ids[0, 0], ids[0, -1] = 1, 2  # [CLS] ... [SEP]
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def target(out):
    return out.logits[0, 1]


def additive(weights, protected=None):
    """score(keep) = Σ_i w_i · keep_i: the ideal relevance is w itself."""
    w = torch.as_tensor(weights, dtype=torch.float64)

    def score(keep):
        return float((w * keep.double()).sum())

    if protected is not None:
        score.protected = torch.as_tensor(protected)
    return score


W4 = [4.0, 3.0, 2.0, 1.0]  # f(x) = 10
IDEAL, REVERSED = torch.tensor(W4), torch.tensor(W4[::-1])
QUARTERS = (0.25, 0.5, 0.75)  # 1, 2, 3 of 4 tokens


def test_hand_computed_eraser_four_tokens():
    s = additive(W4)
    # ideal: removing {4}, {4,3}, {4,3,2} drops 4, 7, 9; keeping only them leaves 4, 7, 9 (drops 6, 3, 1)
    comp, suff = comprehensiveness(s, IDEAL, QUARTERS), sufficiency(s, IDEAL, QUARTERS)
    assert comp.values == {0.25: 4.0, 0.5: 7.0, 0.75: 9.0} and comp.mean == pytest.approx(20 / 3)
    assert suff.values == {0.25: 6.0, 0.5: 3.0, 0.75: 1.0} and suff.mean == pytest.approx(10 / 3)
    # reversed: removing {1}, {1,2}, {1,2,3} drops 1, 3, 6; keeping only them drops 9, 7, 4
    comp_r, suff_r = comprehensiveness(s, REVERSED, QUARTERS), sufficiency(s, REVERSED, QUARTERS)
    assert list(comp_r.values.values()) == [1.0, 3.0, 6.0] and comp_r.mean == pytest.approx(10 / 3)
    assert list(suff_r.values.values()) == [9.0, 7.0, 4.0] and suff_r.mean == pytest.approx(20 / 3)
    # default bins on 4 tokens: floor(k·4) at least 1 -> 1, 1, 1, 1, 2 tokens
    assert bin_sizes(4, (0.01, 0.05, 0.1, 0.2, 0.5)) == [1, 1, 1, 1, 2]
    assert comprehensiveness(s, IDEAL).mean == pytest.approx((4 * 4 + 7) / 5)


def test_protected_positions_are_never_removed_nor_counted():
    # a [CLS] of weight 100 and a [SEP] of weight 50 around the four tokens, both protected
    prot = torch.tensor([True, False, False, False, False, True])
    s = additive([100.0, *W4, 50.0], protected=prot)
    rel = torch.tensor([1e9, *W4, 1e9])  # their huge relevance must not matter
    comp = comprehensiveness(s, rel, QUARTERS)
    assert list(comp.values.values()) == [4.0, 7.0, 9.0]
    assert list(sufficiency(s, rel, QUARTERS).values.values()) == [6.0, 3.0, 1.0]
    assert aopc(s, rel) == pytest.approx(7.5)
    with pytest.raises(ValueError, match="protected"):
        aopc(additive([1.0, 2.0], protected=torch.tensor([True, True])), torch.ones(2))


def test_aopc_formula():
    s = additive(W4)
    # drops after removing the top 1..4: 4, 7, 9, 10
    assert aopc(s, IDEAL) == pytest.approx((4 + 7 + 9 + 10) / 4)
    assert aopc(s, IDEAL, steps=2) == pytest.approx((4 + 7) / 2)
    assert aopc(s, REVERSED) == pytest.approx((1 + 3 + 6 + 10) / 4)


def test_deletion_and_insertion_trapezoids():
    s = additive(W4)
    x, y = deletion_curve(s, IDEAL)
    assert x.tolist() == [0, 0.25, 0.5, 0.75, 1] and y.tolist() == [10, 6, 3, 1, 0]
    assert deletion_auc(s, IDEAL) == pytest.approx(0.25 * (8 + 4.5 + 2 + 0.5))  # 3.75
    assert insertion_curve(s, IDEAL)[1].tolist() == [0, 4, 7, 9, 10]
    assert insertion_auc(s, IDEAL) == pytest.approx(0.25 * (2 + 5.5 + 8 + 9.5))  # 6.25
    assert deletion_auc(s, REVERSED) == pytest.approx(6.25)
    assert insertion_auc(s, REVERSED) == pytest.approx(3.75)


@pytest.mark.parametrize("seed", range(5))
def test_ideal_relevance_beats_random_and_reversed(seed):
    gen = torch.Generator().manual_seed(seed)
    w = torch.rand(20, generator=gen, dtype=torch.float64) + 0.1  # positive, distinct
    s = additive(w)
    ideal, rev, rnd = w, -w, random_relevance(20, seed=seed + 100)
    for other in (rev, rnd):
        c_i, c_o = comprehensiveness(s, ideal), comprehensiveness(s, other)
        u_i, u_o = sufficiency(s, ideal), sufficiency(s, other)
        assert all(c_i.values[k] >= c_o.values[k] - 1e-12 for k in c_i.values)
        assert all(u_i.values[k] <= u_o.values[k] + 1e-12 for k in u_i.values)
        assert aopc(s, ideal) >= aopc(s, other) and deletion_auc(s, ideal) <= deletion_auc(s, other)
        assert insertion_auc(s, ideal) >= insertion_auc(s, other)
    assert comprehensiveness(s, ideal).mean > comprehensiveness(s, rev).mean
    assert sufficiency(s, ideal).mean < sufficiency(s, rev).mean


def direct(model, ids, mask):
    with torch.no_grad():
        return float(target(model(ids, attention_mask=mask)))


def test_masked_scorer_matches_direct_calls():
    model, inputs = build(L=7)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    keep = torch.tensor([True, False, True, True, False, True, True])
    by_mask = masked_scorer(model, inputs, target, protected=[0, 6])
    by_id = masked_scorer(model, inputs, target, replace_id=MASK, protected=[0, 6])
    assert by_mask(keep) == pytest.approx(direct(model, ids, keep.long()[None]), abs=1e-12)
    replaced = torch.where(keep, ids[0], torch.full_like(ids[0], MASK))[None]
    assert by_id(keep) == pytest.approx(direct(model, replaced, mask), abs=1e-12)
    # protected positions stay even when keep says otherwise
    assert by_id(torch.zeros(7, dtype=torch.bool)) == pytest.approx(
        direct(model, torch.tensor([[ids[0, 0]] + [MASK] * 5 + [ids[0, 6]]]), mask), abs=1e-12)
    # batched scoring equals one call per row
    keeps = torch.rand(5, 7, generator=torch.Generator().manual_seed(0)) > 0.5
    torch.testing.assert_close(by_mask.many(keeps), torch.tensor([by_mask(k) for k in keeps], dtype=torch.float64))


def test_masking_a_suffix_equals_the_shortened_input():
    """Learned absolute positions of the kept prefix are unchanged, so masking out the tail
    (mean pooling over real tokens) is the same as running the model on the prefix alone."""
    model, inputs = build(L=8)
    ids = inputs["input_ids"]
    score = masked_scorer(model, inputs, target)
    for k in (3, 5):
        keep = torch.arange(8) < k
        assert score(keep) == pytest.approx(direct(model, ids[:, :k], None), abs=1e-10)


def test_randomization_check():
    model, inputs = build(L=7)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fns = {
        "constant": lambda m: torch.arange(7.0),  # ignores the weights
        "occlusion": lambda m: occlusion(m, inputs, target, replace_id=MASK),
    }
    rho = randomization_check(fns, model, seed=1)
    assert rho["constant"] == pytest.approx(1.0)
    assert rho["occlusion"] < 1.0
    for k, v in model.state_dict().items():  # the trained model is left unchanged
        assert torch.equal(v, before[k]), k
    # all weights re-drawn; a prefix re-draws only its modules
    new = randomize_weights(model, seed=1)
    assert all(not torch.equal(p, q) for p, q in zip(model.parameters(), new.parameters()))
    head_only = dict(randomize_weights(model, prefixes=["head"], seed=1).named_parameters())
    for name, p in model.named_parameters():
        assert torch.equal(p, head_only[name]) != name.startswith("head."), name


def test_spearman():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert spearman(a, a * 10) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    # ties averaged: ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4)
    r = (torch.tensor([1, 2.5, 2.5, 4]) - 2.5)
    assert spearman(torch.tensor([1.0, 2.0, 2.0, 3.0]), a) == pytest.approx(
        float((r * (a - 2.5)).sum() / (r.norm() * (a - 2.5).norm())))
    assert math.isnan(spearman(torch.ones(3), a[:3]))


def test_faithfulness_table_ranks_by_direction():
    results = {
        "random": {"comprehensiveness": 0.1, "sufficiency": 0.5, "deletion_auc": 0.6},
        "ig": {"comprehensiveness": 0.5, "sufficiency": 0.1, "deletion_auc": 0.2},
        "rollout": {"comprehensiveness": 0.3, "sufficiency": 0.1, "deletion_auc": 0.4},
    }
    rows = faithfulness_table(results)
    assert [r["method"] for r in rows] == ["ig", "rollout", "random"]
    assert rows[0]["comprehensiveness_rank"] == 1 and rows[0]["sufficiency_rank"] == 1.5
    assert rows[2]["deletion_auc_rank"] == 3 and rows[2]["comprehensiveness"] == 0.1
    assert not HIGHER_IS_BETTER["sufficiency"] and HIGHER_IS_BETTER["aopc"]
    with pytest.raises(ValueError, match="unknown direction"):
        faithfulness_table({"a": {"mystery": 1.0}})
    assert faithfulness_table({"a": {"mystery": 1.0}, "b": {"mystery": 2.0}},
                              higher_is_better={"mystery": True})[0]["method"] == "b"


# ----------------------------------------------------------------------------- AOPC = deletion AUC


@pytest.mark.parametrize("seed", range(5))
def test_aopc_and_deletion_auc_are_one_metric(seed):
    """AOPC + deletion AUC = s0 + (s0 − s_n)/(2n) for ANY ranking on a real (non-linear) model,
    so the two always rank methods alike: only one may enter the mean rank."""
    model, inputs = build(L=9, seed=seed)
    score = masked_scorer(model, inputs, target, replace_id=MASK, protected=[0, 8])
    n = 7
    s0 = score(torch.ones(9, dtype=torch.bool))
    s_n = score(torch.zeros(9, dtype=torch.bool))
    gen = torch.Generator().manual_seed(seed)
    sums = []
    for _ in range(4):  # random rankings
        r = torch.rand(9, generator=gen, dtype=torch.float64)
        sums.append(aopc(score, r) + deletion_auc(score, r))
        assert sums[-1] == pytest.approx(s0 + (s0 - s_n) / (2 * n), abs=1e-12)
    assert aopc(score, r) != pytest.approx(aopc(score, -r))  # the ranking does matter to each alone


def test_mean_rank_leaves_out_deletion_auc():
    gen = torch.Generator().manual_seed(0)
    model, inputs = build(L=8)
    score = masked_scorer(model, inputs, target, replace_id=MASK, protected=[0, 7])
    results = {f"m{i}": faithfulness_scores(score, torch.rand(8, generator=gen, dtype=torch.float64))
               for i in range(4)}
    rows = faithfulness_table(results)
    independent = ("comprehensiveness", "sufficiency", "aopc", "insertion_auc")
    for row in rows:
        assert row["deletion_auc_rank"] == row["aopc_rank"]  # the twins always agree
        assert row["mean_rank"] == pytest.approx(sum(row[f"{m}_rank"] for m in independent) / 4)
    assert [r["mean_rank"] for r in rows] == sorted(r["mean_rank"] for r in rows)
    # without AOPC in the table, deletion AUC is counted; ranked= chooses explicitly
    alone = faithfulness_table({m: {"deletion_auc": v["deletion_auc"], "sufficiency": v["sufficiency"]}
                                for m, v in results.items()})
    assert all(r["mean_rank"] == (r["deletion_auc_rank"] + r["sufficiency_rank"]) / 2 for r in alone)
    all_five = faithfulness_table(results, ranked=METRICS)
    assert all(r["mean_rank"] == pytest.approx(sum(r[f"{m}_rank"] for m in METRICS) / 5) for r in all_five)


# ----------------------------------------------------------------------------- DecompX's AOPC


def brute_decompx(model, ids, relevance, special, mask_id):
    """DecompX's AOPC written out: K = 0, 10, ..., 90 %, the floor(K·n/100) most relevant
    non-special tokens -> [MASK], the drop of the predicted class's softmax probability."""
    with torch.no_grad():
        probs = torch.softmax(model(ids).logits[0], -1)
        pred = int(probs.argmax())
        free = [i for i in range(ids.shape[1]) if not special[i]]
        by_relevance = sorted(free, key=lambda i: -float(relevance[i]))
        drops = []
        for K in range(0, 100, 10):
            masked = ids.clone()
            for i in by_relevance[:math.floor(K * len(free) / 100)]:
                masked[0, i] = mask_id
            drops.append(float(probs[pred] - torch.softmax(model(masked).logits[0], -1)[pred]))
    return sum(drops) / 10


@pytest.mark.parametrize("L", [6, 13, 25])
def test_aopc_decompx_against_a_direct_loop(L):
    model, inputs = build(L=L, seed=L)
    ids = inputs["input_ids"]
    special = torch.zeros(L, dtype=torch.bool)
    special[[0, -1]] = True
    with torch.no_grad():
        pred = int(model(ids).logits[0].argmax())
    prob = lambda out: out.logits[0].softmax(-1)[pred]
    score = masked_scorer(model, inputs, prob, replace_id=MASK, protected=special)
    gen = torch.Generator().manual_seed(L)
    for _ in range(3):
        r = torch.rand(L, generator=gen, dtype=torch.float64)
        r[special] = 1e9  # specials are never masked, however relevant
        assert aopc_decompx(score, r) == pytest.approx(brute_decompx(model, ids, r, special, MASK), abs=1e-12)
    # n = 6 of L = 8: K·n/100 floors to 0, 0, 1, 1, 2, 3, 3, 4, 4, 5 tokens; K = 0 counts as a zero drop
    s = additive([0.0, 6, 5, 4, 3, 2, 1, 0.0], protected=[0, 7])
    ideal = torch.tensor([0.0, 6, 5, 4, 3, 2, 1, 0])
    assert aopc_decompx(s, ideal) == pytest.approx((0 + 0 + 6 + 6 + 11 + 15 + 15 + 18 + 18 + 20) / 10)
    with pytest.raises(ValueError, match="percents"):
        aopc_decompx(s, ideal, percents=(0.1, 0.2))


# ----------------------------------------------------------------------------- undefined correlation


def test_a_constant_explanation_is_undefined_never_zero():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert math.isnan(rank_agreement(torch.ones(4), a))
    assert math.isnan(rank_agreement(a, torch.full((4,), 2.0)))
    assert math.isnan(rank_agreement(torch.tensor([5.0, 1.0, 1.0, 7.0]), a, keep=torch.tensor([0, 1, 1, 0]).bool()))
    assert rank_agreement(a, -a) == pytest.approx(-1.0) and rank_agreement(a, -a, absolute=True) == pytest.approx(1.0)
    model, _ = build(L=7)
    rho = randomization_check({"flat": lambda m: torch.zeros(7), "fixed": lambda m: torch.arange(7.0)}, model,
                              keep=torch.tensor([False, *[True] * 5, False]))
    assert math.isnan(rho["flat"]) and rho["fixed"] == pytest.approx(1.0)
