"""Raise a model's learned absolute position limit (e.g. BERT's 512) without retraining.

    model = load_pretrained("all-MiniLM-L6-v2")          # max_len 512
    model = extend_positions(model, 1024)                # interpolated table, config.max_len 1024
    model.save_pretrained("minilm-1024")                 # loads back with 1,024 positions

Two ways to fill the new ``(new_max, d)`` table from the trained ``(n, d)`` one:

* ``"interpolate"`` (default): linear interpolation along the position axis with the end points
  aligned (``F.interpolate(..., mode="linear", align_corners=True)``): new row ``i`` sits at old
  coordinate ``i * (n - 1) / (new_max - 1)`` and is the convex combination of the two old rows
  around it. Row 0 and the last row are the old first and last rows. This is how ViT resizes its
  position table for a new resolution (Dosovitskiy et al. 2021, "2D interpolation of the
  pre-trained position embeddings"; DeiT, timm ``resample_abs_pos_embed``) and how BERT-style
  tables are stretched to longer inputs. Every position moves (position ``p`` now reads a blend
  near old position ``p * (n - 1) / (new_max - 1)``), so even short inputs change a little: the
  model sees its positions "compressed" and is best fine-tuned briefly on long text.
* ``"repeat"``: copy the old table block after block (``new[i] = old[i % n]``), as Longformer
  initialised its 4,096 positions from RoBERTa's 512 (Beltagy et al. 2020). Positions below
  ``n`` keep their exact vectors, so inputs of up to ``n`` tokens give identical outputs; beyond
  ``n`` the positions repeat (the local structure of the table is preserved, the absolute
  position is ambiguous).

Any attnlab model with one :class:`~attnlab.attention.positions.LearnedPositions` table and a
``config.max_len`` works (:class:`~attnlab.models.Encoder`, :class:`~attnlab.models.Decoder`).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attention.positions import LearnedPositions

METHODS = ("interpolate", "repeat")


def extend_table(table: Tensor, new_max: int, method: str = "interpolate") -> Tensor:
    """A ``(new_max, d)`` position table from a ``(n, d)`` one (see the module docstring).

    Args:
        table: (n, d) trained position vectors.
        new_max: rows of the result, >= n.
        method: "interpolate" (linear, end points aligned) or "repeat" (tile the table).

    Returns:
        (new_max, d), the dtype and device of ``table``.
    """
    if table.dim() != 2:
        raise ValueError(f"extend_table: table must be (n, d), got {tuple(table.shape)}")
    n = table.shape[0]
    if new_max < n:
        raise ValueError(f"extend_table: new_max={new_max} is below the current {n} positions (it only extends)")
    if method == "interpolate":
        if n == 1:
            return table.expand(new_max, -1).clone()
        t = table.detach().to(torch.float64).t()[None]  # (1, d, n): positions are the "length" axis
        out = F.interpolate(t, size=new_max, mode="linear", align_corners=True)[0].t()  # (new_max, d)
        return out.to(table.dtype).contiguous()
    if method == "repeat":
        reps = -(-new_max // n)
        return table.detach().repeat(reps, 1)[:new_max].clone()
    raise ValueError(f"extend_positions: method must be one of {', '.join(METHODS)}, got {method!r}")


def extend_positions(model: nn.Module, new_max: int, method: str = "interpolate") -> nn.Module:
    """Give ``model``'s learned absolute positions ``new_max`` rows, in place, and return it.

    The position table is replaced by :func:`extend_table`'s, and ``model.config.max_len`` is set
    to ``new_max``, so that ``save_pretrained`` / ``load_pretrained`` rebuild the longer model.
    The new table keeps the old one's dtype, device and ``requires_grad``.

    Args:
        model: an attnlab model with one ``LearnedPositions`` table and a ``config.max_len``
            (Encoder, Decoder).
        new_max: the new number of positions; equal to the current one is a no-op.
        method: "interpolate" (default; linear interpolation, as ViT/BERT tables are resized)
            or "repeat" (copy the table, as Longformer; short inputs stay exactly the same).

    Raises:
        ValueError: no (or more than one) learned position table, a smaller ``new_max``, or an
            unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"extend_positions: method must be one of {', '.join(METHODS)}, got {method!r}")
    tables = [m for m in model.modules() if isinstance(m, LearnedPositions)]
    if len(tables) != 1:
        what = "no learned absolute position table (RoPE/ALiBi/sinusoidal need no extension)" if not tables \
            else f"{len(tables)} learned position tables"
        raise ValueError(f"extend_positions: {type(model).__name__} has {what}")
    pos = tables[0]
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "max_len"):
        raise ValueError(f"extend_positions: {type(model).__name__} has no config.max_len to update")
    if new_max == pos.max_len:
        return model
    old = pos.table.weight
    new = extend_table(old.data, new_max, method)  # (new_max, d); raises on new_max < max_len
    table = nn.Embedding(new_max, pos.d_model, device=old.device, dtype=old.dtype)
    with torch.no_grad():
        table.weight.copy_(new)
    table.weight.requires_grad_(old.requires_grad)
    pos.table, pos.max_len = table, new_max
    model.config = config.replace(max_len=new_max) if hasattr(config, "replace") \
        else dataclasses.replace(config, max_len=new_max)
    return model


__all__ = ["extend_positions", "extend_table", "METHODS"]
