"""Static figures of explanations: head grids, rollout, token saliency, alignment, patch relevance
and pruning curves, as PNGs (matplotlib, Agg backend), plus token saliency as HTML.

    plot_head_grid(cap.maps("self")[0], tokens, "out/layer0.png")      # (H, L, L)
    plot_rollout(rollout(cap.maps("self")), tokens, "out/rollout.png")  # (L, L)
    plot_saliency(tokens, {"chefer": r1, "ig": r2}, "out/saliency.png")  # (L,) per method
    write_saliency_html(tokens, {"chefer": r1}, "out/saliency.html")

Every ``plot_*`` writes its file atomically (:func:`attnlab.io.atomic_path`) and returns its
``Path``. Bad shapes raise ``ValueError`` naming the shape received.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..io import atomic_path, write_text
from ..plotting import pyplot as _pyplot
from ..plotting import save_figure
from ..recipes.alignment import plot_alignment

__all__ = [
    "plot_head_grid", "plot_rollout", "plot_saliency", "saliency_colors", "saliency_html",
    "write_saliency_html", "plot_alignment", "plot_patch_relevance", "plot_pruning_curve",
]

DPI = 110
SEQUENTIAL_CMAP = "Reds"  # scores of one sign
DIVERGING_CMAP = "bwr"  # scores of both signs: blue < 0 (white) < red, linear in each channel
_CHAR_W = 0.6 * 10 / 72  # inches per character of 10 pt DejaVu Sans Mono
_BOX_PAD = 0.08  # inches either side of a token
_LINE_H = 0.3  # inches per line of tokens
_LABEL_W = 1.4  # inches for the method names
_SALIENCY_W = 10.0  # figure width of plot_saliency, inches


# ----------------------------------------------------------------------------- helpers


def _save(fig, path, dpi: int = DPI) -> Path:
    return save_figure(fig, path, dpi)


def _array(x, what: str) -> np.ndarray:
    """A float64 numpy copy of a tensor or array-like."""
    if isinstance(x, Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    a = np.asarray(x, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{what}: non-finite values in shape {tuple(a.shape)}")
    return a


def _label(tok: str) -> str:
    """A printable tick label: escapes control characters, shows blanks as ␣."""
    return repr(tok)[1:-1] if tok.strip() else "␣"


def _token_ticks(ax, tokens: Sequence[str] | None, n: int, max_tokens: int, fontsize: int = 7) -> None:
    if not tokens or n > max_tokens:
        ax.set_xticks([])
        ax.set_yticks([])
        return
    labels = [_label(t) for t in tokens]
    rot = 90 if max(len(t) for t in labels) > 2 else 0
    ax.set_xticks(range(n), labels, fontsize=fontsize, rotation=rot)
    ax.set_yticks(range(n), labels, fontsize=fontsize)


def _check_tokens(tokens: Sequence[str] | None, n: int, what: str) -> None:
    if tokens is not None and len(tokens) and len(tokens) != n:
        raise ValueError(f"{what}: {len(tokens)} tokens for a map of length {n}")


# ----------------------------------------------------------------------------- attention maps


def plot_head_grid(maps, tokens: Sequence[str] | None, path, title: str = "", max_tokens: int = 64) -> Path:
    """One heatmap per head of one layer, in a grid of up to 4 columns.

    Args:
        maps: (H, L, L) attention weights of one layer (a leading batch of 1 is dropped).
        tokens: the L tokens (labels both axes when ``L <= max_tokens``); None for no labels.
        path: the PNG to write.
        title: the figure title.
        max_tokens: longest sequence that still gets tick labels.
    """
    a = _array(maps, "maps")
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape[0] == 0:
        raise ValueError(f"maps: expected (H, L, L), got shape {tuple(a.shape)}")
    H, L, _ = a.shape
    _check_tokens(tokens, L, "plot_head_grid")
    plt = _pyplot()
    cols = min(4, H)
    rows = math.ceil(H / cols)
    side = 3.0 if L > max_tokens or not tokens else max(3.0, 0.14 * L + 1.0)
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols, side * rows + 0.4 * bool(title)), squeeze=False)
    for h, ax in enumerate(axes.flat):
        if h >= H:
            ax.axis("off")
            continue
        ax.imshow(a[h], cmap="viridis", vmin=0, vmax=max(1e-6, float(a[h].max())), interpolation="nearest")
        _token_ticks(ax, tokens, L, max_tokens)
        ax.set_title(f"head {h}", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_rollout(matrix, tokens: Sequence[str] | None, path, title: str = "Attention rollout",
                 max_tokens: int = 64) -> Path:
    """One (L, L) heatmap (rows: outputs, columns: the tokens they draw on) with a colour bar.

    Args:
        matrix: (L, L) relevance, e.g. from :func:`attnlab.explain.rollout`.
        tokens: the L tokens; None for no labels.
        path: the PNG to write.
        title: the figure title.
        max_tokens: longest sequence that still gets tick labels.
    """
    a = _array(matrix, "matrix")
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"matrix: expected (L, L), got shape {tuple(a.shape)}")
    L = a.shape[0]
    _check_tokens(tokens, L, "plot_rollout")
    plt = _pyplot()
    side = 5.0 if L > max_tokens or not tokens else max(5.0, 0.16 * L + 1.5)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    im = ax.imshow(a, cmap="viridis", interpolation="nearest")
    _token_ticks(ax, tokens, L, max_tokens, fontsize=8)
    ax.set_xlabel("input token")
    ax.set_ylabel("output position")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------------------- token saliency


def _scores(tokens: Sequence[str], scores: Mapping[str, Sequence[float]]) -> dict[str, np.ndarray]:
    if not scores:
        raise ValueError("scores: no methods")
    out = {}
    for name, s in scores.items():
        a = _array(s, f"scores[{name!r}]")
        if a.shape != (len(tokens),):
            raise ValueError(f"scores[{name!r}]: expected shape ({len(tokens)},), got shape {tuple(a.shape)}")
        out[name] = a
    return out


def saliency_colors(scores) -> list[tuple[float, float, float]]:
    """RGB colours (0..1) of one method's token scores, normalised per method.

    Scores of one sign go through a sequential map (white = 0, red = the largest score, or blue =
    the most negative when all are negative);
    scores of both signs through a diverging map centred on 0 (blue < 0 < red), scaled by the
    largest magnitude so that 0 stays white.

    Args:
        scores: (L,) scores.
    """
    from matplotlib import colormaps

    a = _array(scores, "scores")
    if a.ndim != 1:
        raise ValueError(f"scores: expected (L,), got shape {tuple(a.shape)}")
    m = float(np.abs(a).max()) if a.size else 0.0
    x = a / m if m > 0 else np.zeros_like(a)  # (L,) in [-1, 1]
    if a.size and a.min() < 0 < a.max():
        rgba = colormaps[DIVERGING_CMAP]((x + 1) / 2)
    elif a.size and a.max() <= 0 and a.min() < 0:
        rgba = colormaps["Blues"](-x * 0.85)  # all negative: the most negative darkest
    else:
        rgba = colormaps[SEQUENTIAL_CMAP](x * 0.85)  # the darkest reds would hide black text
    return [tuple(float(c) for c in row[:3]) for row in rgba]


def _text_color(rgb: tuple[float, float, float]) -> str:
    lum = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return "black" if lum > 0.5 else "white"


def _hex(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgb)


def _wrap(tokens: Sequence[str], width: float) -> list[list[tuple[int, float, float]]]:
    """Lay tokens out in lines of at most ``width`` inches: per line ``(index, x, box width)``."""
    lines, line, x = [], [], 0.0
    for i, tok in enumerate(tokens):
        w = len(_label(tok)) * _CHAR_W + 2 * _BOX_PAD
        if line and x + w > width:
            lines.append(line)
            line, x = [], 0.0
        line.append((i, x, w))
        x += w + 0.04
    if line:
        lines.append(line)
    return lines


def plot_saliency(tokens: Sequence[str], scores: Mapping[str, Sequence[float]], path, title: str = "") -> Path:
    """Token saliency as coloured text: one block per method, long inputs wrapped over lines.

    Each token sits in a box whose background encodes its score (see :func:`saliency_colors`).

    Args:
        tokens: the L tokens.
        scores: method name -> (L,) scores.
        path: the PNG to write.
        title: the figure title.
    """
    from matplotlib.patches import Rectangle

    rows = _scores(tokens, scores)
    lines = _wrap(tokens, _SALIENCY_W - _LABEL_W - 0.2)
    block = max(1, len(lines)) * _LINE_H + 0.15
    top = 0.45 if title else 0.1
    height = top + block * len(rows) + 0.1
    plt = _pyplot()
    fig = plt.figure(figsize=(_SALIENCY_W, height))
    ax = fig.add_axes((0, 0, 1, 1))  # axes units are inches from the top left
    ax.set_xlim(0, _SALIENCY_W)
    ax.set_ylim(height, 0)
    ax.axis("off")
    if title:
        ax.text(_SALIENCY_W / 2, 0.25, title, ha="center", va="center", fontsize=12, parse_math=False)
    y0 = top
    for name, s in rows.items():
        colors = saliency_colors(s)
        ax.text(0.1, y0 + _LINE_H / 2, name, ha="left", va="center", fontsize=10, weight="bold",
                parse_math=False)
        for k, line in enumerate(lines):
            y = y0 + k * _LINE_H
            for i, x, w in line:
                c = colors[i]
                ax.add_patch(Rectangle((_LABEL_W + x, y + 0.03), w, _LINE_H - 0.06, facecolor=c, edgecolor="none"))
                ax.text(_LABEL_W + x + w / 2, y + _LINE_H / 2, _label(tokens[i]), ha="center", va="center",
                        fontsize=10, family="monospace", color=_text_color(c), parse_math=False)
        y0 += block
    return _save(fig, path)


def saliency_html(tokens: Sequence[str], scores: Mapping[str, Sequence[float]]) -> str:
    """Token saliency as a self-contained HTML snippet (inline styles, escaped tokens).

    Args:
        tokens: the L tokens.
        scores: method name -> (L,) scores; a token's tooltip shows its score.
    """
    rows = _scores(tokens, scores)
    out = ['<div class="attnlab-saliency" style="font-family:monospace;line-height:2">']
    for name, s in rows.items():
        spans = []
        for tok, v, c in zip(tokens, s, saliency_colors(s)):
            style = f"background:{_hex(c)};color:{_text_color(c)};padding:1px 3px;white-space:pre"
            spans.append(f'<span style="{style}" title="{v:.4g}">{html.escape(tok if tok.strip() else "␣")}</span>')
        out.append(f'<div><b style="display:inline-block;min-width:8em">{html.escape(name)}</b> '
                   + " ".join(spans) + "</div>")
    out.append("</div>")
    return "\n".join(out)


def write_saliency_html(tokens: Sequence[str], scores: Mapping[str, Sequence[float]], path,
                        title: str = "Token saliency") -> Path:
    """Write :func:`saliency_html` as a whole HTML page, atomically."""
    t = html.escape(title)
    page = (f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{t}</title></head>\n'
            f"<body><h3>{t}</h3>\n{saliency_html(tokens, scores)}\n</body></html>\n")
    return write_text(path, page)


# ----------------------------------------------------------------------------- images and heads


def _grid(rel: np.ndarray, h: int, w: int) -> np.ndarray:
    """A flat (n,) relevance as the (gh, gw) grid whose aspect is nearest the image's."""
    n = rel.shape[0]
    pairs = [(g, n // g) for g in range(1, n + 1) if n % g == 0]
    gh, gw = min(pairs, key=lambda p: abs(math.log(p[0] / p[1]) - math.log(h / w)))
    if abs(math.log(gh / gw) - math.log(h / w)) > math.log(2):
        raise ValueError(f"relevance: cannot lay shape {tuple(rel.shape)} out as a grid over a "
                         f"{h}x{w} image (drop the [CLS] token, or pass (gh, gw))")
    return rel.reshape(gh, gw)


def plot_patch_relevance(image, relevance, path, title: str = "", alpha: float = 0.5) -> Path:
    """The image with per-patch (ViT) or spatial (CNN) relevance upsampled over it, and a colour bar.

    Args:
        image: (H, W) or (C, H, W) with C in 1, 3, 4; min-max scaled for display.
        relevance: a (gh, gw) grid, or flat (gh*gw,) laid out as the grid nearest the image's aspect.
        path: the PNG to write.
        title: the figure title.
        alpha: opacity of the relevance.
    """
    img = _array(image, "image")
    if img.ndim == 3 and img.shape[0] in (1, 3, 4):
        img = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)  # (H, W) or (H, W, C)
    elif img.ndim != 2:
        raise ValueError(f"image: expected (H, W) or (C, H, W) with C in 1, 3, 4, got shape {tuple(img.shape)}")
    H, W = img.shape[:2]
    rel = _array(relevance, "relevance")
    if rel.ndim == 1 and rel.size:
        rel = _grid(rel, H, W)
    elif rel.ndim != 2 or rel.size == 0:
        raise ValueError(f"relevance: expected (gh, gw) or (gh*gw,), got shape {tuple(rel.shape)}")
    span = img.max() - img.min()
    img = (img - img.min()) / span if span > 0 else np.zeros_like(img)
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if rel.min() < 0 < rel.max():
        m = float(np.abs(rel).max())
        cmap, vmin, vmax = DIVERGING_CMAP, -m, m
    else:
        cmap, vmin, vmax = "jet", float(rel.min()), float(rel.max())
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5 * W / max(H, W) + 1.2, 5.5 * H / max(H, W) + 0.5 * bool(title)))
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
    extent = (-0.5, W - 0.5, H - 0.5, -0.5)  # stretch the grid over the whole image
    im = ax.imshow(rel, cmap=cmap, vmin=vmin, vmax=vmax, alpha=alpha, extent=extent, interpolation="bilinear")
    ax.set_xlim(extent[:2])
    ax.set_ylim(extent[2:])
    ax.axis("off")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="relevance")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_pruning_curve(curves: Mapping[str, Sequence[tuple[float, float]]], path, metric: str = "accuracy",
                       title: str = "") -> Path:
    """The metric against the fraction of heads pruned, one line per order (Michel et al. 2019, fig. 3).

    Args:
        curves: order name (e.g. "importance", "random") -> :func:`attnlab.explain.pruning_curve`'s
            ``[(fraction, metric), ...]``.
        path: the PNG to write.
        metric: the y-axis label.
        title: the figure title.
    """
    if not curves:
        raise ValueError("curves: no curves")
    data = {}
    for name, pts in curves.items():
        a = _array(list(pts), f"curves[{name!r}]")
        if a.ndim != 2 or a.shape[1] != 2 or a.shape[0] == 0:
            raise ValueError(f"curves[{name!r}]: expected [(fraction, metric), ...] of shape (n, 2), "
                             f"got shape {tuple(a.shape)}")
        data[name] = a[np.argsort(a[:, 0], kind="stable")]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, a in data.items():
        ax.plot(a[:, 0], a[:, 1], marker="o", markersize=4, label=name)
    ax.set_xlabel("fraction of heads pruned")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(title="order")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)
