"""A self-contained HTML attention explorer: head view, model view and relevance view.

    cap = capture(model, batch, tokens=tokens)
    R = rollout(cap.maps("self"))
    write_explorer("out/explorer.html", tokens, list(cap.maps("self")),
                   {"rollout": relevance_for(R, 0).tolist()}, title="MiniLM")

One HTML file, no network: CSS and JS inline (the JS is ``explorer.js`` beside this file), the
maps embedded as JSON. Maps are stored sparsely so that 1,024 tokens x 12 layers x 12 heads stays
a few MB and opens in about a second: per query row the top-k keys (uint16 indices, weights
quantised to uint8 relative to the row's maximum, which is kept as float32) plus the mass left
outside the top k, and per head a downsampled T x T thumbnail for the model view, each array
little-endian and base64-packed. :func:`encode_attentions` builds that record; the web server
(:mod:`attnlab.explain.server`) sends the same one.

The page sets ``window.attnlabReady = true`` and ``window.attnlabStats`` (views drawn,
``firstRenderMs`` since navigation start, ...) once the first view is drawn.
"""

from __future__ import annotations

import base64
import html
import json
import math
from importlib import resources
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..io import write_text

MAX_TOKENS = 65_535  # key indices are stored as uint16
THUMB = 48           # the model view's thumbnails are at most THUMB x THUMB


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def encode_attentions(attentions: Sequence[Tensor], top_k: int = 16, thumb: int = THUMB) -> dict:
    """The sparse, quantised, base64 form of one example's maps that the explorer draws.

    Args:
        attentions: one (H, L, L) map per layer (rows: queries, each summing to ~1).
        top_k: keys kept per query row (all of them when L is smaller).
        thumb: the side of the model view's thumbnails (L when L is smaller).

    Returns:
        ``{layers, heads, length, k, idx, w, scale, rest, thumb, thumbSize}``: ``idx`` uint16 and
        ``w`` uint8 of layers*heads*L*k entries (row-major), ``scale`` (the row maximum) and
        ``rest`` (the row's mass outside the top k) float32 per row, ``thumb`` uint8
        layers*heads*T*T (each thumbnail scaled to its own maximum).
    """
    if not attentions:
        raise ValueError("encode_attentions: no layers")
    if top_k < 1:
        raise ValueError(f"encode_attentions: top_k must be >= 1, got {top_k}")
    H, L, L2 = attentions[0].shape
    if L != L2 or L > MAX_TOKENS:
        raise ValueError(f"encode_attentions: maps must be (H, L, L) with L <= {MAX_TOKENS}, "
                         f"got {tuple(attentions[0].shape)}")
    k, T = min(top_k, L), min(thumb, L)
    idx, w, scale, rest, thumbs = [], [], [], [], []
    for i, a in enumerate(attentions):  # one layer at a time: 1,024 tokens x 12 heads is 50 MB
        if tuple(a.shape) != (H, L, L):
            raise ValueError(f"encode_attentions: layer {i} is {tuple(a.shape)}, layer 0 is {(H, L, L)}")
        a = a.detach().to("cpu", torch.float32)  # (H, L, L)
        vals, cols = a.topk(k, dim=-1)  # (H, L, k) each, largest first
        top = vals[..., :1].clamp(min=1e-12)  # (H, L, 1)
        idx.append(cols.to(torch.int32).numpy().astype("<u2"))
        w.append((vals / top * 255).round().clamp(0, 255).to(torch.uint8).numpy())
        scale.append(top[..., 0].numpy().astype("<f4"))  # (H, L)
        rest.append((a.sum(-1) - vals.sum(-1)).clamp(min=0).numpy().astype("<f4"))  # (H, L)
        t = F.adaptive_avg_pool2d(a[None], (T, T))[0]  # (H, T, T)
        t = t / t.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]
        thumbs.append((t * 255).round().clamp(0, 255).to(torch.uint8).numpy())
    return {
        "layers": len(attentions), "heads": H, "length": L, "k": k, "thumbSize": T,
        "idx": _b64(np.stack(idx)), "w": _b64(np.stack(w)), "scale": _b64(np.stack(scale)),
        "rest": _b64(np.stack(rest)), "thumb": _b64(np.stack(thumbs)),
    }


def explorer_data(
    tokens: Sequence[str],
    attentions: Sequence[Tensor],
    relevances: Mapping[str, Sequence[float]] | None = None,
    title: str = "",
    prediction: str | None = None,
    top_k: int = 16,
) -> dict:
    """The record the explorer page renders (also the body of the server's ``/api/explain``)."""
    enc = encode_attentions(attentions, top_k=top_k)
    if len(tokens) != enc["length"]:
        raise ValueError(f"explorer: {len(tokens)} tokens but maps of length {enc['length']}")
    rel = {}
    for name, values in (relevances or {}).items():
        v = [float(x) for x in (values.tolist() if isinstance(values, Tensor) else values)]
        if len(v) != len(tokens):
            raise ValueError(f"explorer: relevance {name!r} has {len(v)} values for {len(tokens)} tokens")
        rel[name] = [x if math.isfinite(x) else 0.0 for x in v]
    return {"title": title, "prediction": prediction, "tokens": [str(t) for t in tokens],
            "attentions": enc, "relevances": rel}


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


CSS = """
body { font: 14px sans-serif; margin: 16px; color: #222; }
header h1 { font-size: 18px; margin: 0 0 4px; }
#prediction { font-weight: bold; } #summary, .info { color: #666; font-size: 12px; }
nav { margin: 10px 0; } nav button { padding: 4px 12px; border: 1px solid #bbb; background: #f4f4f4; cursor: pointer; }
nav button.active { background: #1f77b4; color: #fff; border-color: #1f77b4; }
#hv-scroll { height: 70vh; overflow: auto; border: 1px solid #ddd; position: relative; }
#hv-canvas { position: sticky; top: 0; display: block; }
#mv-canvas { cursor: pointer; display: block; }
#rv-text { line-height: 1.9; max-height: 70vh; overflow: auto; border: 1px solid #ddd; padding: 8px; }
.tok { padding: 1px 2px; border-radius: 3px; }
#explain-form textarea { width: 100%; height: 5em; font: inherit; }
#status { color: #d62728; margin-left: 8px; }
"""

BODY = """
<header><h1 id="title"></h1><div id="prediction"></div><div id="summary"></div></header>
{form}
<nav><button id="tab-head" type="button">head view</button><button id="tab-model" type="button">model view</button><button id="tab-relevance" type="button">relevance view</button></nav>
<section id="view-head">
  <select id="hv-layer"></select> <select id="hv-head"></select> <span id="hv-info" class="info"></span>
  <div id="hv-scroll"><canvas id="hv-canvas"></canvas><div id="hv-spacer"></div></div>
</section>
<section id="view-model" hidden><div class="info">layers (rows) x heads (columns), downsampled; click one to open it in the head view</div><canvas id="mv-canvas"></canvas></section>
<section id="view-relevance" hidden><select id="rv-method"></select> <span class="info">red: relevant (scaled to the largest non-special token), blue: negative</span><div id="rv-text"></div></section>
"""


def render_page(data: dict | None = None, form: str = "", title: str = "attnlab explorer") -> str:
    """The explorer's HTML: ``data`` embedded (a file), or none and a ``form`` that fetches it."""
    embedded = ""
    if data is not None:
        # "</" inside a <script> would end it early (a token "</script>").
        payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
        embedded = f'<script id="attnlab-data" type="application/json">{payload}</script>\n'
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\">"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>"
        f"{BODY.format(form=form)}{embedded}<script>{_asset('explorer.js')}</script>\n</body></html>\n"
    )


def write_explorer(
    path: str | Path,
    tokens: Sequence[str],
    attentions: Sequence[Tensor],
    relevances: Mapping[str, Sequence[float]] | None = None,
    title: str = "",
    prediction: str | None = None,
    top_k: int = 16,
) -> Path:
    """Write one self-contained HTML explorer of one example's attention (atomically).

    Args:
        path: the .html file to write.
        tokens: the L token strings.
        attentions: one (H, L, L) self-attention map per layer, first layer first
            (``list(cap.maps("self"))``).
        relevances: per method name, L per-token scores (shown as coloured text).
        title: the page heading.
        prediction: a line about the model's output, shown under the title.
        top_k: keys kept per query row; the rest is summarised as one "mass elsewhere" number.

    Returns:
        ``path`` as a Path.
    """
    data = explorer_data(tokens, attentions, relevances, title=title, prediction=prediction, top_k=top_k)
    return write_text(path, render_page(data, title=title or "attnlab explorer"))


__all__ = ["write_explorer", "encode_attentions", "explorer_data", "render_page"]
