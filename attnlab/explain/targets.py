"""The scalar an explanation explains, chosen by name.

    t = make_target("cosine", "encoder", model, inputs, pair_inputs=pair)
    t.fn(model(**inputs))     # a scalar tensor
    t.description             # "cosine(mean-pooled embedding, embedding of 'Someone plays ...')"

Names, by kind of model:

* ``"logit"`` / ``"logit:K"`` (classifiers): the logit of class K, by default the predicted class;
* ``"prob"`` / ``"prob:K"`` (classifiers): the softmax probability of class K, by default the
  predicted class (DecompX's AOPC is defined on it, see :func:`~attnlab.explain.faithfulness.aopc_decompx`);
* ``"pooled"`` (encoders without a head, such as all-MiniLM): the norm of the mean-pooled
  sentence embedding;
* ``"cosine"`` (encoders): the cosine between the mean-pooled embeddings of the text and of a
  ``pair`` text, the pair's embedding computed once and held fixed;
* ``"logprob"`` (seq2seq): the sum of the log-probabilities of the output tokens (generated or
  given) under teacher forcing, end-of-sequence included; ``"logprob:T"`` the log-probability of
  output token ``T`` alone (0-based; attention methods then read decoder row ``T``).

Every target also says which output row attention methods read (:attr:`Target.position`): for a
classifier the row its head pools (the [CLS] row, or the mean over rows for a mean-pooling
head), the mean over rows for a mean-pooled embedding or a whole output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TARGETS = ("logit", "prob", "pooled", "cosine", "logprob")
DEFAULT_TARGET = {"classifier": "logit", "encoder": "pooled", "seq2seq": "logprob"}
KINDS_OF = {"logit": ("classifier",), "prob": ("classifier",), "pooled": ("encoder",), "cosine": ("encoder",),
            "logprob": ("seq2seq",)}


@dataclass(frozen=True)
class Target:
    """A scalar of one example's model output.

    Attributes:
        fn: model output (a batch of one) -> scalar tensor.
        description: one line saying what the scalar is.
        position: the output row that attention methods read (0: [CLS]; "mean": all rows).
    """

    fn: Callable[[Any], Tensor]
    description: str
    position: int | str

    def __iter__(self):  # unpacks as (fn, description)
        return iter((self.fn, self.description))


def mean_pooled(output) -> Tensor:
    """(d,) mean over positions of the first example's last hidden state (one example, no padding)."""
    return output.last_hidden_state[0].mean(0)  # (d,)


def make_target(
    name: str | None,
    kind: str,
    model: nn.Module,
    inputs: dict[str, Any],
    *,
    pair_inputs: dict[str, Any] | None = None,
    output_ids: Sequence[int] | None = None,
    output_text: str = "",
) -> Target:
    """The target ``name`` (None: the kind's default) for one example.

    Args:
        name: "logit", "logit:K", "prob", "prob:K", "pooled", "cosine", "logprob" or "logprob:T".
        kind: "classifier", "encoder" or "seq2seq".
        model: the model, in eval mode.
        inputs: the example's forward arguments (batch of one).
        pair_inputs: forward arguments of the pair text (``cosine``).
        output_ids: the output token ids scored by ``logprob``, end-of-sequence included, one per
            position of ``inputs["decoder_input_ids"]``.
        output_text: the output in words, for the description.
    """
    name = name or DEFAULT_TARGET[kind]
    base, _, arg = name.partition(":")
    if base not in TARGETS:
        raise ValueError(f"unknown target {name!r}; known: logit[:K], prob[:K], pooled, cosine, logprob[:T]")
    if kind not in KINDS_OF[base]:
        fits = ", ".join(t for t in TARGETS if kind in KINDS_OF[t])
        raise ValueError(f"target {base!r} does not apply to a {kind} model; use {fits}")
    if arg and base not in ("logit", "prob", "logprob"):
        raise ValueError(f"target {base!r} takes no ':' argument, got {name!r}")
    if base in ("logit", "prob"):
        return _class_target(model, inputs, base, arg)
    if base == "pooled":
        return Target(lambda out: mean_pooled(out).norm(), "norm of the mean-pooled sentence embedding", "mean")
    if base == "cosine":
        if pair_inputs is None:
            raise ValueError("target 'cosine' needs a pair text (--pair)")
        with torch.no_grad():
            other = mean_pooled(model(**pair_inputs)).detach()  # (d,), held fixed
        return Target(lambda out: F.cosine_similarity(mean_pooled(out), other, dim=0),
                      "cosine(mean-pooled embedding, the pair's embedding held fixed)", "mean")
    if output_ids is None:
        raise ValueError("target 'logprob' needs the output token ids")
    y = torch.as_tensor(list(output_ids), dtype=torch.long)  # (T,)
    if arg:
        try:
            t = int(arg)
        except ValueError:
            raise ValueError(f"target logprob:T needs an integer output position, got {arg!r}") from None
        if not 0 <= t < len(y):
            raise ValueError(f"target logprob:{t}: the output has {len(y)} tokens (0..{len(y) - 1}, "
                             "the last is end-of-sequence)")

        def token_logprob(out) -> Tensor:
            return out.logits[0, t].log_softmax(-1)[y[t].to(out.logits.device)]

        return Target(token_logprob, f"log p(output token {t} of {output_text!r} | source, tokens before it)", t)

    def logprob(out) -> Tensor:
        lp = out.logits[0].log_softmax(-1)  # (T, V)
        return lp[torch.arange(len(y), device=lp.device), y.to(lp.device)].sum()

    return Target(logprob, f"log p({output_text!r} | source), summed over {len(y)} output tokens", "mean")


def _class_target(model: nn.Module, inputs: dict[str, Any], base: str, arg: str) -> Target:
    """``logit`` or ``prob`` of class ``arg`` (empty: the class predicted for ``inputs``, fixed)."""
    with torch.no_grad():
        logits = model(**inputs).logits  # (1, C)
    C = logits.shape[-1]
    if arg:
        try:
            k = int(arg)
        except ValueError:
            raise ValueError(f"target {base}:K needs an integer class, got {arg!r}") from None
        if not 0 <= k < C:
            raise ValueError(f"target {base}:{k}: the model has {C} classes (0..{C - 1})")
        how = "class"
    else:
        k, how = int(logits[0].argmax()), "predicted class"
    config = getattr(model, "config", None)
    names = getattr(config, "label_names", None)
    what = f"{how} {k}" + (f" ({names[k]!r})" if names and k < len(names) else "")
    # The row attention methods read follows the head's pooling: all rows for a mean-pooled
    # head, the [CLS] row otherwise (cls, BERT's pooler).
    row = "mean" if getattr(config, "pooling", "cls") == "mean" else 0
    if base == "prob":
        return Target(lambda out: out.logits[0].softmax(-1)[k], f"probability of {what}", row)
    return Target(lambda out: out.logits[0, k], f"logit of {what}", row)


__all__ = ["Target", "make_target", "mean_pooled", "TARGETS", "DEFAULT_TARGET", "KINDS_OF"]
