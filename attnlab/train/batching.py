"""Length-bucketed batches under a token budget (fairseq-style), with resume and sharding.

Examples are sorted by length and cut greedily into batches whose padded size,
``batch_size * max_len_in_batch``, stays within ``max_tokens``; then the ORDER of the
batches is shuffled per epoch. Short examples travel in big batches and long ones in small
batches, so little compute is spent on padding.

    batcher = TokenBudgetBatcher(lengths, max_tokens=4096, rank=rank, world_size=world)
    for epoch in range(epochs):
        batcher.set_epoch(epoch)
        for indices in batcher:                  # list[int], indices into the dataset
            ids, mask = collate_pad([dataset[i] for i in indices], pad_id=0)

Conventions:

* Everything random comes from ``random.Random(seed + epoch)``, so every rank builds the same
  epoch plan without talking to the others.
* With ``bucket_width`` and ``shuffle``, lengths are compared in buckets of that width and ties
  inside a bucket are broken at random per epoch: batches differ from epoch to epoch while
  staying length-homogeneous. The budget is always checked on the true lengths.
* ``position`` counts the batches of this epoch already yielded to this rank. A fresh
  ``__iter__`` continues from it, so ``load_state_dict(state_dict())`` resumes exactly. Running
  an epoch to its end moves to the next epoch (``set_epoch`` still works as usual).
* ``position`` only means something for the same plan: :meth:`TokenBudgetBatcher.plan` is what
  fixes the sequence of batches (the data's lengths, the budget, the seed, the world size), and
  :func:`plan_changes` says how two differ, so a resume can refuse a changed one.
"""

from __future__ import annotations

import random
import zlib
from array import array
from collections.abc import Iterator, Sequence

import torch

__all__ = ["TokenBudgetBatcher", "ExampleBatcher", "make_batcher", "collate_pad", "plan_changes"]


class TokenBudgetBatcher:
    """Yields lists of example indices whose padded size fits a token budget.

    Args:
        lengths: length (in tokens) of every example; index ``i`` is example ``i``.
        max_tokens: budget per batch: ``len(batch) * max(lengths[batch]) <= max_tokens``.
        shuffle: shuffle the order of batches (and bucket ties) per epoch.
        seed: base seed; epoch ``e`` uses ``seed + e``.
        bucket_width: compare lengths in buckets of this width, breaking ties at random
            (only with ``shuffle``); ``None`` sorts by exact length, ties by index.
        rank: this process's rank in ``[0, world_size)``.
        world_size: number of processes sharing the epoch; rank ``r`` gets batches
            ``r, r + world_size, ...`` of the epoch's order.
        drop_last: with ``world_size > 1``, drop the tail batches that do not divide evenly
            instead of padding by repeating batches from the start of the order.
        max_batch_size: cap on the number of examples per batch, whatever the budget.
        allow_oversize: let an example longer than ``max_tokens`` form a batch of its own
            instead of raising ``ValueError``.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        max_tokens: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        bucket_width: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        max_batch_size: int | None = None,
        allow_oversize: bool = False,
    ) -> None:
        self.lengths = [int(n) for n in lengths]
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            )
        if bucket_width is not None and bucket_width < 1:
            raise ValueError(f"bucket_width must be >= 1 or None, got {bucket_width}")
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1 or None, got {max_batch_size}")
        for i, n in enumerate(self.lengths):
            if n < 0:
                raise ValueError(f"example {i} has negative length {n}")
            if n > max_tokens and not allow_oversize:
                raise ValueError(
                    f"example {i} has length {n} > max_tokens={max_tokens}; raise max_tokens, "
                    "filter it out, or pass allow_oversize=True to give it a batch of its own"
                )
        self.max_tokens = max_tokens
        self.shuffle = shuffle
        self.seed = seed
        self.bucket_width = bucket_width
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.max_batch_size = max_batch_size
        self.epoch = 0
        self.position = 0
        self._cache: tuple[int, list[list[int]]] | None = None  # (epoch, this rank's batches)

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its first batch."""
        self.epoch = epoch
        self.position = 0

    def __len__(self) -> int:
        """Batches per epoch for this rank (may vary by epoch when ``bucket_width`` is set)."""
        return len(self._rank_batches())

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._rank_batches()
        while self.position < len(batches):
            batch = batches[self.position]
            self.position += 1  # counted as soon as it is handed out
            yield list(batch)
        self.set_epoch(self.epoch + 1)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        position = int(state["position"])
        n = len(self._rank_batches())
        if not 0 <= position <= n:
            raise ValueError(f"position {position} outside [0, {n}] for epoch {self.epoch}")
        self.position = position

    def plan(self) -> dict:
        """What fixes the sequence of batches besides ``(epoch, position)``: the kind of batcher,
        the number of examples and a CRC-32 of their lengths, the budget, the size cap, the seed,
        the shuffling and the world size. Two batchers with equal plans yield the same batches."""
        return {
            "kind": type(self).__name__, "examples": len(self.lengths),
            "lengths_crc32": zlib.crc32(array("q", self.lengths).tobytes()),
            "max_tokens": self.max_tokens, "max_batch_size": self.max_batch_size, "seed": self.seed,
            "shuffle": self.shuffle, "bucket_width": self.bucket_width, "drop_last": self.drop_last,
            "group_by_length": getattr(self, "group_by_length", None), "world_size": self.world_size,
        }

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All batches of ``epoch`` in their shuffled order, before sharding across ranks."""
        rng = random.Random(self.seed + epoch)
        order = self._sorted_indices(rng)
        batches = self._cut(order)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def _sorted_indices(self, rng: random.Random) -> list[int]:
        n = len(self.lengths)
        if self.bucket_width is None or not self.shuffle:
            return sorted(range(n), key=lambda i: (self.lengths[i], i))
        w = self.bucket_width
        noise = [rng.random() for _ in range(n)]
        return sorted(range(n), key=lambda i: ((self.lengths[i] + w - 1) // w, noise[i], i))

    def _cut(self, order: list[int]) -> list[list[int]]:
        """Greedily cut ``order`` into batches within the budget and the size cap."""
        batches: list[list[int]] = []
        batch: list[int] = []
        batch_max = 0
        for i in order:
            n = max(self.lengths[i], 1)  # empty examples still cost a row
            new_max = max(batch_max, n)
            full = self.max_batch_size is not None and len(batch) >= self.max_batch_size
            if batch and (full or (len(batch) + 1) * new_max > self.max_tokens):
                batches.append(batch)
                batch, new_max = [], n
            batch.append(i)
            batch_max = new_max
        if batch:
            batches.append(batch)
        return batches

    def _rank_batches(self) -> list[list[int]]:
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        batches = self.epoch_batches(self.epoch)
        ws = self.world_size
        if ws > 1:
            if self.drop_last:
                batches = batches[: len(batches) // ws * ws]
            elif batches:
                total = -(-len(batches) // ws) * ws
                batches = [batches[k % len(batches)] for k in range(total)]
        mine = batches[self.rank :: ws]
        self._cache = (self.epoch, mine)
        return mine


class ExampleBatcher(TokenBudgetBatcher):
    """Fixed-size batches of ``batch_size`` examples (the last of an epoch may be smaller), with
    the same resume, sharding and per-epoch shuffling as :class:`TokenBudgetBatcher`.

    Args:
        lengths: length of every example (used only with ``group_by_length``).
        batch_size: examples per batch.
        group_by_length: cut the batches from a length-sorted order (ties broken at random in
            buckets of ``bucket_width``), so little compute goes to padding; False: from a random
            permutation of the examples.
        shuffle, seed, bucket_width, rank, world_size, drop_last: as :class:`TokenBudgetBatcher`.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, group_by_length: bool = True,
                 shuffle: bool = True, seed: int = 0, bucket_width: int | None = None, rank: int = 0,
                 world_size: int = 1, drop_last: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.group_by_length = group_by_length
        super().__init__(lengths, max_tokens=1 << 62, shuffle=shuffle, seed=seed, bucket_width=bucket_width,
                         rank=rank, world_size=world_size, drop_last=drop_last, max_batch_size=batch_size)

    def _sorted_indices(self, rng: random.Random) -> list[int]:
        if self.group_by_length:
            return super()._sorted_indices(rng)
        order = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(order)
        return order


def plan_changes(before: dict, now: dict) -> list[str]:
    """How the batch plan ``now`` differs from ``before`` (both from :meth:`TokenBudgetBatcher.plan`),
    as ``"key old -> new"`` items; empty when they are the same."""
    changes = []
    for key in sorted(set(before) | set(now)):
        if before.get(key) != now.get(key):
            if key == "lengths_crc32" and before.get("examples") == now.get("examples"):
                changes.append("example lengths (the training data changed)")
            elif key != "lengths_crc32":
                changes.append(f"{key} {before.get(key)} -> {now.get(key)}")
    return changes


def make_batcher(cfg, lengths: Sequence[int], *, rank: int = 0, world_size: int = 1,
                 bucket_width: int = 2) -> TokenBudgetBatcher:
    """The training batcher a ``train:`` config asks for: ``batch_size`` examples per batch when
    it is set, else batches under the ``max_tokens`` budget.

    Args:
        cfg: a :class:`~attnlab.train.config.TrainConfig`.
        lengths: every training example's length in tokens.
        rank, world_size: this process's place in the process group.
        bucket_width: length buckets whose ties are broken at random per epoch.
    """
    if cfg.batch_size is not None:
        return ExampleBatcher(lengths, cfg.batch_size, group_by_length=cfg.group_by_length, seed=cfg.seed,
                              bucket_width=bucket_width, rank=rank, world_size=world_size)
    return TokenBudgetBatcher(lengths, cfg.max_tokens, seed=cfg.seed, bucket_width=bucket_width, rank=rank,
                              world_size=world_size, allow_oversize=True)


def collate_pad(
    seqs: Sequence[Sequence[int]] | Sequence[torch.Tensor], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token sequences into one batch.

    Args:
        seqs: ``B`` sequences of token ids, as lists or 1-D tensors.
        pad_id: id written into the padding.

    Returns:
        ``ids`` (B, L) long and ``mask`` (B, L) bool, True on real tokens, where ``L`` is the
        longest sequence.
    """
    if len(seqs) == 0:
        raise ValueError("collate_pad needs at least one sequence")
    rows = [torch.as_tensor(s, dtype=torch.long) for s in seqs]
    for b, r in enumerate(rows):
        if r.dim() != 1:
            raise ValueError(f"sequence {b} must be 1-D, got shape {tuple(r.shape)}")
    length = max(r.numel() for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)  # (B, L)
    mask = torch.zeros((len(rows), length), dtype=torch.bool)  # (B, L)
    for b, r in enumerate(rows):
        ids[b, : r.numel()] = r
        mask[b, : r.numel()] = True
    return ids, mask
