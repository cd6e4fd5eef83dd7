"""Per-patch explanations of one image for a ViT or the CBAM CNN, and their faithfulness.

    ex = explain_image(model.eval(), pixel_values, ("rollout", "chefer", "ig", "random"))  # (1, C, H, W)
    ex.grid, ex.relevances["chefer"]          # (gh, gw) relevance per patch
    ex.info["ig"]                             # completeness: sum vs f(x) - f(baseline)
    scores = image_faithfulness(model, pixel_values, ex.relevances["ig"], ex.target_class)

The target is a class logit (default: the predicted class). Methods:

* ViT (attention over [CLS] + patches): ``raw``, ``rollout``, ``flow``, ``chefer``,
  ``attn_x_grad`` of :data:`~attnlab.explain.methods.METHODS`, read from the [CLS] row
  (``pool="cls"``) or the mean of the patch rows (``pool="mean"``), [CLS] column dropped, laid
  out on the patch grid. Chefer's R = I + updates loses its identity first, as in the pipeline.
* CBAM CNN (a sigmoid spatial gate per stage): ``spatial`` (the mean over stages upsampled to
  the finest, by default, or one stage's gate) and ``spatial_x_grad`` (Grad-CAM-like: (gate · d target /
  d gate)⁺, which equals Σ_c (gated features · their gradient)), averaged over each patch.
* Both: ``ig`` (Integrated Gradients on the pixels via captum, summed per patch), ``occlusion``
  (each patch replaced by the baseline: the target's drop), ``random``.

A removed patch (occlusion, the faithfulness metrics) takes the baseline's pixels: "zeros",
"mean" (each channel's mean over this image) or a given (C, H, W) image. Run the model in eval
mode (batch norm, dropout).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..io import write_json
from .attribution import random_relevance
from .capture import capture
from .faithfulness import faithfulness_scores
from .methods import token_relevance
from .pipeline import INPUT_METHODS, check_methods

VIT_METHODS = ("raw", "rollout", "flow", "chefer", "attn_x_grad")
CNN_METHODS = ("spatial", "spatial_x_grad")
DEFAULT_METHODS = {"vit": ("rollout", "chefer", "ig"), "cnn": ("spatial", "spatial_x_grad", "ig")}
KNOWN = {"vit": VIT_METHODS + INPUT_METHODS, "cnn": CNN_METHODS + INPUT_METHODS}
FLOW_MAX_TOKENS = 100  # flow from [CLS]: one max-flow per token; mean pooling needs N times more
FLOW_MAX_TOKENS_MEAN = 20


@dataclass
class ImageExplanation:
    """Relevance per patch of one image.

    Attributes:
        kind: "vit" or "cnn".
        grid: (gh, gw), patches down and across.
        patch_size: side of a patch in pixels.
        relevances: method -> (gh, gw) float64 grid.
        target_class: the explained class.
        target_value: its logit for the image.
        info: extra results, e.g. ``info["ig"]`` = {"sum", "f_x", "f_baseline", "delta"}.
    """

    kind: str
    grid: tuple[int, int]
    patch_size: int
    relevances: dict[str, Tensor]
    target_class: int
    target_value: float
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """``{"patches": [gh, gw], "patch_size", "target", "target_value", "methods": {name: flat
        row-major list}}`` (plus "ig" when IG ran)."""
        data = {"patches": list(self.grid), "patch_size": self.patch_size,
                "target": f"logit[{self.target_class}]", "target_value": self.target_value,
                "methods": {m: [float(v) for v in r.reshape(-1)] for m, r in self.relevances.items()}}
        data.update({k: v for k, v in self.info.items() if k == "ig"})
        return data


# ----------------------------------------------------------------------------- inputs


def image_kind(model: nn.Module) -> str:
    """"vit" or "cnn" from the model's config family; anything else raises."""
    family = getattr(getattr(model, "config", None), "family", None)
    kinds = {"vit": "vit", "cnn_attention": "cnn"}
    if family not in kinds:
        raise ValueError(f"explain_image: needs a ViT or a CBAM CNN (config family 'vit' or "
                         f"'cnn_attention'), got {type(model).__name__} (family {family!r})")
    return kinds[family]


def patch_grid(model: nn.Module, pixel_values: Tensor, patch_size: int | None = None) -> tuple[int, int, int]:
    """Check one image against the model; return (gh, gw, patch size).

    Args:
        model: a ViT or CBAM CNN.
        pixel_values: (1, C, H, W).
        patch_size: the grid's cell; the ViT's own patch (None or equal to it); for the CNN
            default the pixels per cell of its last stage's map.
    """
    kind, cfg = image_kind(model), model.config
    x = pixel_values
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != cfg.in_channels:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"explain_image: pixel_values must be one image (1, {cfg.in_channels}, H, W), got {got}")
    H, W = x.shape[-2:]
    if kind == "vit":
        if (H, W) != (cfg.image_size, cfg.image_size):
            raise ValueError(f"explain_image: the ViT takes {cfg.image_size}x{cfg.image_size} images, "
                             f"got pixel_values of shape {tuple(x.shape)}")
        if patch_size not in (None, cfg.patch_size):
            raise ValueError(f"explain_image: a ViT's grid is its own patches ({cfg.patch_size}), got patch_size={patch_size}")
        patch_size = cfg.patch_size
    elif patch_size is None:
        patch_size = 2 ** (cfg.num_stages - 1)  # every stage after the first halves the map
    if patch_size < 1 or H % patch_size or W % patch_size:
        raise ValueError(f"explain_image: image of shape {tuple(x.shape)} is not a whole number of "
                         f"{patch_size}x{patch_size} patches")
    return H // patch_size, W // patch_size, patch_size


def baseline_image(pixel_values: Tensor, baseline: str | Tensor = "zeros") -> Tensor:
    """The (1, C, H, W) image that removed patches take: "zeros", "mean" (per channel) or a tensor."""
    x = pixel_values
    if isinstance(baseline, Tensor):
        b = baseline.to(x)
        if b.dim() == 3:
            b = b[None]
        if b.shape != x.shape:
            raise ValueError(f"baseline: expected shape {tuple(x.shape)} or {tuple(x.shape[1:])}, got {tuple(baseline.shape)}")
        return b
    if baseline == "zeros":
        return torch.zeros_like(x)
    if baseline == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()  # (1, C, H, W)
    raise ValueError(f"baseline must be 'zeros', 'mean' or a tensor, got {baseline!r}")


def logit_fn(k: int):
    """The target ``out -> out.logits[:, k]``: (B,) for a batch, a scalar-sized (1,) for one image."""
    return lambda out: out.logits[:, k]


@torch.no_grad()
def scores(model: nn.Module, images: Tensor, k: int, batch_size: int = 128) -> Tensor:
    """Logit ``k`` of each of (N, C, H, W) images, in batches: (N,) float64."""
    out = [model(images[i:i + batch_size]).logits[:, k] for i in range(0, len(images), batch_size)]
    return torch.cat(out).double().cpu()


def patch_mask(keep: Tensor, grid: tuple[int, int], p: int) -> Tensor:
    """(N, gh*gw) bool per patch -> (N, 1, H, W) bool per pixel."""
    m = keep.reshape(-1, 1, *grid)  # (N, 1, gh, gw)
    return m.repeat_interleave(p, dim=2).repeat_interleave(p, dim=3)  # (N, 1, H, W)


def to_grid(m: Tensor, grid: tuple[int, int], p: int) -> Tensor:
    """An (h, w) map averaged over each patch of the (gh, gw) grid: (gh, gw) float64. A map that
    tiles the grid exactly is pooled as it is; otherwise upsampled (bilinear) to the pixels first."""
    m = m.detach().double()[None, None]  # (1, 1, h, w)
    h, w = m.shape[-2:]
    if h % grid[0] or w % grid[1]:
        m = F.interpolate(m, size=(grid[0] * p, grid[1] * p), mode="bilinear", align_corners=False)
        h, w = m.shape[-2:]
    return F.avg_pool2d(m, (h // grid[0], w // grid[1]))[0, 0]  # (gh, gw)


# ----------------------------------------------------------------------------- methods


def _vit_relevance(name: str, attns, grads, pool: str) -> Tensor:
    """(N_patches,) relevance of the pooled output from a ViT's maps (layers x (H, N, N))."""
    cls = pool == "cls"
    N = attns[0].shape[-1]
    if name == "flow":
        limit = FLOW_MAX_TOKENS if cls else FLOW_MAX_TOKENS_MEAN
        if N > limit:
            raise ValueError(f"flow: {N} tokens is too many (at most {limit} for pool={pool!r}: one max-flow "
                             f"per token{'' if cls else ' pair'}); use rollout")
    r = token_relevance(name, attns, grads, 0 if cls else "mean")  # (N,)
    return r[1:] if cls else r  # drop the [CLS] column


def _cnn_map(name: str, maps, grads, stage: int | str) -> Tensor:
    """An (h, w) map of the CBAM CNN: a stage's (or the stage mean's) gate, or (gate · grad)⁺."""
    per = [m[0] if name == "spatial" else (m[0] * g[0]).clamp(min=0) for m, g in zip(maps, grads)]  # (h_s, w_s)
    if stage != "mean":
        if not isinstance(stage, int) or not -len(per) <= stage < len(per):
            raise ValueError(f"stage must be 'mean' or an int in [{-len(per)}, {len(per)}), got {stage!r}")
        return per[stage]
    size = max((m.shape for m in per), key=lambda s: s[0] * s[1])  # the finest map
    up = [F.interpolate(m[None, None].double(), size=tuple(size), mode="bilinear", align_corners=False)[0, 0]
          for m in per]
    return torch.stack(up).mean(0)  # (h, w)


def image_ig(model: nn.Module, x: Tensor, base: Tensor, k: int, steps: int = 64,
             internal_batch_size: int | None = 64) -> tuple[Tensor, dict[str, float]]:
    """Integrated Gradients (Sundararajan et al. 2017) of logit ``k`` on the pixels, via captum.

    Returns ((1, C, H, W) attributions, completeness {"sum", "f_x", "f_baseline", "delta"}).
    """
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(lambda batch: model(batch).logits[:, k])
    attr, delta = ig.attribute(x, baselines=base, n_steps=steps, method="gausslegendre",
                               internal_batch_size=internal_batch_size, return_convergence_delta=True)
    fx, fb = scores(model, torch.cat([x, base]), k).tolist()
    return attr.detach(), {"sum": float(attr.sum()), "f_x": fx, "f_baseline": fb, "delta": float(delta.reshape(-1)[0])}


def patch_occlusion(model: nn.Module, x: Tensor, base: Tensor, k: int, grid: tuple[int, int], p: int,
                    batch_size: int = 128) -> Tensor:
    """f(x) − f(x with patch i replaced by the baseline) per patch: (gh, gw) float64."""
    P = grid[0] * grid[1]
    keep = ~torch.eye(P, dtype=torch.bool, device=x.device)  # (P, P): row i drops patch i
    mask = patch_mask(keep, grid, p)  # (P, 1, H, W)
    variants = torch.where(mask, x, base)  # (P, C, H, W)
    s = scores(model, torch.cat([x, variants]), k, batch_size)  # (P + 1,)
    return (s[0] - s[1:]).reshape(grid)


def explain_image(
    model: nn.Module,
    pixel_values: Tensor,
    methods: Sequence[str] | None = None,
    target: int | None = None,
    *,
    patch_size: int | None = None,
    baseline: str | Tensor = "zeros",
    stage: int | str = "mean",
    ig_steps: int = 64,
    seed: int = 0,
) -> ImageExplanation:
    """Per-patch relevance of one image by each method.

    Args:
        model: a ViT or CBAM CNN (``create("vit-...")``, ``load_pretrained``), in eval mode.
        pixel_values: (1, C, H, W), as the model takes it (normalised if it was trained so).
        methods: names from :data:`VIT_METHODS` or :data:`CNN_METHODS`, and :data:`INPUT_METHODS`;
            None for :data:`DEFAULT_METHODS` of the model's kind.
        target: the explained class (its logit); None for the predicted class.
        patch_size: the grid's cell in pixels (see :func:`patch_grid`).
        baseline: what IG starts from and removed patches become: "zeros", "mean" or an image.
        stage: CNN: "mean" (every stage's gate upsampled to the finest and averaged) or one stage
            (0 the first, negative counts from the last). On a planted-marker task the last
            stage's gate missed the marker (docs/explain.md), so the mean is the default.
        ig_steps: IG's quadrature points (Gauss-Legendre).
        seed: seed of the random baseline.
    """
    kind = image_kind(model)
    gh, gw, p = patch_grid(model, pixel_values, patch_size)
    methods = check_methods(methods or DEFAULT_METHODS[kind], kind, known=KNOWN[kind])
    x = pixel_values.detach()
    base = baseline_image(x, baseline)
    with torch.no_grad():
        logits = model(x).logits[0]  # (num_classes,)
    k = int(logits.argmax()) if target is None else int(target)
    if not 0 <= k < logits.shape[0]:
        raise ValueError(f"target: class {target} is out of range for {logits.shape[0]} classes")
    cap = None
    if any(m not in INPUT_METHODS for m in methods):
        cap = capture(model, {"pixel_values": x}, target=lambda out: out.logits[0, k])
    rel: dict[str, Tensor] = {}
    info: dict[str, Any] = {}
    for m in methods:
        if m == "random":
            r = random_relevance(gh * gw, seed).reshape(gh, gw)
        elif m == "occlusion":
            r = patch_occlusion(model, x, base, k, (gh, gw), p)
        elif m == "ig":
            attr, info["ig"] = image_ig(model, x, base, k, ig_steps)
            r = F.avg_pool2d(attr.double().sum(1, keepdim=True), p)[0, 0] * p * p  # (gh, gw): sum per patch
        elif kind == "vit":
            r = _vit_relevance(m, cap.maps("self"), cap.grads("self"), model.config.pool).reshape(gh, gw)
        else:
            r = to_grid(_cnn_map(m, cap.maps("self"), cap.grads("self"), stage), (gh, gw), p)
        rel[m] = r.detach().double().cpu()
    return ImageExplanation(kind, (gh, gw), p, rel, k, float(logits[k]), info)


# ----------------------------------------------------------------------------- faithfulness


class PatchScorer:
    """``keep (P,) bool -> float``: logit ``k`` of the image with the removed patches set to the
    baseline; ``many`` scores (N, P) keeps in batches (the faithfulness functions use it)."""

    protected = None  # every patch may be removed

    def __init__(self, model: nn.Module, x: Tensor, base: Tensor, k: int, grid: tuple[int, int], p: int,
                 batch_size: int = 128):
        self.model, self.x, self.base, self.k = model, x, base, k
        self.grid, self.p, self.batch_size = grid, p, batch_size

    def __call__(self, keep: Tensor) -> float:
        return float(self.many(torch.as_tensor(keep).reshape(1, -1))[0])

    def many(self, keeps: Tensor) -> Tensor:
        """(N, P) bool -> (N,) float64."""
        mask = patch_mask(keeps.bool().to(self.x.device), self.grid, self.p)  # (N, 1, H, W)
        return scores(self.model, torch.where(mask, self.x, self.base), self.k, self.batch_size)


def patch_scorer(model: nn.Module, pixel_values: Tensor, target: int, *, patch_size: int | None = None,
                 baseline: str | Tensor = "zeros") -> PatchScorer:
    """A :class:`PatchScorer` of one image (see :func:`explain_image` for the arguments)."""
    gh, gw, p = patch_grid(model, pixel_values, patch_size)
    x = pixel_values.detach()
    return PatchScorer(model, x, baseline_image(x, baseline), int(target), (gh, gw), p)


def image_faithfulness(model: nn.Module, pixel_values: Tensor, relevance: Tensor, target: int, *,
                       patch_size: int | None = None, baseline: str | Tensor = "zeros") -> dict[str, float]:
    """Comprehensiveness and sufficiency (means over the ERASER bins), AOPC (every patch), deletion
    and insertion AUC of one relevance grid, removed patches set to the baseline.

    Args:
        model: the model, in eval mode.
        pixel_values: (1, C, H, W).
        relevance: (gh, gw) or flat (gh*gw,) relevance, higher = more relevant.
        target: the class whose logit is scored (``ImageExplanation.target_class``).
        patch_size: the grid's cell (see :func:`patch_grid`).
        baseline: "zeros", "mean" or an image.
    """
    score = patch_scorer(model, pixel_values, target, patch_size=patch_size, baseline=baseline)
    r = torch.as_tensor(relevance, dtype=torch.float64).reshape(-1)
    if r.numel() != score.grid[0] * score.grid[1]:
        raise ValueError(f"relevance: expected {score.grid[0] * score.grid[1]} patches ({score.grid}), "
                         f"got shape {tuple(torch.as_tensor(relevance).shape)}")
    return faithfulness_scores(score, r)


# ----------------------------------------------------------------------------- files


def image_model_dir(path: str | Path) -> bool:
    """Whether ``path`` is an attnlab checkpoint of a ViT or a CBAM CNN (its config.json says so)."""
    cfg = Path(path) / "config.json"
    try:
        meta = json.loads(cfg.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("family") in ("vit", "cnn_attention")


def normalisation(path: str | Path) -> tuple[list[float], list[float]] | None:
    """(mean, std) per channel from the checkpoint's config.json ("image_mean", "image_std") or a
    Hugging Face ``preprocessor_config.json``; None when neither has them."""
    for name in ("config.json", "preprocessor_config.json"):
        f = Path(path) / name
        meta = json.loads(f.read_text()) if f.is_file() else {}
        if "image_mean" in meta and "image_std" in meta:
            return list(meta["image_mean"]), list(meta["image_std"])
    return None


def load_image(path: str | Path, channels: int, size: int,
               norm: tuple[Sequence[float], Sequence[float]] | None = None) -> tuple[Tensor, Tensor]:
    """An image file as the model takes it: Pillow, converted to 1 ("L") or 3 ("RGB") channels,
    resized to size x size (bilinear), scaled to [0, 1].

    Returns:
        ((1, C, size, size) pixel values, normalised by ``norm`` = (mean, std) when given;
        (C, size, size) the [0, 1] image for display).
    """
    from PIL import Image

    if channels not in (1, 3):
        raise ValueError(f"load_image: models with {channels} channels are not supported (1 or 3)")
    with Image.open(path) as im:
        im = im.convert("L" if channels == 1 else "RGB").resize((size, size), Image.BILINEAR)
        arr = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0)  # (size, size[, C])
    img = arr.reshape(size, size, channels).permute(2, 0, 1).contiguous()  # (C, size, size)
    x = img[None].clone()  # (1, C, size, size)
    if norm is not None:
        mean, std = (torch.tensor(v, dtype=torch.float32).reshape(1, -1, 1, 1) for v in norm)
        x = (x - mean) / std
    return x, img


def write_image_outputs(ex: ImageExplanation, image: Tensor, out_dir: str | Path) -> dict[str, Path]:
    """``relevances.json`` (:meth:`ImageExplanation.to_json`) and ``patches-<method>.png`` overlays."""
    from .figures import plot_patch_relevance

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"relevances": out / "relevances.json"}
    write_json(paths["relevances"], ex.to_json())
    for m, r in ex.relevances.items():
        paths[m] = plot_patch_relevance(image, r, out / f"patches-{m}.png", f"{m}, logit[{ex.target_class}]")
    return paths


def hit_at_k(relevance: Tensor, true_patches: Sequence[int] | int, k: int = 1) -> float:
    """Precision@k against planted patches: the fraction of the k most relevant patches (flat,
    row-major) that are planted ones (ties broken by position)."""
    r = torch.as_tensor(relevance, dtype=torch.float64).reshape(-1)
    truth = {int(true_patches)} if isinstance(true_patches, int) else {int(t) for t in true_patches}
    top = torch.sort(r, descending=True, stable=True).indices[:k].tolist()
    return sum(t in truth for t in top) / k


__all__ = [
    "ImageExplanation", "explain_image", "image_faithfulness", "patch_scorer", "PatchScorer",
    "patch_grid", "baseline_image", "image_kind", "image_ig", "patch_occlusion",
    "to_grid", "hit_at_k", "image_model_dir", "normalisation", "load_image", "write_image_outputs", "VIT_METHODS", "CNN_METHODS", "INPUT_METHODS", "DEFAULT_METHODS", "KNOWN",
]
