"""The run directory of ``perceiver train``: its stored plan, written when training starts, and nothing left behind by
a run that fails before its first step.

``RecordRun`` (a Lightning callback) writes ``output_dir/run.yaml`` on rank 0 when training starts and notes when the
first training batch is done. ``removed_if_unstarted`` removes the directory a run created if the run fails before
that: it removes only a directory that did not exist before the run (never anything that did), and only on rank 0.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import pytorch_lightning as pl

from perceiver.training.plan import TrainPlan, write_run_file


class RecordRun(pl.Callback):
    """Writes the plan to ``output_dir/run.yaml`` and a subword tokenizer to ``output_dir/tokenizer/`` when training
    starts (rank 0); ``stepped`` turns True when the
    first training batch is done."""

    def __init__(self, plan: TrainPlan):
        self.plan = plan
        self.stepped = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            write_run_file(self.plan)
            from perceiver.tokenizers import save_run_tokenizer

            save_run_tokenizer(getattr(trainer.datamodule, "tokenizer", None), self.plan.trainer_config.output_dir)

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        self.stepped = True


def first_missing(path: str) -> Optional[Path]:
    """The outermost directory of ``path`` that does not exist yet (what a run writing to ``path`` creates)."""
    missing = None
    for candidate in [Path(path).absolute(), *Path(path).absolute().parents]:
        if candidate.exists():
            break
        missing = candidate
    return missing


@contextmanager
def removed_if_unstarted(output_dir: str, record: RecordRun, rank_zero: bool = True) -> Iterator[None]:
    """Run the body; if it raises before ``record`` saw a training step, remove what this run created of
    ``output_dir``. Only the process that creates the directory (``rank_zero``) removes it."""
    created = first_missing(output_dir) if rank_zero else None
    try:
        yield
    except BaseException:
        if created is not None and not record.stepped:
            shutil.rmtree(created, ignore_errors=True)
        raise
