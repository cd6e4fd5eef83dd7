"""Beam search with a length penalty and early stopping.

The bookkeeping follows Hugging Face's vectorised beam search (transformers >= 4.50), so that both
pick the same beams: at each step every batch row keeps the ``num_beams`` best unfinished
continuations out of ``max(2, 1 + #stop tokens) * num_beams`` candidates, and candidates among the
top ``num_beams`` that end (a stop token, or the length limit) compete for the ``num_beams``
finished slots with score ``sum log p / new_len ** length_penalty``. The best finished beam of
each row is returned. Tensors are (B, K, ...) with K = num_beams; the decoding state holds
B * K rows, beam-major within a batch row.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Stand-in for minus infinity that keeps arithmetic finite (the value Hugging Face uses, so the
# same candidates tie and win).
_NEG = -1.0e9


def beam_search(
    state,
    logits: Tensor,
    *,
    num_beams: int,
    max_new_tokens: int,
    stop_ids: list[int],
    pad_token_id: int,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
) -> Tensor:
    """Run beam search from a state that has just read the prompt.

    Args:
        state: a :class:`~attnlab.models.generation.DecodeState` with B rows.
        logits: (B, V) next-token logits after the prompt.
        num_beams: K, beams per batch row.
        max_new_tokens: N, the most tokens a beam may add.
        stop_ids: stop tokens (may be empty).
        pad_token_id: fills the returned rows after a beam stopped.
        length_penalty: exponent on the generated length in the finished-beam score.
        early_stopping: True, False or "never" (see :func:`~attnlab.models.generation.generate`).

    Returns:
        (B, L + n) long, the best finished beam of each row, n <= N.
    """
    prefix = state.tokens  # (B, L)
    B, L = prefix.shape
    K, N = num_beams, max_new_tokens
    dev = prefix.device
    state.reorder(torch.arange(B, device=dev).repeat_interleave(K))  # B*K rows, beam-major
    log_probs = torch.log_softmax(logits.float(), dim=-1).repeat_interleave(K, dim=0)  # (B*K, V)
    V = log_probs.shape[-1]
    stops = torch.tensor(stop_ids, dtype=torch.long, device=dev)  # (S,)
    n_cand = max(2, 1 + len(stop_ids)) * K
    top_k_slot = torch.arange(n_cand, device=dev) < K  # (C,) only the best K may finish
    row_base = (torch.arange(B, device=dev) * K)[:, None]  # (B, 1)

    run_seq = prefix.new_full((B, K, L + N), pad_token_id)  # (B, K, L+N)
    run_seq[:, :, :L] = prefix[:, None]
    run_score = torch.zeros(B, K, device=dev)  # (B, K) sum of log-probs
    run_score[:, 1:] = _NEG  # all beams start equal: only the first one may expand
    fin_seq = run_seq.clone()  # (B, K, L+N)
    fin_score = torch.full((B, K), _NEG, device=dev)  # (B, K) length-penalised
    fin_len = torch.zeros(B, K, dtype=torch.long, device=dev)  # (B, K) tokens generated
    fin_done = torch.zeros(B, K, dtype=torch.bool, device=dev)  # (B, K) slot holds a finished beam
    can_improve = torch.ones(B, 1, dtype=torch.bool, device=dev)  # (B, 1)

    for step in range(N):
        cur = L + step
        total = (log_probs.view(B, K, V) + run_score[:, :, None]).view(B, K * V)  # (B, K*V)
        cand_score, cand_idx = total.topk(n_cand, dim=-1)  # (B, C) each
        cand_beam, cand_tok = cand_idx // V, cand_idx % V  # (B, C) each
        cand_seq = _gather(run_seq, cand_beam)  # (B, C, L+N)
        cand_seq[:, :, cur] = cand_tok
        ends = torch.isin(cand_tok, stops) | (step == N - 1)  # (B, C)

        # The K best candidates that go on.
        live_score = cand_score + ends.float() * _NEG  # (B, C)
        keep = live_score.topk(K, dim=-1).indices  # (B, K)
        run_seq, run_score = _gather(cand_seq, keep), _gather(live_score, keep)  # (B, K, L+N), (B, K)
        src_beam = _gather(cand_beam, keep)  # (B, K)

        # Candidates that end join the finished slots if they beat what is there.
        just_done = ends & top_k_slot[None, :]  # (B, C)
        new_score = cand_score / ((step + 1) ** length_penalty)  # (B, C)
        row_full = fin_done.all(dim=-1, keepdim=True) & (early_stopping is True)  # (B, 1)
        new_score = new_score + row_full.float() * _NEG + (~can_improve).float() * _NEG
        new_score = new_score + (~just_done).float() * _NEG
        merged_score = torch.cat([fin_score, new_score], dim=1)  # (B, K+C)
        best = merged_score.topk(K, dim=-1).indices  # (B, K)
        fin_seq = _gather(torch.cat([fin_seq, cand_seq], dim=1), best)  # (B, K, L+N)
        fin_score = _gather(merged_score, best)  # (B, K)
        new_len = torch.full_like(cand_tok, step + 1)  # (B, C)
        fin_len = _gather(torch.cat([fin_len, new_len], dim=1), best)  # (B, K)
        fin_done = _gather(torch.cat([fin_done, just_done], dim=1), best)  # (B, K)

        # Could a running beam still beat the worst finished one? (Hugging Face's heuristic: with
        # early_stopping="never" and a positive penalty, assume the longest possible beam.)
        best_len = N if (early_stopping == "never" and length_penalty > 0.0) else step + 1
        best_running = run_score[:, :1] / (best_len ** length_penalty)  # (B, 1)
        worst_done = torch.where(fin_done, fin_score.min(dim=-1, keepdim=True).values, _NEG)  # (B, K)
        can_improve = can_improve & (best_running > worst_done).any(dim=-1, keepdim=True)  # (B, 1)
        all_full = bool(fin_done.all()) and early_stopping is True
        if not can_improve.any() or all_full or bool(ends.all()):
            break
        state.reorder((src_beam + row_base).flatten())  # (B*K,)
        step_logits = state.advance(run_seq[:, :, cur].reshape(B * K, 1))  # (B*K, V)
        log_probs = torch.log_softmax(step_logits.float(), dim=-1)  # (B*K, V)

    n = int(fin_len[:, 0].max())
    return fin_seq[:, 0, : L + n]  # (B, L + n)


def _gather(x: Tensor, idx: Tensor) -> Tensor:
    """Select along dim 1: x (B, M, ...) and idx (B, K) -> (B, K, ...)."""
    while idx.dim() < x.dim():
        idx = idx.unsqueeze(-1)
    return torch.take_along_dim(x, idx, dim=1)


__all__ = ["beam_search"]
