"""Per-patch image explanations (attnlab.explain.images): the ViT methods against METHODS read by
hand, the CNN's spatial maps against the captured gates, IG's completeness, occlusion and the
patch scorer on a linear model whose answers are known, a quick trained ViT on a planted marker,
shape errors, and `attnlab explain MODEL_DIR IMAGE` end to end."""

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from attnlab.cli import app
from attnlab.explain import METHODS, capture, relevance_for
from attnlab.explain.images import (
    PatchScorer, baseline_image, explain_image, hit_at_k, image_faithfulness, load_image, patch_occlusion,
)
from attnlab.models import create
from attnlab.models.outputs import ImageClassifierOutput


def vit(**kw):
    torch.manual_seed(0)
    return create("vit-tiny", init_std=0.5, **kw).double().eval()  # 8x8 grey, patch 2: a 4x4 grid


def image(C=1, S=8, seed=1):
    return torch.rand(1, C, S, S, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ----------------------------------------------------------------------------- ViT


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_vit_attention_methods_read_the_pooled_row_by_hand(pool):
    model, x = vit(pool=pool), image()
    ex = explain_image(model, x, ("rollout", "chefer", "raw"), target=3)
    cap = capture(model, {"pixel_values": x}, target=lambda out: out.logits[0, 3])
    maps, grads = cap.maps("self"), cap.grads("self")
    R = METHODS["rollout"](maps)  # (17, 17) with [CLS], (16, 16) without
    C = METHODS["chefer"](maps, grads) - torch.eye(R.shape[0], dtype=R.dtype)
    A = METHODS["raw"](maps)
    for name, M in (("rollout", R), ("chefer", C), ("raw", A)):
        want = M[0, 1:] if pool == "cls" else M.mean(0)  # [CLS] row minus its column; mean of patch rows
        torch.testing.assert_close(ex.relevances[name], want.reshape(4, 4), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ex.relevances["rollout"].reshape(-1), relevance_for(R, 0 if pool == "cls" else "mean")[-16:])
    assert ex.grid == (4, 4) and ex.patch_size == 2 and ex.target_class == 3


def test_ig_completeness_within_one_percent_on_a_random_vit():
    model, x = vit(), image()
    ex = explain_image(model, x, ("ig",), ig_steps=64, baseline="mean")
    c = ex.info["ig"]
    gap = c["f_x"] - c["f_baseline"]
    assert abs(gap) > 0.05, gap  # a gap worth checking
    assert float(ex.relevances["ig"].sum()) == pytest.approx(gap, rel=0.01)
    assert c["sum"] == pytest.approx(float(ex.relevances["ig"].sum()), rel=1e-9)  # the per-patch sum loses nothing


def test_flow_refuses_too_many_tokens_for_mean_pooling():
    torch.manual_seed(0)
    model = create("vit-tiny", image_size=16, pool="mean").eval()  # 64 patches
    with pytest.raises(ValueError, match="flow: 64 tokens"):
        explain_image(model, torch.rand(1, 1, 16, 16), ("flow",))


# ----------------------------------------------------------------------------- CNN


def test_cnn_spatial_maps_are_the_captured_gates_pooled_per_patch():
    torch.manual_seed(0)
    model = create("cnn-attention-tiny").double().eval()  # stages 8x8 and 4x4
    x = image()
    cap = capture(model, {"pixel_values": x}, target=lambda out: out.logits[0, 2])
    gates, grads = cap.maps("self"), cap.grads("self")
    ex = explain_image(model, x, ("spatial", "spatial_x_grad"), target=2, stage=-1)  # default grid: the last stage's
    assert ex.grid == (4, 4) and ex.patch_size == 2
    torch.testing.assert_close(ex.relevances["spatial"], gates[-1][0])
    torch.testing.assert_close(ex.relevances["spatial_x_grad"], (gates[-1][0] * grads[-1][0]).clamp(min=0))
    first = explain_image(model, x, ("spatial",), target=2, stage=0)  # the 8x8 gate, 2x2 averaged
    torch.testing.assert_close(first.relevances["spatial"], F.avg_pool2d(gates[0], 2)[0])
    mean = explain_image(model, x, ("spatial",), target=2, patch_size=1)  # default: the stage mean; 8x8 grid
    up = F.interpolate(gates[1][None], size=(8, 8), mode="bilinear", align_corners=False)[0, 0]
    torch.testing.assert_close(mean.relevances["spatial"], (gates[0][0] + up) / 2)


# ----------------------------------------------------------------------------- a linear model


class Linear(torch.nn.Module):
    """logits[:, 0] = Σ w ⊙ x; logit 1 = 0. Occlusion, IG and the scorer have closed forms. Its
    config passes for a one-channel CNN's, so its grid defaults to 2-pixel cells."""

    def __init__(self, w):
        super().__init__()
        self.w = w
        self.config = SimpleNamespace(family="cnn_attention", in_channels=1, num_stages=2)

    def forward(self, pixel_values):
        s = (pixel_values * self.w).flatten(1).sum(-1)  # (B,)
        return ImageClassifierOutput(logits=torch.stack([s, torch.zeros_like(s)], -1))


def test_occlusion_and_scorer_on_a_linear_model():
    w = torch.arange(16.0, dtype=torch.float64).reshape(1, 1, 4, 4)  # patch (i, j) of 2x2 pixels
    x = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    model = Linear(w)
    per_patch = F.avg_pool2d(w, 2)[0, 0] * 4  # (2, 2): Σ w over each patch
    torch.testing.assert_close(patch_occlusion(model, x, torch.zeros_like(x), 0, (2, 2), 2), per_patch)
    half = baseline_image(x * 0.5 + 0.5 * (torch.arange(16.0).reshape(1, 1, 4, 4) % 2), "mean")  # all 0.75
    torch.testing.assert_close(half, torch.full_like(x, 0.75))
    torch.testing.assert_close(patch_occlusion(model, x, half, 0, (2, 2), 2), per_patch * 0.25)
    score = PatchScorer(model, x, torch.zeros_like(x), 0, (2, 2), 2)
    assert score(torch.ones(4, dtype=torch.bool)) == pytest.approx(float(w.sum()))
    assert score(torch.tensor([False, True, True, False])) == pytest.approx(float(per_patch[0, 1] + per_patch[1, 0]))
    torch.testing.assert_close(score.many(torch.eye(4, dtype=torch.bool)), per_patch.reshape(-1))


def test_faithfulness_prefers_the_true_order_on_a_linear_model():
    """Deleting the heaviest patches first drops the logit fastest: the true order beats its reverse."""
    torch.manual_seed(0)
    w = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    x = torch.ones(1, 1, 8, 8, dtype=torch.float64)
    model = Linear(w)
    truth = F.avg_pool2d(w, 2)[0, 0]  # (4, 4)
    good = image_faithfulness(model, x, truth, 0)
    bad = image_faithfulness(model, x, -truth, 0)
    assert good["comprehensiveness"] > bad["comprehensiveness"] and good["aopc"] > bad["aopc"]
    assert good["deletion_auc"] < bad["deletion_auc"] and good["insertion_auc"] > bad["insertion_auc"]
    assert good["sufficiency"] < bad["sufficiency"]


def test_ig_equals_occlusion_on_a_linear_model():
    """For f = Σ w ⊙ x and a zero baseline, IG per patch is exactly Σ_patch w ⊙ x, as is occlusion."""
    torch.manual_seed(0)
    model = Linear(torch.randn(1, 1, 8, 8, dtype=torch.float64))
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    ex = explain_image(model, x, ("ig", "occlusion"), target=0, ig_steps=4)
    want = F.avg_pool2d(model.w * x, 2)[0, 0] * 4  # (4, 4)
    torch.testing.assert_close(ex.relevances["ig"], want)
    torch.testing.assert_close(ex.relevances["occlusion"], want)


def test_hit_at_k():
    r = torch.tensor([[0.1, 0.9], [0.5, 0.2]])
    assert hit_at_k(r, 1) == 1.0 and hit_at_k(r, 2) == 0.0 and hit_at_k(r, [1, 3], k=2) == 0.5


# ----------------------------------------------------------------------------- a trained ViT


def marker_images(n, seed):
    """16x16 grey noise with one bright (class 0) or mid-grey (class 1) 4x4 square on the 4x4 grid."""
    g = torch.Generator().manual_seed(seed)
    x = 0.2 * torch.rand(n, 1, 16, 16, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    cell = torch.randint(0, 16, (n,), generator=g)
    for i in range(n):
        r, c = divmod(int(cell[i]), 4)
        x[i, 0, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = 1.0 if y[i] == 0 else 0.6
    return x, y, cell


def test_trained_vit_finds_the_marker_better_than_random():
    torch.manual_seed(0)
    model = create("vit-tiny", image_size=16, patch_size=4, num_classes=2, d_model=32, num_layers=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(200):  # about 2 s on one thread; reaches 1.0 accuracy from step ~100
        x, y, _ = marker_images(64, seed=step)
        loss = F.cross_entropy(model(x).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y, cell = marker_images(40, seed=10_000)
    with torch.no_grad():
        assert float((model(x).logits.argmax(-1) == y).float().mean()) >= 0.9
    hits = {m: 0.0 for m in ("chefer", "ig", "random")}
    for i in range(len(x)):
        ex = explain_image(model, x[i:i + 1], tuple(hits), ig_steps=16, seed=i)
        for m in hits:
            hits[m] += hit_at_k(ex.relevances[m], int(cell[i])) / len(x)
    assert hits["chefer"] >= 0.6 and hits["ig"] >= 0.6, hits  # random: 1/16 on average
    assert hits["random"] <= 0.3, hits


# ----------------------------------------------------------------------------- errors


def test_shape_and_name_errors():
    model = vit()
    with pytest.raises(ValueError, match=r"8x8 images.*\(1, 1, 16, 16\)"):
        explain_image(model, torch.rand(1, 1, 16, 16, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(1, 1, H, W\), got \(2, 1, 8, 8\)"):
        explain_image(model, torch.rand(2, 1, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="did you mean 'rollout'"):
        explain_image(model, image(), ("rolout",))
    with pytest.raises(ValueError, match="out of range"):
        explain_image(model, image(), ("random",), target=10)
    cnn = create("cnn-attention-tiny").eval()
    with pytest.raises(ValueError, match=r"\(1, 1, 6, 6\) is not a whole number of 4x4"):
        explain_image(cnn, torch.rand(1, 1, 6, 6), ("spatial",), patch_size=4)
    with pytest.raises(ValueError, match="unknown method 'rollout' for cnn models"):
        explain_image(cnn, torch.rand(1, 1, 8, 8), ("rollout",))
    with pytest.raises(ValueError, match="needs a ViT or a CBAM CNN"):
        explain_image(create("encoder-tiny"), image())


# ----------------------------------------------------------------------------- CLI


def png(path, size, mode="RGB"):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    pixels = (torch.rand(size, size, 3, generator=g) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels, "RGB").convert(mode).save(path)
    return path


def test_load_image_converts_resizes_and_normalises(tmp_path):
    f = png(tmp_path / "a.png", 20)
    x, img = load_image(f, 1, 8)
    assert x.shape == (1, 1, 8, 8) and img.shape == (1, 8, 8) and 0 <= float(img.min()) <= float(img.max()) <= 1
    x3, img3 = load_image(f, 3, 8, ([0.5, 0.5, 0.5], [0.25, 0.25, 0.25]))
    torch.testing.assert_close(x3, ((img3 - 0.5) / 0.25)[None])


@pytest.mark.parametrize("name,methods", [("vit-tiny", "rollout,chefer,ig"), ("cnn-attention-tiny", "spatial,occlusion")])
def test_cli_explain_image_writes_relevances_and_overlays(tmp_path, name, methods):
    torch.manual_seed(0)
    model_dir = create(name, in_channels=3).save_pretrained(tmp_path / "model")
    meta = json.loads((model_dir / "config.json").read_text())
    meta.update(image_mean=[0.5] * 3, image_std=[0.5] * 3)  # read by the CLI, ignored by the loader
    (model_dir / "config.json").write_text(json.dumps(meta))
    res = CliRunner().invoke(app, ["explain", str(model_dir), str(png(tmp_path / "x.png", 12, "L")),
                                   "--method", methods, "--target", "logit:2", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "logit[2]" in res.stdout
    data = json.loads((tmp_path / "o" / "relevances.json").read_text())
    assert data["patches"] == [4, 4] and data["target"] == "logit[2]"
    assert set(data["methods"]) == set(methods.split(","))
    for m, r in data["methods"].items():
        assert len(r) == 16 and all(isinstance(v, float) for v in r)
        assert (tmp_path / "o" / f"patches-{m}.png").stat().st_size > 1000
    if "ig" in methods:
        assert "ig completeness" in res.stdout


def test_cli_explain_image_errors(tmp_path):
    model_dir = create("vit-tiny").save_pretrained(tmp_path / "model")
    res = CliRunner().invoke(app, ["explain", str(model_dir), str(tmp_path / "missing.png")])
    assert res.exit_code == 2 and "no such image file" in res.stderr
    res = CliRunner().invoke(app, ["explain", str(model_dir), str(png(tmp_path / "x.png", 8)), "--method", "spatial"])
    assert res.exit_code == 2 and "unknown method 'spatial' for vit models" in res.stderr
