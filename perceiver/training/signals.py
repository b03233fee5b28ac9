"""Ctrl-C (SIGINT) and ``kill`` (SIGTERM) during training: what is raised, and how file writes are kept whole.

Standard library only, so that the command line can catch :class:`TrainingInterrupted` without importing torch.
The Lightning side (stop at the next optimizer step, then save) is
:class:`perceiver.training.callbacks.StopOnSignal`.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Training stopped on a signal. ``step``: the optimizer step reached; ``saved``: whether ``checkpoint`` now holds
    that step; ``report``: False on the ranks of a distributed run that do not print. The exit code is the shell's
    convention for a process ended by ``signum`` (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, signum: int, step: Optional[int] = None, saved: bool = False, checkpoint: str = "",
                 report: bool = True):
        super().__init__(signum)
        self.signum, self.step, self.saved, self.checkpoint, self.report = signum, step, saved, checkpoint, report

    def __str__(self) -> str:
        return self.summary()

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)

    def summary(self) -> str:
        if self.saved:
            return f"interrupted at step {self.step}; checkpoint saved"
        return "interrupted before the first training step; nothing new to save"


def ignore_stop_signals() -> None:
    """Ignore further SIGINT and SIGTERM (in the main thread): for a process that is already ending on one, so that
    an impatient second Ctrl-C, however late it comes, does not end it with a traceback."""
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


@contextmanager
def signals_held(signums=STOP_SIGNALS) -> Iterator[None]:
    """Hold SIGINT and SIGTERM for the duration of the block, then deliver them to the handlers that were in place
    (which may raise or end the process, but only after the block). Use around writes that must not be cut in two,
    such as a checkpoint's write and rename. Outside the main thread (where handlers cannot be set) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: List[int] = []
    previous: Dict[int, object] = {}
    for signum in signums:
        handler = signal.getsignal(signum)
        if handler is not None:  # None: set outside Python, cannot be restored
            previous[signum] = handler
            signal.signal(signum, lambda number, frame: held.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(held):
            signal.raise_signal(signum)
