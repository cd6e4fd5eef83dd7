"""A real 1,024-token input end to end: all-MiniLM-L6-v2 with its 512 learned positions
interpolated to 1,024 (``extend_positions``), capture (6 layers x 12 heads of 1024 x 1024 maps),
rollout, the HTML explorer, and the page in headless Chromium: every view draws, no console
errors, and the time to first render is printed (``FIRST_RENDER_MS=...``) and bounded."""

import time

import pytest
import torch

from attnlab.explain import capture, relevance_for, rollout
from attnlab.explain.explorer import write_explorer

from .browser import Page, browser  # noqa: F401 - the fixture


L = 1024

SENTENCES = [
    "The committee postponed its decision until the budget report had been reviewed by every member.",
    "Heavy rain flooded several streets in the old town overnight, and the buses ran late all morning.",
    "She bought fresh bread, two kinds of cheese and a bottle of olive oil at the market.",
    "A cheetah is running behind its prey across the dry grass.",
    "Researchers found that the new vaccine protected most volunteers for at least a year.",
    "The quick brown fox jumps over the lazy dog, then naps in the warm afternoon sun by the river.",
]
SUBJECTS = ["Yesterday", "On Monday", "Later that week", "In the spring", "Meanwhile", "Eventually", "Once again"]


def _long_text(n_words_min: int = 1400) -> str:
    """Real English, repeated with variations (a rotating opener, sentence order)."""
    out, i = [], 0
    while sum(len(s.split()) for s in out) < n_words_min:
        s = SENTENCES[(i * 5) % len(SENTENCES)]
        out.append(f"{SUBJECTS[i % len(SUBJECTS)]}, {s[0].lower()}{s[1:]}")
        i += 1
    return " ".join(out)


@pytest.fixture(scope="module")
def long_explorer(tmp_path_factory, minilm_dir):
    from attnlab.data import load_tokenizer
    from attnlab.models import load_pretrained
    from attnlab.models.positions import extend_positions

    model = extend_positions(load_pretrained(minilm_dir).eval(), L)  # interpolated 512 -> 1,024
    tok = load_tokenizer(minilm_dir)
    ids = tok(_long_text(), return_tensors="pt")["input_ids"]
    assert ids.shape[1] > L, ids.shape
    ids = torch.cat([ids[:, :L - 1], ids[:, -1:]], 1)  # (1, 1024): [CLS] ... [SEP]
    tokens = tok.convert_ids_to_tokens(ids[0].tolist())

    t0 = time.perf_counter()
    cap = capture(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, tokens=tokens)
    capture_s = time.perf_counter() - t0
    maps = list(cap.maps("self"))  # 6 x (12, 1024, 1024), float32
    assert len(maps) == 6 and all(tuple(a.shape) == (12, L, L) for a in maps)
    assert all(torch.allclose(a.sum(-1), torch.ones(12, L), atol=1e-4) for a in maps)

    t0 = time.perf_counter()
    R = rollout(maps)  # (L, L), float32 as the maps
    rel = {"rollout": relevance_for(R, 0), "raw (last layer, [CLS])": maps[-1].mean(0)[0]}
    rollout_s = time.perf_counter() - t0
    assert R.shape == (L, L) and torch.allclose(R.sum(-1), torch.ones(L), atol=1e-3)

    t0 = time.perf_counter()
    path = write_explorer(tmp_path_factory.mktemp("long") / "minilm-1024.html", tokens, maps, rel,
                          title="MiniLM, 1,024 tokens (positions interpolated)")
    write_s = time.perf_counter() - t0
    size_mb = path.stat().st_size / 2**20
    print(f"\nCAPTURE_S={capture_s:.2f} ROLLOUT_S={rollout_s:.2f} WRITE_S={write_s:.2f} "
          f"EXPLORER_MB={size_mb:.2f} (1,024 tokens x 6 layers x 12 heads)")
    assert size_mb < 25
    return path, tokens


def test_long_input_explorer_opens_fast_and_draws_every_view(browser, long_explorer):  # noqa: F811
    path, tokens = long_explorer
    p = Page(browser)
    page = p.page
    t0 = time.perf_counter()
    page.goto(path.as_uri())
    stats = p.wait_ready(timeout_s=60)
    wall_ms = (time.perf_counter() - t0) * 1000
    print(f"\nFIRST_RENDER_MS={stats['firstRenderMs']:.0f} (decode {stats.get('decodeMs', float('nan')):.0f} ms; "
          f"goto->ready wall {wall_ms:.0f} ms)")
    assert stats["firstRenderMs"] < 20_000 and wall_ms < 20_000
    assert stats["drawn"]["head"] >= 1 and stats["linesDrawn"] > 0 and p.ink("#hv-canvas") > 500
    assert page.locator("#hv-layer option").count() == 6 and page.locator("#hv-head option").count() == 12

    # another layer and head redraw the head view
    drawn = p.stats()["drawn"]["head"]
    page.select_option("#hv-layer", "5")
    page.select_option("#hv-head", "11")
    assert p.stats()["drawn"]["head"] >= drawn + 2 and p.ink("#hv-canvas") > 500
    # scrolling to the end draws the last rows (virtualised, not all 1,024 x 16 lines)
    drawn = p.stats()["drawn"]["head"]
    page.evaluate("document.getElementById('hv-scroll').scrollTop = 1e9")
    page.wait_for_function(f"window.attnlabStats.drawn.head > {drawn}")
    assert 0 < p.stats()["linesDrawn"] < 100 * 16

    # the model view: 6 x 12 thumbnails; clicking one opens that layer and head
    page.click("#tab-model")
    assert p.stats()["drawn"]["model"] >= 1 and p.ink("#mv-canvas") > 1000
    assert page.is_hidden("#view-head") and page.is_visible("#view-model")
    page.click("#mv-canvas", position={"x": 44 + 3 * 68 + 30, "y": 44 + 1 * 68 + 30})  # layer 2, head 4
    assert page.is_visible("#view-head")
    assert page.input_value("#hv-layer") == "1" and page.input_value("#hv-head") == "3"

    # the relevance view: one span per token, both methods
    page.click("#tab-relevance")
    assert page.locator("#rv-text .tok").count() == len(tokens) == L
    page.select_option("#rv-method", "raw (last layer, [CLS])")
    assert p.stats()["drawn"]["relevance"] >= 2
    assert p.errors == [] and p.stats()["errors"] == []
    p.close()
