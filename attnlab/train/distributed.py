"""torch.distributed plumbing: one process per device, launched by ``torchrun``.

``torchrun --nproc-per-node N attnlab train ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``
and ``MASTER_ADDR``/``MASTER_PORT``; :func:`init_distributed` reads them and joins the process
group. Without them everything here is a no-op on one process.

The device is resolved first (``auto`` is CUDA when available), then the backend follows it:
``gloo`` on CPU, ``cpu:gloo,cuda:nccl`` on CUDA, so collectives of CUDA tensors go through NCCL
and any CPU tensor still has a backend. On CUDA each process takes GPU ``LOCAL_RANK``.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "resolve_device", "backend_for", "all_reduce_sum",
           "broadcast_object", "gather_object", "barrier", "shutdown"]


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """Where this process stands. ``is_main`` (rank 0) alone logs and writes files."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """``train.device`` as a device: "auto" is CUDA when available, else CPU.

    Args:
        name: "auto", "cpu" or "cuda".
        local_rank: under torchrun, the GPU this process takes (``cuda:LOCAL_RANK``).
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but no CUDA device is available")
    if name == "cuda" and local_rank is not None:
        return torch.device("cuda", local_rank)
    return torch.device(name)


def backend_for(device: torch.device | str) -> str:
    """The process-group backend for a device type: gloo on CPU; NCCL for CUDA tensors (with
    gloo beside it for CPU tensors) on CUDA."""
    kind = torch.device(device).type
    return "cpu:gloo,cuda:nccl" if kind == "cuda" else "gloo"


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group described by torchrun's environment variables, if any.

    Args:
        device: ``train.device``: "auto" (CUDA when available), "cpu" (gloo) or "cuda" (NCCL;
            each process takes GPU ``LOCAL_RANK``).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)  # before any collective: NCCL and *_object use it
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for(resolved), rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def _active() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all processes in place (returned for chaining); a no-op on one process."""
    if _active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj):
    """Rank 0's ``obj`` on every process."""
    if _active():
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return obj


def gather_object(obj) -> list | None:
    """Every process's ``obj``, by rank, on rank 0 (None on the others); ``[obj]`` on one process."""
    if not _active():
        return [obj]
    out = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def barrier() -> None:
    if _active():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group (if this process joined one)."""
    if dist.is_initialized():
        dist.destroy_process_group()
