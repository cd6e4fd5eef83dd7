"""Static figures: valid PNGs of the expected size, saliency colours, escaped HTML, shape errors."""

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from attnlab.explain.figures import (
    DPI, _LABEL_W, _grid, _LINE_H, _SALIENCY_W, _wrap, plot_alignment, plot_head_grid, plot_patch_relevance,
    plot_pruning_curve, plot_rollout, plot_saliency, saliency_colors, saliency_html, write_saliency_html,
)

PNG = b"\x89PNG\r\n\x1a\n"


def _read(path):
    assert path.read_bytes()[:8] == PNG
    assert not list(path.parent.glob(f".{path.name}.*"))  # no temporary file left over
    return mpimg.imread(path)  # (rows, cols, 4)


def _maps(h, n, seed=0):
    return torch.softmax(torch.randn(h, n, n, generator=torch.Generator().manual_seed(seed)), -1)  # (H, L, L)


def test_head_grid_is_wider_with_more_heads(tmp_path):
    toks = [f"t{i}" for i in range(6)]
    one = _read(plot_head_grid(_maps(1, 6), toks, tmp_path / "one.png", title="layer 0"))
    four = _read(plot_head_grid(_maps(4, 6), toks, tmp_path / "four.png", title="layer 0"))
    assert four.shape[1] > 3 * one.shape[1] and four.shape[0] == one.shape[0]
    six = _read(plot_head_grid(_maps(6, 6)[None], None, tmp_path / "six.png"))  # batch of 1, 2 rows
    assert six.shape[0] == 2 * 3 * DPI > one.shape[0]  # 4 + 2 heads, no title


def test_head_grid_drops_ticks_for_long_inputs(tmp_path):
    path = plot_head_grid(_maps(2, 80), [str(i) for i in range(80)], tmp_path / "long.png", max_tokens=64)
    assert _read(path).shape[1] == 2 * 3 * DPI


def test_rollout(tmp_path):
    img = _read(plot_rollout(_maps(1, 5)[0], list("abcde"), tmp_path / "r.png"))
    assert img.shape[1] > img.shape[0]  # the colour bar


def test_saliency_colors_are_monotone():
    red = np.array(saliency_colors([0.0, 0.1, 0.5, 2.0]))  # (L, 3), one sign: white -> red
    lum = red @ [0.299, 0.587, 0.114]
    assert np.all(np.diff(lum) < 0) and np.allclose(red[0], 1.0, atol=0.07)  # 0 is ~white
    div = np.array(saliency_colors([-3.0, -1.0, 0.0, 1.0, 3.0]))  # both signs: blue -> white -> red
    assert np.all(np.diff(div[:, 0] - div[:, 2]) > 0)
    assert np.allclose(div[2], 1.0, atol=0.05)  # 0 sits at the white centre
    neg = np.array(saliency_colors([-2.0, -1.0, -0.5]))  # all negative: deep blue -> light blue
    assert np.all(np.diff(neg[:, 0] - neg[:, 2]) > 0)
    # normalised per method: scaling the scores changes nothing
    assert np.allclose(saliency_colors([1.0, 2.0, 4.0]), saliency_colors([10.0, 20.0, 40.0]))
    assert saliency_colors([0.0, 0.0]) == saliency_colors([0.0, 0.0])  # constant: no division by zero


def test_saliency_png_pixels_follow_scores(tmp_path):
    toks = ["aaaa"] * 5
    scores = [0.0, 0.25, 0.5, 0.75, 1.0]
    img = _read(plot_saliency(toks, {"m": scores}, tmp_path / "s.png"))
    (line,) = _wrap(toks, _SALIENCY_W - _LABEL_W - 0.2)
    y = int((0.1 + _LINE_H * 0.15) * DPI)  # inside the boxes, above the text
    px = np.array([img[y, int((_LABEL_W + x + 0.03) * DPI), :3] for _, x, _ in line])  # (L, 3)
    assert np.allclose(px, saliency_colors(scores), atol=0.03)
    assert np.all(np.diff(px @ [0.299, 0.587, 0.114]) < 0)


def test_saliency_wraps_long_inputs(tmp_path):
    short = _read(plot_saliency(["tok"] * 5, {"a": [1.0] * 5, "b": [-1.0] * 5}, tmp_path / "a.png"))
    toks = [f"token{i}" for i in range(60)]
    long_ = _read(plot_saliency(toks, {"a": np.linspace(-1, 1, 60), "b": torch.rand(60)}, tmp_path / "b.png",
                                title="$x$ <b>"))
    assert long_.shape[1] == short.shape[1] and long_.shape[0] > 2 * short.shape[0]
    assert len(_wrap(toks, _SALIENCY_W - _LABEL_W - 0.2)) > 2


def test_saliency_html_escapes(tmp_path):
    out = saliency_html(["<b>", "a&b", " "], {"ig <x>": [1.0, -1.0, 0.5]})
    assert "&lt;b&gt;" in out and "a&amp;b" in out and "<b>" not in out.replace('<b style', '')
    assert "ig &lt;x&gt;" in out and out.count("<span") == 3 and "background:#" in out
    page = write_saliency_html(["<b>"], {"m": [1.0]}, tmp_path / "s.html").read_text()
    assert page.startswith("<!doctype html>") and "&lt;b&gt;" in page


def test_alignment_figure_size_unchanged(tmp_path):
    from attnlab.recipes.alignment import plot_alignment as from_recipe

    assert from_recipe is plot_alignment
    panels = [(torch.rand(5, 7), list("abcdefg"), list("vwxyz")), (torch.rand(3, 4), list("ab c"), list("xyz")),
              (torch.rand(3, 4), list("abcd") + [], list("xyz"))]
    img = _read(plot_alignment(panels, tmp_path / "al.png", title="t"))
    assert img.shape[:2] == (round(4.2 * 2 * 110), round((7 * 0.28 + 1.5) * 2 * 110))  # as before the move


def test_patch_relevance(tmp_path):
    rgb = _read(plot_patch_relevance(torch.rand(3, 32, 32), torch.rand(4, 4), tmp_path / "vit.png", title="x"))
    gray = _read(plot_patch_relevance(np.random.rand(32, 64), np.linspace(-1, 1, 8), tmp_path / "cnn.png"))
    assert gray.shape[0] < rgb.shape[0]  # a wide image makes a flatter figure
    assert _grid(np.arange(8.0), 32, 64).shape == (2, 4)  # flat (8,) laid out like the image
    assert _grid(np.arange(196.0), 224, 224).shape == (14, 14)
    assert rgb.shape[1] > rgb.shape[0]  # the colour bar


def test_pruning_curve(tmp_path):
    curves = {"importance": [(0.0, 0.9), (0.5, 0.85), (0.25, 0.88)], "random": [(0.0, 0.9), (0.5, 0.6)]}
    img = _read(plot_pruning_curve(curves, tmp_path / "p.png", metric="BLEU", title="pruning"))
    assert img.shape[:2] == (4 * DPI, 6 * DPI)


@pytest.mark.parametrize("call, shape", [
    (lambda p: plot_head_grid(torch.rand(4, 5, 6), None, p), "(4, 5, 6)"),
    (lambda p: plot_head_grid(torch.rand(5, 5), None, p), "(5, 5)"),
    (lambda p: plot_rollout(torch.rand(2, 3, 3), None, p), "(2, 3, 3)"),
    (lambda p: plot_saliency(["a", "b"], {"m": [1.0, 2.0, 3.0]}, p), "(3,)"),
    (lambda p: saliency_html(["a", "b"], {"m": [[1.0, 2.0]]}), "(1, 2)"),
    (lambda p: plot_patch_relevance(torch.rand(2, 8, 8), torch.rand(2, 2), p), "(2, 8, 8)"),
    (lambda p: plot_patch_relevance(torch.rand(8, 8), torch.rand(2, 2, 2), p), "(2, 2, 2)"),
    (lambda p: plot_patch_relevance(torch.rand(8, 8), torch.rand(17), p), "(17,)"),
    (lambda p: plot_pruning_curve({"r": [(0.1, 0.2, 0.3)]}, p), "(1, 3)"),
])
def test_bad_shapes_raise(tmp_path, call, shape):
    with pytest.raises(ValueError, match=__import__("re").escape(shape)):
        call(tmp_path / "x.png")
    assert not list(tmp_path.iterdir())  # nothing written


def test_token_count_mismatch(tmp_path):
    with pytest.raises(ValueError, match="3 tokens"):
        plot_head_grid(_maps(2, 4), list("abc"), tmp_path / "x.png")
