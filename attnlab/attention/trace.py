"""A worked example of attention, step by step, small enough to check by hand.

    tr = trace_attention(q, k, v, causal=True)   # q (Lq, D), k (Lk, D), v (Lk, Dv)
    tr.scores, tr.scaled, tr.mask, tr.masked, tr.exps, tr.weights, tr.out

One head, no batch, float64. Every step is written out with plain tensor ops, then checked
against the reference kernel (``attend(..., kernel="math")``): a trace that disagrees with the
kernel is a bug, and raises.

The same conventions as :func:`attnlab.attention.attend`: a boolean mask with True = may attend,
the default scale ``1/sqrt(D)``, and a query with nothing to attend to gets zero weights.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

import torch
from rich.console import Group
from rich.table import Table
from rich.text import Text
from torch import Tensor

from .api import attend
from .masks import causal_mask

DTYPE = torch.float64
_TRUE = {"1", "true", "t", "yes", "y"}
_FALSE = {"0", "false", "f", "no", "n"}


class TraceInputError(ValueError):
    """Bad input to a trace; the message names the argument at fault."""


@dataclass
class AttentionTrace:
    """Every step of ``out = softmax(mask(q·kᵀ·scale))·v`` for one head.

    Attributes:
        q: (Lq, D) queries.
        k: (Lk, D) keys.
        v: (Lk, Dv) values.
        scale: the factor on the raw scores (``1/sqrt(D)`` unless given).
        scores: (Lq, Lk) raw scores q·kᵀ.
        scaled: (Lq, Lk) scores · scale.
        mask: (Lq, Lk) bool, True = may attend.
        masked: (Lq, Lk) scaled scores, -inf where the mask is False.
        row_max: (Lq,) max of each masked row (0 for a row with nothing to attend to).
        exps: (Lq, Lk) exp(masked - row_max); the shift cancels in the ratio below.
        weights: (Lq, Lk) exps / row sum: the softmax, each row sums to 1 (or is all 0).
        out: (Lq, Dv) weights · v.
    """

    q: Tensor
    k: Tensor
    v: Tensor
    scale: float
    scores: Tensor
    scaled: Tensor
    mask: Tensor
    masked: Tensor
    row_max: Tensor
    exps: Tensor
    weights: Tensor
    out: Tensor

    def to_dict(self) -> dict:
        """Plain lists and floats (``"-inf"`` for masked scores), for JSON."""
        d: dict = {"scale": self.scale}
        for name in ("q", "k", "v", "scores", "scaled", "mask", "masked", "row_max", "exps",
                     "weights", "out"):
            d[name] = _plain(getattr(self, name).tolist())
        d["row_sums"] = _plain(self.weights.sum(-1).tolist())
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _plain(x):
    if isinstance(x, list):
        return [_plain(e) for e in x]
    if isinstance(x, float) and math.isinf(x):
        return "-inf" if x < 0 else "inf"
    return x


# ----------------------------------------------------------------------------- inputs


def parse_matrix(text: str, name: str) -> Tensor:
    """Parse ``"1,0;0,1"`` (rows split by ';', values by ',' or spaces) into a float64 matrix.

    Args:
        text: the matrix as text.
        name: the argument's name, for error messages (e.g. ``"--q"``).
    """
    rows = _split(text, name)
    try:
        values = [[float(x) for x in row] for row in rows]
    except ValueError:
        bad = next(x for row in rows for x in row if not _is_float(x))
        raise TraceInputError(f"{name}: {bad!r} is not a number") from None
    if not all(math.isfinite(x) for row in values for x in row):
        raise TraceInputError(f"{name}: values must be finite numbers")
    return torch.tensor(values, dtype=DTYPE)


def parse_mask(text: str, name: str = "--mask") -> Tensor:
    """Parse ``"1,1,0;1,1,1"`` into a bool matrix (1/true = may attend, 0/false = may not).

    Args:
        text: the mask as text.
        name: the argument's name, for error messages.
    """
    rows = _split(text, name)
    out = []
    for row in rows:
        bits = []
        for x in row:
            if x.lower() in _TRUE:
                bits.append(True)
            elif x.lower() in _FALSE:
                bits.append(False)
            else:
                raise TraceInputError(f"{name}: {x!r} is not 1/0 (may attend / may not)")
        out.append(bits)
    return torch.tensor(out, dtype=torch.bool)


def _is_float(x: str) -> bool:
    try:
        float(x)
        return True
    except ValueError:
        return False


def _split(text: str, name: str) -> list[list[str]]:
    rows = [r.strip() for r in text.strip().strip(";").split(";")]
    if not text.strip() or any(not r for r in rows):
        raise TraceInputError(f"{name}: empty row in {text!r}; write rows like \"1,0;0,1\"")
    cells = [[x for x in re.split(r"[,\s]+", r) if x] for r in rows]
    widths = [len(c) for c in cells]
    for i, w in enumerate(widths):
        if w != widths[0]:
            raise TraceInputError(
                f"{name}: ragged rows: row 1 has {widths[0]} values but row {i + 1} has {w}"
            )
    return cells


def random_inputs(seed: int, lq: int, lk: int, dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """Small random integers in [-2, 2], easy to multiply by hand: q (lq, dim), k and v (lk, dim).

    Args:
        seed: random seed.
        lq: number of queries.
        lk: number of keys (and values).
        dim: head dimension.
    """
    for name, n in (("--lq", lq), ("--lk", lk), ("--dim", dim)):
        if n < 1:
            raise TraceInputError(f"{name}: must be at least 1, got {n}")
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randint(-2, 3, (n, dim), generator=g).to(DTYPE) for n in (lq, lk, lk))
    return q, k, v


# ----------------------------------------------------------------------------- the trace


def trace_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mask: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
) -> AttentionTrace:
    """Attention of ``q`` over ``k``/``v``, every intermediate kept, checked against the kernel.

    Args:
        q: (Lq, D) queries.
        k: (Lk, D) keys.
        v: (Lk, Dv) values.
        mask: (Lq, Lk) bool, True = may attend.
        causal: also forbid keys after the query (aligned bottom-right as
            :func:`attnlab.attention.masks.causal_mask`: query i sees keys j <= i + Lk - Lq).
        scale: multiplies the scores; defaults to ``1/sqrt(D)``.
    """
    q, k, v = (t.to(DTYPE) for t in (q, k, v))
    _check(q, k, v, mask)
    Lq, D = q.shape
    Lk = k.shape[0]
    scale = D**-0.5 if scale is None else float(scale)
    keep = torch.ones(Lq, Lk, dtype=torch.bool) if mask is None else mask.clone()
    if causal:
        keep &= causal_mask(Lq, Lk)

    scores = q @ k.T  # (Lq, Lk)
    scaled = scores * scale  # (Lq, Lk)
    masked = scaled.masked_fill(~keep, float("-inf"))  # (Lq, Lk)
    row_max = masked.amax(-1)  # (Lq,)
    row_max = row_max.masked_fill(torch.isneginf(row_max), 0.0)  # dead rows: any shift will do
    exps = torch.exp(masked - row_max[:, None])  # (Lq, Lk), 0 where masked
    sums = exps.sum(-1, keepdim=True)  # (Lq, 1)
    weights = exps / sums.masked_fill(sums == 0, 1.0)  # (Lq, Lk)
    out = weights @ v  # (Lq, Dv)

    tr = AttentionTrace(q=q, k=k, v=v, scale=scale, scores=scores, scaled=scaled, mask=keep,
                        masked=masked, row_max=row_max, exps=exps, weights=weights, out=out)
    _verify(tr)
    return tr


def _check(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 2 or t.shape[0] == 0 or t.shape[1] == 0:
            raise TraceInputError(f"{name}: must be a non-empty matrix, got shape {tuple(t.shape)}")
    if k.shape[1] != q.shape[1]:
        raise TraceInputError(
            f"k: rows have {k.shape[1]} values but q rows have {q.shape[1]}; "
            "q and k need the same dim"
        )
    if v.shape[0] != k.shape[0]:
        raise TraceInputError(
            f"v: has {v.shape[0]} rows but k has {k.shape[0]}; one value row per key"
        )
    if mask is not None:
        want = (q.shape[0], k.shape[0])
        if tuple(mask.shape) != want:
            raise TraceInputError(
                f"mask: shape {tuple(mask.shape)} but (queries, keys) = {want}; "
                "one row per query, one column per key"
            )


def _verify(tr: AttentionTrace) -> None:
    """The step-by-step numbers must equal the reference kernel's."""
    res = attend(tr.q[None, None], tr.k[None, None], tr.v[None, None], mask=tr.mask,
                 scale=tr.scale, kernel="math", return_weights=True)
    pairs = (("weights", tr.weights, res.weights[0, 0]), ("out", tr.out, res.out[0, 0]))
    for name, mine, ref in pairs:
        if not torch.allclose(mine, ref, rtol=1e-12, atol=1e-12):
            err = (mine - ref).abs().max().item()
            raise AssertionError(f"trace {name} differ from the math kernel by {err:.3g}")


# ----------------------------------------------------------------------------- display


def trace_tables(tr: AttentionTrace, decimals: int = 4) -> list:
    """Rich renderables showing each step of ``tr``, in order.

    Args:
        tr: the trace.
        decimals: digits after the decimal point.
    """
    Lq, D = tr.q.shape
    Lk = tr.k.shape[0]
    qn = [f"q{i}" for i in range(Lq)]
    kn = [f"k{j}" for j in range(Lk)]
    dn = [f"d{j}" for j in range(D)]
    dv = [f"d{j}" for j in range(tr.v.shape[1])]
    f = _fmt(decimals)
    scale_s = f"1/√{D} = {f(tr.scale)}" if math.isclose(tr.scale, D**-0.5) else f(tr.scale)
    sums = tr.exps.sum(-1)
    dead = [i for i in range(Lq) if not tr.mask[i].any()]
    out = [
        _matrix("Q (queries)", tr.q, qn, dn, f),
        _matrix("K (keys)", tr.k, kn, dn, f),
        _matrix("V (values)", tr.v, kn, dv, f),
        _matrix("1. scores = Q·Kᵀ", tr.scores, qn, kn, f),
        _matrix(f"2. scaled = scores × scale, scale = {scale_s}", tr.scaled, qn, kn, f),
        _matrix("3. mask (1 = may attend, 0 = may not)", tr.mask.to(torch.int64), qn, kn, str),
        _matrix("4. masked = scaled, -inf where mask is 0", tr.masked, qn, kn, f),
        _matrix("5. exps = exp(masked − row max)   (subtracting the max cancels below)",
                tr.exps, qn, kn, f, extra=("row max", tr.row_max), extra2=("row sum", sums)),
        _matrix("6. weights = exps / row sum   (softmax)", tr.weights, qn, kn, f,
                extra=("row sum", tr.weights.sum(-1))),
        _matrix("7. output = weights · V", tr.out, qn, dv, f),
    ]
    if dead:
        rows = ", ".join(qn[i] for i in dead)
        out.append(Text(f"{rows}: nothing to attend to, so weights and output are 0."))
    out.append(Text("Checked: equal to attend(..., kernel='math').", style="green"))
    return out


def _fmt(decimals: int):
    def f(x: float) -> str:
        if math.isinf(x):
            return "-inf" if x < 0 else "inf"
        s = f"{x:.{decimals}f}"
        return s[1:] if s.startswith("-") and float(s) == 0 else s  # no "-0.0000"

    return f


def _matrix(title: str, m: Tensor, rows: list[str], cols: list[str], f, extra=None,
            extra2=None) -> Group:
    t = Table(show_edge=False)
    t.add_column("")
    for c in cols:
        t.add_column(c, justify="right")
    extras = [e for e in (extra, extra2) if e is not None]
    for name, _ in extras:
        t.add_column(name, justify="right", style="dim")
    for i, r in enumerate(rows):
        t.add_row(r, *(f(x) for x in m[i].tolist()), *(f(e[i].item()) for _, e in extras))
    return Group(Text(title, style="bold"), t)
