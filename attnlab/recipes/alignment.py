"""Cross-attention maps of a seq2seq model and the alignment figure drawn from them."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pathlib import Path

from ..data.subword import BOS_ID
from ..plotting import pyplot, save_figure

__all__ = ["cross_attention", "plot_alignment"]


@torch.no_grad()
def cross_attention(model: nn.Module, src: list[int], out: list[int]) -> Tensor:
    """Weights (T, S) of each output token over the source: the last decoder layer, mean over heads.

    Args:
        model: an ``EncoderDecoder`` or ``RNNSeq2Seq``.
        src: source ids (with its EOS).
        out: the decoded ids (without BOS/EOS); row ``t`` is the step that produced ``out[t]``
            (the last row produced EOS).
    """
    device = next(model.parameters()).device
    s = torch.tensor([src], device=device)  # (1, S)
    t = torch.tensor([[BOS_ID] + list(out)], device=device)  # (1, T)
    was = model.training
    model.eval()
    res = model(input_ids=s, decoder_input_ids=t, output_attentions=True)
    model.train(was)
    if getattr(res, "cross_attentions", None):
        return res.cross_attentions[-1][0].mean(0).float().cpu()  # (T, S)
    return res.attentions[0][0].float().cpu()  # RNN: (T, S)


def plot_alignment(panels: list[tuple[Tensor, list[str], list[str]]], path, title: str = "") -> Path:
    """Draw one heatmap per example (rows: output tokens, columns: source tokens), written atomically.

    Args:
        panels: ``(weights (T, S), source tokens (S), output tokens (T))`` per example.
        path: the PNG to write.
        title: the figure title.
    """
    plt = pyplot()
    n = len(panels)
    cols = min(2, n)
    rows = (n + cols - 1) // cols
    widths = [max(len(p[1]) for p in panels) * 0.28 + 1.5]
    fig, axes = plt.subplots(rows, cols, figsize=(widths[0] * cols, 4.2 * rows), squeeze=False)
    for ax, (w, src, tgt) in zip(axes.flat, panels):
        ax.imshow(w.numpy(), cmap="viridis", aspect="auto", vmin=0, vmax=max(1e-6, float(w.max())))
        ax.set_xticks(range(len(src)), [repr(c)[1:-1] if c.strip() else "␣" for c in src], fontsize=8,
                      rotation=90 if max(len(c) for c in src) > 2 else 0)
        ax.set_yticks(range(len(tgt)), tgt, fontsize=8)
        ax.set_xlabel("source")
        ax.set_ylabel("output")
        ax.set_title("".join(c for c in src if c != "</s>"), fontsize=9)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
