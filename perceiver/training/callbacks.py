"""Lightning callbacks that make a training run stoppable and repeatable: stop cleanly on Ctrl-C or SIGTERM, save
checkpoints between optimizer steps only, and draw each step's random numbers from ``(seed, rank, step)`` so that a
resumed run continues exactly."""

from __future__ import annotations

import signal
import threading
from typing import Any, Dict, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from perceiver.training.signals import STOP_SIGNALS, TrainingInterrupted


class StopOnSignal(pl.Callback):
    """Ctrl-C (SIGINT) and SIGTERM end a training run without losing it.

    - Before training starts (data preparation, restoring a checkpoint): raise :class:`TrainingInterrupted` at once.
    - During training: finish the optimizer step under way (and a validation that is running or due right after it),
      then raise :class:`TrainingInterrupted`, whose ``on_exception`` here saves ``checkpoint`` at that step. A run
      stops between optimizer steps only, so that no accumulated gradient is lost, and its checkpoint is the same
      state that the periodic checkpoints hold.
    - While stopping and after training, further signals are ignored: the checkpoint being written stays whole.

    One process checks after every optimizer step. The processes of a distributed run agree every
    ``log_every_n_steps`` steps (a signal to any rank stops them all at the same step); in between they do not talk.

    Call :meth:`install` before ``trainer.fit`` and :meth:`restore` after it (in the main thread); Lightning's own
    SIGTERM handler, which stops in the middle of an accumulation, is replaced for the training.
    """

    def __init__(self, checkpoint: str):
        self.checkpoint = checkpoint
        self.signum: Optional[int] = None
        self.phase = "preparing"  # -> training -> stopping / finished
        self._previous: Dict[int, Any] = {}
        self._step_at_batch_start = 0
        self._agreed = False
        self._waited_for_validation = False

    # -- signal handling ----------------------------------------------------------------------------------------
    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            if handler is not None:
                signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            return  # already stopping
        self.signum = signum
        if self.phase == "preparing":
            raise TrainingInterrupted(signum)

    @property
    def stopped(self) -> bool:
        return self.phase == "stopping"

    # -- Lightning hooks ----------------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._previous:  # installed: take SIGTERM back from the handler Lightning registered for this run
            for signum in STOP_SIGNALS:
                signal.signal(signum, self._handle)
        self.phase = "training"

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.phase == "training":
            self.phase = "finished"

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx) -> None:
        self._step_at_batch_start = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx):
        step = trainer.global_step
        if step == self._step_at_batch_start or (trainer.max_steps > 0 and step >= trainer.max_steps):
            return  # inside an accumulation, or the run ends here anyway
        if not self._agreed:
            if trainer.world_size == 1:
                self._agreed = self.signum is not None
            elif step % max(1, trainer.log_every_n_steps) == 0:
                self._agreed = trainer.strategy.reduce_boolean_decision(self.signum is not None, all=False)
        if not self._agreed:
            return
        if _validation_due(trainer) and not self._waited_for_validation:
            self._waited_for_validation = True  # stop after the next step (it cannot wait twice: a validation ran)
            return
        self.phase = "stopping"
        raise TrainingInterrupted(self.signum or signal.SIGTERM, step)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, TrainingInterrupted) and self.phase == "stopping":
            trainer.save_checkpoint(self.checkpoint)  # every rank takes part (FSDP gathers); rank 0 writes
            exception.saved, exception.checkpoint = True, self.checkpoint


def _validation_due(trainer: pl.Trainer) -> bool:
    """Whether Lightning validates after the current training batch (``val_check_interval`` counts batches).
    Stopping before such a validation would skip it for good: a resumed run does not repeat it."""
    every = getattr(trainer, "val_check_batch", None)
    if not trainer.enable_validation or not isinstance(every, int) or every < 1:
        return False
    return (trainer.fit_loop.total_batch_idx + 1) % every == 0


class SeedEveryStep(pl.Callback):
    """Seed torch's generators before every training batch from ``(seed, rank, step, batch)``: dropout draws the same
    numbers whether a run went through in one go or was interrupted and resumed, and differ between ranks."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx) -> None:
        torch.manual_seed(step_seed(self.seed, trainer.global_rank, trainer.global_step, batch_idx))


def step_seed(seed: int, rank: int, step: int, batch_idx: int) -> int:
    """A 63-bit seed that depends on every argument (numpy's SeedSequence mixes them)."""
    words = np.random.SeedSequence([seed, rank, step, batch_idx]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


class LoggedStepsFollowGlobalStep(pl.Callback):
    """Log every row under its optimizer step. Lightning writes rows under its count of ``_batches_that_stepped``,
    which it restores one too high from a checkpoint saved after training ended (the state that ``--resume`` with a
    larger ``--max-steps`` starts from); with one optimizer the two counts are equal at the start of every batch.
    Must come before the callbacks that log in ``on_train_batch_start`` (LearningRateMonitor)."""

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx) -> None:
        trainer.fit_loop.epoch_loop._batches_that_stepped = trainer.global_step


class StepCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` that saves only after a batch that ended an optimizer step.

    Lightning checks its triggers after every batch, so a time-based trigger (``train_time_interval``) can fire in
    the middle of a gradient accumulation: the checkpoint then holds a step count and data position that point past
    gradients it does not hold, and a run resumed from it (after ``kill -9``) is not the uninterrupted run. Between
    optimizer steps the model, optimizer, data position and random state agree, as in the checkpoint of a stop.
    """

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx) -> None:
        self._step_at_batch_start = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx):
        if trainer.global_step == getattr(self, "_step_at_batch_start", None):
            return  # inside an accumulation: no optimizer step in this batch
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
