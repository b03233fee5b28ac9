"""What a person sees while a model trains: step/max_steps, loss, the last validation metrics, a smoothed
throughput, the learning rate and the time left; nothing about epochs, versions or FLOPs.

On a terminal it is one Rich bar, redrawn in place; otherwise (CI, ``nohup``, a pipe to a file) and with
``--no-progress``, one plain line every ``log_every_n_steps`` steps and one after each validation (clm-tiny)::

    step 25/60  loss 2.9404  val_loss 3.1186  val_bpb 4.4992  lr 2.1e-03  106 tok/s  eta 0:00:25
"""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import Any, Deque, Dict, List, Optional, TextIO, Tuple

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks.progress import ProgressBar


class TrainingProgress(ProgressBar):
    """Lightning progress bar (rank 0 only) for step-based training.

    Throughput is the sum of the training steps' ``count`` outputs (kept on the device, read on display steps only)
    over the training time of the last ``window`` displays, validation excluded, times the number of processes.
    ``eta`` extrapolates the wall-clock time per step since this run started (validation and checkpoints included).

    Not Lightning's ``ThroughputMonitor``: it calls ``torch.cuda.synchronize()`` after every training batch (its
    ``_update``), a host stall per step on GPUs, and counts items with a ``length_fn`` on the batch, where the
    tasks' ``count`` (predicted tokens, not padded positions) is the number that means something here.
    """

    def __init__(self, live: bool, every: int = 10, unit: str = "items/s", window: int = 10,
                 stream: Optional[TextIO] = None):
        super().__init__()
        self.live = live
        self.every = max(1, every)
        self.unit = unit
        self.stream = stream
        self._enabled = True
        self._points: Deque[Tuple[float, float]] = deque(maxlen=max(2, window))  # (training seconds, items)
        self._items: Optional[torch.Tensor] = None
        self._trained = 0.0  # training seconds before the current stretch
        self._stretch: Optional[float] = None  # start of the current stretch of training (no validation)
        self._wall_start = 0.0
        self._first_step = 0
        self._rate: Optional[float] = None
        self._bar: Any = None
        self._task: Any = None

    # -- ProgressBar interface ----------------------------------------------------------------------------------
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self._enabled:
            self._write(" ".join(str(a) for a in args))

    # -- hooks --------------------------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._wall_start = time.perf_counter()
        self._stretch = self._wall_start
        self._first_step = trainer.global_step
        if not self._enabled:
            return
        count = getattr(pl_module, "num_parameters", None) or sum(p.numel() for p in pl_module.parameters())
        steps = f"from step {trainer.global_step} to {trainer.max_steps}" if trainer.global_step else (
            f"for {trainer.max_steps} steps")
        self._write(f"training {_count(count)} parameters {steps}")
        if self.live:
            self._bar = _live_bar(self.stream or sys.stderr)
            self._task = self._bar.add_task("", total=trainer.max_steps, completed=trainer.global_step, eta="")
            self._bar.start()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx):
        count = outputs.get("count") if isinstance(outputs, dict) else None
        if count is not None:
            self._items = count.detach() if self._items is None else self._items + count.detach()
        if not self._enabled:
            return
        step = trainer.global_step
        if self._bar is not None:
            self._bar.update(self._task, completed=step)
        if step % self.every and step != trainer.max_steps:
            return
        if self._items is not None:  # the one host sync, on display steps only
            self._points.append((self._training_seconds(), float(self._items.item())))
        if len(self._points) >= 2:
            (t0, n0), (t1, n1) = self._points[0], self._points[-1]
            self._rate = (n1 - n0) / max(t1 - t0, 1e-9) * trainer.world_size
            pl_module.log(self.unit, self._rate)
        self._show(trainer, self._status(trainer))

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._stretch is not None:
            self._trained += time.perf_counter() - self._stretch
            self._stretch = None
        if self._bar is not None and not trainer.sanity_checking:
            self._bar.update(self._task, eta="validating")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._stretch = time.perf_counter()
        if not self._enabled or trainer.sanity_checking:
            return
        values = _validation_metrics(trainer)
        if values:
            self._show(trainer, f"validation  {values}", validation=True)
        if self._bar is not None:
            self._show(trainer, self._status(trainer))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._close()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._close()

    # -- helpers ------------------------------------------------------------------------------------------------
    def _training_seconds(self) -> float:
        running = time.perf_counter() - self._stretch if self._stretch is not None else 0.0
        return self._trained + running

    def _status(self, trainer: pl.Trainer) -> str:
        metrics = trainer.callback_metrics
        parts: List[str] = []
        if "train_loss" in metrics:
            parts.append(f"loss {float(metrics['train_loss']):.4f}")
        validation = _validation_metrics(trainer)
        if validation:
            parts.append(validation)
        if trainer.optimizers:
            parts.append(f"lr {trainer.optimizers[0].param_groups[0]['lr']:.1e}")
        if self._rate is not None:
            parts.append(f"{self._rate:,.0f} {self.unit}")
        return "  ".join(parts)

    def _eta(self, trainer: pl.Trainer) -> Optional[float]:
        done = trainer.global_step - self._first_step
        if done < 1 or trainer.max_steps < 1:
            return None
        per_step = (time.perf_counter() - self._wall_start) / done
        return per_step * max(0, trainer.max_steps - trainer.global_step)

    def _show(self, trainer: pl.Trainer, status: str, validation: bool = False) -> None:
        """A progress line (with the time left), or a validation line; on the live bar, the line below it."""
        eta = self._eta(trainer)
        eta = "" if eta is None or validation else f"eta {_duration(eta)}"
        if self._bar is not None and not validation:
            self._bar.update(self._task, eta=eta)
            self._bar.status = status
            return
        parts = (f"step {trainer.global_step}/{trainer.max_steps}", status, eta)
        self._write("  ".join(part for part in parts if part))

    def _write(self, line: str) -> None:
        if self._bar is not None:
            self._bar.console.print(line, highlight=False, markup=False)
            return
        stream = self.stream or sys.stderr
        stream.write(line + "\n")
        stream.flush()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _live_bar(stream: TextIO):
    """A Rich progress bar with a second line for the metrics (``.status``), which do not fit beside it."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.text import Text

    class Bar(Progress):
        status = ""

        def get_renderables(self):
            yield self.make_tasks_table(self.tasks)
            if self.status:
                yield Text(self.status, overflow="ellipsis", no_wrap=True)

    console = Console(file=stream, highlight=False)
    return Bar(TextColumn("step"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.fields[eta]}"),
               console=console, refresh_per_second=4)


def _validation_metrics(trainer: pl.Trainer) -> str:
    values: Dict[str, Any] = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
    ordered = sorted(values, key=lambda k: (k != "val_loss", k))
    return "  ".join(f"{k} {float(values[k]):.4f}" for k in ordered)


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
