"""Ctrl-C (SIGINT) and preemption (SIGTERM) as a request to stop after the current step.

    with StopSignals(say=monitor.message) as signals:
        while ...:
            ...                      # signals.requested: the first signal's number, or None

The trainer carries ``requested`` in its per-step all-reduce, so every rank stops after the
same step, saves, and raises :class:`attnlab.train.trainer.TrainingInterrupted`; the CLI then
exits with 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM), the shell convention.

A second Ctrl-C aborts at once (``KeyboardInterrupt``), unless it comes within
``repeat_window`` seconds of the first signal: one press can arrive twice, from the terminal and
from a launcher or wrapper script that forwards it. (torchrun starts its workers in their own
sessions, so there only torchrun sees the terminal's Ctrl-C and forwards it once.) A repeated
SIGTERM (a scheduler insisting) is ignored; the save is on its way.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Callable

__all__ = ["StopSignals", "SIGNAL_NAMES"]

SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


class StopSignals:
    """Installs SIGINT and SIGTERM handlers for the duration of a ``with`` block.

    Args:
        say: where the one line "saving a checkpoint after this step" goes.
        repeat_window: seconds after the first signal during which another one is taken for the same.
    """

    def __init__(self, say: Callable[[str], None] = print, repeat_window: float = 1.0):
        self.say = say
        self.repeat_window = repeat_window
        self.requested: int | None = None
        self._first_at = 0.0
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # handlers only work there
            for signum in SIGNAL_NAMES:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        now = time.monotonic()
        if self.requested is None:
            self.requested, self._first_at = signum, now
            hint = " (press again to abort)" if signum == signal.SIGINT else ""
            self.say(f"{SIGNAL_NAMES[signum]}: saving a checkpoint after this step{hint}")
        elif signum == signal.SIGINT and now - self._first_at > self.repeat_window:
            raise KeyboardInterrupt
