"""The random generators a training run draws from, as plain data that ``torch.load`` reads with
``weights_only=True``: python ``random``, numpy, torch CPU, and the current CUDA device's.

    state = rng_state()        # after a step
    ...
    set_rng_state(state)       # the next draws are the same as after that step

Every rank of a torchrun job has its own generators (dropout must differ between ranks), so a
checkpoint keeps one such state per rank (:func:`attnlab.train.checkpoint.save_checkpoint`).
"""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["rng_state", "set_rng_state"]


def rng_state() -> dict:
    """This process's generator states. CUDA's is that of the current device, and only once CUDA
    is initialised (before that nothing has drawn from it); touching every device would create
    a context on each GPU from each rank."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        device = torch.cuda.current_device()
        state["cuda"] = {"device": int(device), "state": torch.cuda.get_rng_state(device)}
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`'s result. A CUDA state is restored only on devices this machine
    has (a checkpoint written on 8 GPUs resumes on 1, or on a CPU-only machine)."""
    random.setstate(state["python"])
    kind, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is None or not torch.cuda.is_available():
        return
    present = torch.cuda.device_count()
    # {"device", "state"} now; a list of every device's state in checkpoints of older versions
    pairs = [(cuda["device"], cuda["state"])] if isinstance(cuda, dict) else list(enumerate(cuda))
    for device, s in pairs:
        if device < present:
            torch.cuda.set_rng_state(s, device)
