"""Autoregressive generation shared by every model that predicts the next token.

A model takes part by mixing in :class:`GenerationMixin` and saying how decoding starts:
``begin_decoding(input_ids, attention_mask, use_cache) -> DecodeState``. The state owns whatever
the model needs between steps (KV caches, encoder memory, the tokens so far) and answers one
question, "given these new tokens, what are the next-token logits?". Search strategies (greedy,
sampling, beam search) only talk to the state, so a decoder-only LM and an encoder-decoder share
them. Decoder-only models get :class:`CausalLMState` by default::

    ids = model.generate(input_ids, max_new_tokens=32)                        # greedy, KV cache
    ids = model.generate(input_ids, do_sample=True, top_p=0.9, generator=g)   # nucleus sampling
    ids = model.generate(input_ids, num_beams=4, length_penalty=0.6, eos_token_id=2)

The result is (B, L + new) with the prompt included. Rows that hit a stop token are padded with
``pad_token_id`` (default: the first stop token) while the others go on; generation ends when
every row has stopped or after ``max_new_tokens``. Left-padded batches work through
``attention_mask`` (positions count real tokens only, as in Hugging Face's ``generate``).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from .beam_search import beam_search
from .sampling import check_sampling_args, choose_next


class DecodeState(Protocol):
    """What a search strategy needs from a model during decoding.

    Attributes:
        tokens: (B, L0) the tokens the output starts with (the prompt, for a decoder-only model).
    """

    tokens: Tensor

    def advance(self, new_tokens: Tensor) -> Tensor:
        """Feed (B, n) new tokens (the whole prefix on the first call); return (B, V) next-token logits."""

    def reorder(self, indices: Tensor) -> None:
        """Keep batch rows ``indices`` (B_new,) in this order: beams expand and reorder with this."""


class CausalLMState:
    """Decoding state of a decoder-only model with ``forward(input_ids, attention_mask=, cache=)``
    and ``new_cache()``.

    With a cache, each step feeds only the new tokens; without, it recomputes the whole sequence
    (the reference the cache is tested against).

    Args:
        model: the language model.
        input_ids: (B, L) prompt.
        attention_mask: (B, L) 1/True for real tokens, 0 for left padding; None if no padding.
        use_cache: keep a KV cache between steps.
    """

    def __init__(self, model, input_ids: Tensor, attention_mask: Tensor | None, use_cache: bool):
        if attention_mask is not None and not attention_mask[:, -1].bool().all():
            raise ValueError("generate: the last prompt token of every row must be real: pad on the left")
        self.model = model
        self.tokens = input_ids  # (B, L)
        self.mask = None if attention_mask is None else attention_mask.bool()  # (B, L)
        self.cache = model.new_cache() if use_cache else None
        self._seen = input_ids[:, :0]  # (B, 0) tokens already fed to the model

    def advance(self, new_tokens: Tensor) -> Tensor:
        B, n = new_tokens.shape
        self._seen = torch.cat([self._seen, new_tokens], dim=1)  # (B, T)
        T = self._seen.shape[1]
        if self.mask is not None and self.mask.shape[1] < T:
            ones = self.mask.new_ones(B, T - self.mask.shape[1])  # (B, T - L)
            self.mask = torch.cat([self.mask, ones], dim=1)  # (B, T)
        if self.cache is not None:
            out = self.model(new_tokens, attention_mask=self.mask, cache=self.cache)
        else:
            out = self.model(self._seen, attention_mask=self.mask)
        return out.logits[:, -1]  # (B, V)

    def reorder(self, indices: Tensor) -> None:
        self._seen = self._seen.index_select(0, indices)
        self.tokens = self.tokens.index_select(0, indices)
        if self.mask is not None:
            self.mask = self.mask.index_select(0, indices)
        if self.cache is not None:
            self.cache.reorder(indices)


class GenerationMixin:
    """Adds :meth:`generate` to a model that implements :meth:`begin_decoding`.

    The default :meth:`begin_decoding` suits decoder-only models (see :class:`CausalLMState`);
    an encoder-decoder overrides it to run its encoder and return its own state.
    """

    def begin_decoding(self, input_ids: Tensor, attention_mask: Tensor | None, use_cache: bool) -> DecodeState:
        return CausalLMState(self, input_ids, attention_mask, use_cache)

    def generate(self, input_ids: Tensor, **kwargs) -> Tensor:
        """Continue ``input_ids`` by up to ``max_new_tokens`` tokens.

        The keyword arguments are those of :func:`generate` (``max_new_tokens``, ``use_cache``,
        ``num_beams``, ``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``eos_token_id``,
        ``length_penalty``, ``early_stopping``, ``generator``, ``attention_mask``,
        ``pad_token_id``).
        """
        return generate(self, input_ids, **kwargs)


@torch.no_grad()
def generate(
    model,
    input_ids: Tensor,
    *,
    max_new_tokens: int = 32,
    use_cache: bool = True,
    num_beams: int = 1,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | list[int] | None = None,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    generator: torch.Generator | None = None,
    attention_mask: Tensor | None = None,
    pad_token_id: int | None = None,
) -> Tensor:
    """Greedy decoding, sampling or beam search with ``model.begin_decoding``'s state.

    The model's train/eval mode is left as it is (call ``model.eval()`` to turn dropout off).

    Args:
        model: anything with ``begin_decoding(input_ids, attention_mask, use_cache)``.
        input_ids: (B, L) long prompt (left-padded if rows differ in length).
        max_new_tokens: at most this many tokens are added.
        use_cache: keep KV caches (on by default); off recomputes the sequence at every step.
        num_beams: > 1 runs beam search (deterministic; not combined with ``do_sample``).
        do_sample: sample from the filtered distribution instead of taking the argmax.
        temperature, top_k, top_p: sampling filters (see :mod:`attnlab.models.sampling`).
        eos_token_id: a stop token or a list of them; None generates ``max_new_tokens`` tokens.
        length_penalty: beam search ranks finished beams by ``sum log p / new_len ** length_penalty``.
        early_stopping: beam search stops a batch row once it has ``num_beams`` finished beams
            (True), when no running beam can still beat them (False, Hugging Face's heuristic),
            or only when no better beam is possible at ``max_new_tokens`` ("never").
        generator: ``torch.Generator`` for reproducible sampling.
        attention_mask: (B, L) 1 for real tokens, 0 for left padding.
        pad_token_id: fills rows after they stop; defaults to the first stop token.

    Returns:
        (B, L + n) long tensor, prompt included, with n <= ``max_new_tokens``.
    """
    stops = _check_args(
        input_ids, max_new_tokens, num_beams, do_sample, eos_token_id, early_stopping, attention_mask
    )
    check_sampling_args(temperature, top_k, top_p)
    early_stopping = early_stopping if early_stopping == "never" else bool(early_stopping)
    pad = pad_token_id if pad_token_id is not None else (stops[0] if stops else 0)
    state = model.begin_decoding(input_ids, attention_mask, use_cache)
    prefix = state.tokens  # (B, L0)
    if max_new_tokens == 0:
        return prefix
    logits = state.advance(prefix)  # (B, V)
    if num_beams > 1:
        return beam_search(
            state, logits, num_beams=num_beams, max_new_tokens=max_new_tokens, stop_ids=stops,
            pad_token_id=pad, length_penalty=length_penalty, early_stopping=early_stopping,
        )
    return _sample_loop(
        state, logits, max_new_tokens=max_new_tokens, stop_ids=stops, pad_token_id=pad,
        do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator,
    )


def _sample_loop(
    state, logits, *, max_new_tokens, stop_ids, pad_token_id, do_sample, temperature, top_k, top_p, generator
):
    """Greedy or sampled decoding, one token per row per step."""
    seq = state.tokens  # (B, L0)
    stop = torch.tensor(stop_ids, dtype=torch.long, device=seq.device)  # (S,)
    running = torch.ones(seq.shape[0], dtype=torch.bool, device=seq.device)  # (B,)
    for step in range(max_new_tokens):
        nxt = choose_next(
            logits, do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
        )  # (B,)
        nxt = torch.where(running, nxt, torch.full_like(nxt, pad_token_id))  # (B,)
        seq = torch.cat([seq, nxt[:, None]], dim=1)  # (B, L0 + step + 1)
        running &= ~torch.isin(nxt, stop)
        if not running.any() or step == max_new_tokens - 1:
            break
        logits = state.advance(nxt[:, None])  # (B, V)
    return seq


def _check_args(
    input_ids, max_new_tokens, num_beams, do_sample, eos_token_id, early_stopping, attention_mask
) -> list[int]:
    """Validate; return the stop tokens as a list."""
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.dtype != torch.long:
        is_tensor = isinstance(input_ids, Tensor)
        what = f"{tuple(input_ids.shape)} {input_ids.dtype}" if is_tensor else type(input_ids).__name__
        raise ValueError(f"generate: input_ids must be a (B, L) long tensor, got {what}")
    if input_ids.shape[1] == 0:
        raise ValueError("generate: input_ids is empty (L = 0); give at least one prompt token")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"generate: num_beams must be an int >= 1, got {num_beams!r}")
    if num_beams > 1 and do_sample:
        raise ValueError("generate: beam search is deterministic here; use num_beams=1 with do_sample=True")
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"generate: early_stopping must be True, False or 'never', got {early_stopping!r}")
    if attention_mask is not None:
        if tuple(attention_mask.shape) != tuple(input_ids.shape):
            raise ValueError(
                f"generate: attention_mask must match input_ids {tuple(input_ids.shape)}, "
                f"got {tuple(attention_mask.shape)}"
            )
    if eos_token_id is None:
        return []
    stops = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    if not all(isinstance(t, int) and t >= 0 for t in stops):
        raise ValueError(f"generate: eos_token_id must be a token id or a list of them, got {eos_token_id!r}")
    return stops


__all__ = ["GenerationMixin", "DecodeState", "CausalLMState", "generate"]
