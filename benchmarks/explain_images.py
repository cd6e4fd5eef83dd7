"""Per-patch explanations of images against a planted ground truth (ViT and the CBAM CNN).

    python benchmarks/explain_images.py --quick             # fewer examples, shorter training
    python benchmarks/explain_images.py --out DIR           # also overlay figures, one per model

The task: 32x32 RGB noise with one solid 4x4 square (the marker) on a random cell of the 8x8
grid of 4-pixel patches; its colour (red, green, blue, yellow) is the label. Four 3x3
distractor blobs in random palette colours sit elsewhere: colour alone does not decide the
label (the colour covering most pixels is the label for 0.63 of images), the marker's size
does. A tiny ViT (patch 4, [CLS] pooling) and a tiny CBAM CNN are trained on fresh batches;
then each method's top patch is checked against the marker's patch (precision@1), and the
faithfulness metrics (removed patches set to 0) are ranked by ``faithfulness_table``.

The CNN's gate methods are read as the mean over stages (the default), at the first stage
("@0") and at the last ("@-1"). Attention flow costs ~3 s an image (65 tokens: 65 max-flows), so it runs
on the first 20 test images only (8 with --quick). Training is step-bound and seeded, one
thread by default: the numbers do not depend on the machine's speed (the timings do).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import attnlab
from attnlab.explain.faithfulness import faithfulness_table
from attnlab.explain.faithfulness import METRICS
from attnlab.explain.images import explain_image, hit_at_k, image_faithfulness
from attnlab.models import create

PALETTE = torch.tensor([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.2, 0.3, 1.0], [1.0, 1.0, 0.1]])  # (K, 3)
SIZE, PATCH = 32, 4
VIT = dict(image_size=SIZE, patch_size=PATCH, in_channels=3, num_classes=4, d_model=64, num_layers=2,
           num_heads=4, ffn_dim=128, pool="cls")
CNN = dict(image_size=SIZE, in_channels=3, num_classes=4, base_channels=16, num_stages=3,
           blocks_per_stage=1, reduction=4, spatial_kernel=3)
VIT_METHODS = ("raw", "rollout", "flow", "chefer", "attn_x_grad", "ig", "occlusion", "random")
CNN_METHODS = ("spatial", "spatial_x_grad", "spatial@0", "spatial_x_grad@0", "spatial@-1", "spatial_x_grad@-1",
               "ig", "occlusion", "random")  # "@s": the CBAM gate of stage s (default: the mean over stages)


def explain(model, img, label: str, **kw):
    """(explanation, (gh, gw) relevance) of one method; "name@stage" picks the CNN's stage."""
    name, _, stage = label.partition("@")
    stage = "mean" if not stage else int(stage)
    ex = explain_image(model, img, (name,), stage=stage, **kw)
    return ex, ex.relevances[name]


def make_images(n: int, seed: int, distractors: int = 4, blob: int = 3, noise: float = 0.15):
    """n images (n, 3, 32, 32) in [0, 1], labels (n,) and the marker's patch index (n,), row-major.
    Distractors: ``blob`` x ``blob`` squares in palette colours, never touching the marker's patch."""
    g = torch.Generator().manual_seed(seed)
    grid = SIZE // PATCH
    x = noise * torch.rand(n, 3, SIZE, SIZE, generator=g)  # (n, 3, S, S)
    y = torch.randint(0, len(PALETTE), (n,), generator=g)
    cell = torch.randint(0, grid * grid, (n,), generator=g)
    for i in range(n):
        r, c = divmod(int(cell[i]), grid)
        for _ in range(distractors):
            while True:
                top, left = torch.randint(0, SIZE - blob + 1, (2,), generator=g).tolist()
                if not (r * PATCH - blob < top < (r + 1) * PATCH and c * PATCH - blob < left < (c + 1) * PATCH):
                    break
            colour = PALETTE[torch.randint(0, len(PALETTE), (1,), generator=g)][0]
            x[i, :, top:top + blob, left:left + blob] = colour[:, None, None]
        x[i, :, r * PATCH:(r + 1) * PATCH, c * PATCH:(c + 1) * PATCH] = PALETTE[y[i]][:, None, None]
    return x, y, cell


def colour_count_accuracy(n: int = 2000, seed: int = 12345) -> float:
    """How often the palette colour covering the most pixels is the label (the shortcut's accuracy)."""
    x, y, _ = make_images(n, seed)
    near = (x[:, None] - PALETTE[None, :, :, None, None]).abs().amax(2) < 0.05  # (n, K, S, S)
    return float((near.flatten(2).sum(-1).argmax(1) == y).float().mean())


def train(name: str, overrides: dict, steps: int, seed: int, batch: int = 128, lr: float = 3e-3):
    """Train on ``steps`` fresh batches (one-cycle schedule); returns (model in eval mode, info)."""
    torch.manual_seed(seed)
    model = create(name, **overrides)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    t0, step = time.perf_counter(), 0
    model.train()
    while step < steps:
        x, y, _ = make_images(batch, seed=seed * 100_003 + step)
        loss = F.cross_entropy(model(x).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
    model.eval()
    x, y, _ = make_images(1000, seed=seed + 999_999)
    with torch.no_grad():
        acc = float((model(x).logits.argmax(-1) == y).float().mean())
    return model, {"steps": step, "seconds": time.perf_counter() - t0, "loss": loss.item(), "accuracy": acc}


def evaluate(model, methods, n: int, seed: int, ig_steps: int, faithful: int, limits: dict[str, int]):
    """Precision@1 per method over n test images (fewer for a method in ``limits``), and
    faithfulness means over the first ``faithful`` of them."""
    x, _, cell = make_images(n, seed=seed)
    count = {m: min(n, limits.get(m, n)) for m in methods}
    hits = {m: 0.0 for m in methods}
    sums = {m: dict.fromkeys(METRICS, 0.0) for m in methods}
    secs = {m: 0.0 for m in methods}
    for i in range(n):
        img = x[i:i + 1]
        for m in (m for m in methods if i < count[m]):  # one method at a time, for its timing
            t0 = time.perf_counter()
            ex, r = explain(model, img, m, ig_steps=ig_steps, seed=seed + i)
            secs[m] += time.perf_counter() - t0
            hits[m] += hit_at_k(r, int(cell[i])) / count[m]
            k = min(faithful, count[m])
            if i < k:
                for key, v in image_faithfulness(model, img, r, ex.target_class).items():
                    sums[m][key] += v / k
    return hits, faithfulness_table(sums), {m: secs[m] / count[m] for m in methods}, count


def table(rows: list[list], header: list[str]) -> str:
    """A markdown table."""
    cells = [header] + [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    line = lambda r: "| " + " | ".join(r) + " |"
    return "\n".join([line(cells[0]), line(["---"] * len(header)), *map(line, cells[1:])])


def figures(model, methods, out: Path, stem: str, seed: int) -> list[Path]:
    """One test image's overlays: one PNG per method, and a panel of all in ``<stem>.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from attnlab.explain.figures import plot_patch_relevance

    x, y, cell = make_images(1, seed=seed)
    rel = {m: explain(model, x, m, ig_steps=32)[1] for m in methods}
    paths = [plot_patch_relevance(x[0], rel[m], out / f"{stem}-{m}.png",
                                  f"{stem}: {m} (marker at patch {int(cell[0])})") for m in methods]
    fig, axes = plt.subplots(1, len(methods) + 1, figsize=(2.2 * (len(methods) + 1), 2.7))
    axes[0].imshow(x[0].permute(1, 2, 0).numpy(), interpolation="nearest")
    axes[0].set_title(f"input, class {int(y[0])}", fontsize=9)
    for ax, m in zip(axes[1:], methods):
        ax.imshow(rel[m].numpy(), cmap="jet", interpolation="nearest")
        r, c = divmod(int(cell[0]), SIZE // PATCH)
        ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec="white", lw=1.5))
        ax.set_title(m, fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(f"{stem}: relevance per 4x4 patch (white box: the marker)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / f"{stem}.png", dpi=110)
    plt.close(fig)
    return [*paths, out / f"{stem}.png"]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer examples and a shorter training")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (tiny models: 1 is fastest)")
    ap.add_argument("--out", type=Path, help="write overlay figures (and results.json) here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    n, faithful, ig_steps = (32, 16, 16) if args.quick else (100, 32, 32)
    limits = {"flow": 8 if args.quick else 20}  # flow: ~6 s an image (65 tokens: 65 max-flows)
    steps = {"vit-tiny": 150, "cnn-attention-tiny": 120} if args.quick else {"vit-tiny": 400, "cnn-attention-tiny": 200}
    print(f"attnlab {attnlab.__version__}, torch {torch.__version__}, python {platform.python_version()}, "
          f"{torch.get_num_threads()} thread(s), CPU")
    print(f"task: 32x32 RGB, marker = one 4x4 square on the 8x8 patch grid, colour = class (4), "
          f"4 distractor 3x3 blobs; {n} test images, faithfulness over {faithful}; target = predicted "
          f"class logit; IG {ig_steps} steps, baseline zeros; removed patches -> 0; "
          f"the colour-count shortcut scores {colour_count_accuracy():.3f}")
    results = {}
    for name, cfg, methods, stem in (("vit-tiny", VIT, VIT_METHODS, "vit-patches"),
                                     ("cnn-attention-tiny", CNN, CNN_METHODS, "cnn-spatial")):
        model, info = train(name, cfg, steps[name], args.seed)
        print(f"\n## {name} {cfg}\n{info['steps']} steps x 128 ({info['seconds']:.1f} s), "
              f"final loss {info['loss']:.4f}, test accuracy {info['accuracy']:.3f} (1000 images)\n")
        t0 = time.perf_counter()
        hits, rows, secs, count = evaluate(model, methods, n, args.seed + 1, ig_steps, faithful, limits)
        print(table([[m, hits[m], count[m], secs[m] * 1000] for m in methods],
                    ["method", "precision@1", "images", "ms/image"]))
        fewer = "".join(f"; {m}: {min(faithful, count[m])}" for m in methods if count[m] < faithful)
        print(f"\nFaithfulness over the first {faithful} images{fewer} ({time.perf_counter() - t0:.1f} s in all):\n")
        print(table([[r["method"], *[r[k] for k in METRICS], r["mean_rank"]] for r in rows],
                    ["method", "compr ↑", "suff ↓", "AOPC ↑", "del AUC ↓", "ins AUC ↑", "mean rank"]))
        results[name] = {"train": info, "precision@1": hits, "faithfulness": rows, "seconds": secs,
                         "images": count}
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            for p in figures(model, methods, args.out, stem, args.seed + 7):
                print(f"wrote {p}")
    if args.out:
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
