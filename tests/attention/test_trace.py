"""The step-by-step trace against a worked example done by hand, and against attend."""

from __future__ import annotations

import json
import math

import pytest
import torch

from attnlab.attention import attend
from attnlab.attention.trace import (
    TraceInputError, parse_mask, parse_matrix, random_inputs, trace_attention, trace_tables,
    _verify,
)

Q = "1,0;0,1"
K = "1,0;0,1;1,1"
V = "1,2;3,4;5,6"


def _ones(*shape):
    return torch.ones(shape, dtype=torch.float64)


def _inputs():
    return parse_matrix(Q, "--q"), parse_matrix(K, "--k"), parse_matrix(V, "--v")


def test_worked_example_by_hand():
    tr = trace_attention(*_inputs())
    s = 1 / math.sqrt(2)  # scale for D = 2
    # q0 = (1, 0) against k0 = (1, 0), k1 = (0, 1), k2 = (1, 1): scores 1, 0, 1.
    # q1 = (0, 1): scores 0, 1, 1.
    assert tr.scores.tolist() == [[1, 0, 1], [0, 1, 1]]
    assert tr.scaled.flatten().tolist() == pytest.approx([s, 0, s, 0, s, s])
    z = 2 * math.exp(s) + 1  # each row: two scores of s and one of 0
    big, small = math.exp(s) / z, 1 / z
    w = [[big, small, big], [small, big, big]]
    assert tr.weights.tolist()[0] == pytest.approx(w[0], abs=1e-12)
    assert tr.weights.tolist()[1] == pytest.approx(w[1], abs=1e-12)
    v = [[1, 2], [3, 4], [5, 6]]
    out = [[sum(w[i][j] * v[j][c] for j in range(3)) for c in range(2)] for i in range(2)]
    assert tr.out.tolist()[0] == pytest.approx(out[0], abs=1e-12)
    assert tr.out.tolist()[1] == pytest.approx(out[1], abs=1e-12)
    # Numerically: w[0] = (0.4011, 0.1978, 0.4011), out[0] = (3.0000, 4.0000).
    assert big == pytest.approx(0.40111, abs=1e-5) and small == pytest.approx(0.19777, abs=1e-5)
    assert out[0] == pytest.approx([3.0, 4.0])


def test_worked_example_with_mask_by_hand():
    tr = trace_attention(*_inputs(), mask=parse_mask("1,1,0;1,1,1"))
    s = 1 / math.sqrt(2)
    # Row 0 sees k0 (score s) and k1 (score 0) only.
    w0 = [math.exp(s) / (math.exp(s) + 1), 1 / (math.exp(s) + 1), 0.0]
    assert tr.weights[0].tolist() == pytest.approx(w0, abs=1e-12)
    assert tr.masked[0, 2].item() == float("-inf")
    assert tr.out[0].tolist() == pytest.approx([w0[0] * 1 + w0[1] * 3, w0[0] * 2 + w0[1] * 4])
    assert tr.weights[0].tolist() == pytest.approx([0.6698, 0.3302, 0.0], abs=1e-4)


def test_causal_is_bottom_right_and_combines_with_mask():
    q, k, v = _inputs()
    tr = trace_attention(q, k, v, causal=True)  # Lq = 2, Lk = 3: query i sees j <= i + 1
    assert tr.mask.tolist() == [[True, True, False], [True, True, True]]
    tr2 = trace_attention(q, k, v, causal=True, mask=parse_mask("0,1,1;1,1,1"))
    assert tr2.mask.tolist() == [[False, True, False], [True, True, True]]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("causal", [False, True])
def test_trace_equals_attend(seed, causal):
    q, k, v = random_inputs(seed, 3, 4, 2)
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(3, 4, generator=g) > 0.3
    tr = trace_attention(q, k, v, mask=mask, causal=causal, scale=0.7)
    res = attend(q[None, None], k[None, None], v[None, None], mask=tr.mask, scale=0.7,
                 kernel="math", return_weights=True)
    torch.testing.assert_close(tr.weights, res.weights[0, 0], rtol=0, atol=1e-12)
    torch.testing.assert_close(tr.out, res.out[0, 0], rtol=0, atol=1e-12)
    rows = tr.weights.sum(-1)
    live = tr.mask.any(-1)
    torch.testing.assert_close(rows[live], torch.ones_like(rows[live]))
    assert (rows[~live] == 0).all()


def test_row_with_nothing_to_attend_gives_zeros():
    tr = trace_attention(*_inputs(), mask=parse_mask("0,0,0;1,1,1"))
    assert tr.weights[0].tolist() == [0, 0, 0]
    assert tr.out[0].tolist() == [0, 0]
    text = " ".join(str(getattr(p, "plain", "")) for p in trace_tables(tr))
    assert "q0: nothing to attend to" in text


def test_a_trace_that_disagrees_with_the_kernel_raises():
    tr = trace_attention(*_inputs())
    tr.out = tr.out + 1e-6
    with pytest.raises(AssertionError, match="out differ"):
        _verify(tr)


def test_random_inputs_are_small_integers():
    q, k, v = random_inputs(3, 2, 5, 4)
    assert q.shape == (2, 4) and k.shape == (5, 4) and v.shape == (5, 4)
    for t in (q, k, v):
        assert (t == t.round()).all() and t.abs().max() <= 2
    assert torch.equal(random_inputs(3, 2, 5, 4)[0], q)


def test_json_marks_masked_scores():
    tr = trace_attention(*_inputs(), mask=parse_mask("1,1,0;1,1,1"))
    d = json.loads(tr.to_json())
    assert d["masked"][0][2] == "-inf"
    assert d["row_sums"] == pytest.approx([1.0, 1.0])
    assert d["weights"][0] == pytest.approx(tr.weights[0].tolist())


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: parse_matrix("1,0;0", "--q"), "--q: ragged rows"),
        (lambda: parse_matrix("1,x", "--k"), "--k: 'x' is not a number"),
        (lambda: parse_matrix("", "--v"), "--v: empty row"),
        (lambda: parse_matrix("1,nan", "--q"), "--q: values must be finite"),
        (lambda: parse_mask("1,2"), "--mask: '2' is not 1/0"),
        (lambda: trace_attention(_ones(2, 2), _ones(3, 3), _ones(3, 2)), "^k: rows have 3"),
        (lambda: trace_attention(_ones(2, 2), _ones(3, 2), _ones(2, 2)), "^v: has 2 rows"),
        (lambda: trace_attention(_ones(2, 2), _ones(3, 2), _ones(3, 2),
                                 mask=torch.ones(3, 3, dtype=torch.bool)), "^mask: shape"),
        (lambda: random_inputs(0, 0, 2, 2), "--lq: must be at least 1"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(TraceInputError, match=match):
        call()
