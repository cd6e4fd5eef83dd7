"""Cross-attention maps of a seq2seq model; the alignment figure lives in ``attnlab.explain.figures``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data.subword import BOS_ID
from ..explain.figures import plot_alignment

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
