"""One log per training run, in ``output_dir/logs``: a resumed run continues the log of the run it resumes.

Lightning's loggers start a new ``version_N`` directory per run, and its CSV logger deletes a ``metrics.csv`` it
finds. Here the directory is fixed, and the rows (CSV) or events (TensorBoard) logged after the step a run resumes
from are dropped, since the resumed run logs those steps again: the log reads as one run with continuing steps.
"""

from __future__ import annotations

import csv
import os
from typing import Optional

from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

LOG_DIR = "logs"


def run_logger(kind: str, output_dir, resume_step: Optional[int] = None):
    """The logger of a run in ``output_dir``: ``csv`` or ``tensorboard``; ``resume_step``: the global step of the
    checkpoint a resumed run starts from (None for a new run)."""
    if kind == "tensorboard":
        # the writer drops the events at and after purge_step that an earlier, interrupted run left behind
        return TensorBoardLogger(output_dir, name=LOG_DIR, version="", purge_step=resume_step)
    return RunCSVLogger(output_dir, resume_step=resume_step)


class RunCSVLogger(CSVLogger):
    """Lightning's CSV logger writing ``output_dir/logs/metrics.csv`` and ``hparams.yaml`` for the whole run."""

    def __init__(self, output_dir, resume_step: Optional[int] = None):
        super().__init__(output_dir, name=LOG_DIR, version="")
        self.resume_step = resume_step

    @property
    def log_dir(self) -> str:
        return os.path.join(self.save_dir, LOG_DIR)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.log_dir, exist_ok=True)
            self._experiment = ContinuingWriter(self.log_dir, self.resume_step)
        return self._experiment


class ContinuingWriter(ExperimentWriter):
    """Appends to an existing ``metrics.csv`` (keeping its columns) after dropping the rows with ``step >=
    resume_step``; without ``resume_step`` (a new run) it starts the file afresh. Rewrites are atomic."""

    def __init__(self, log_dir: str, resume_step: Optional[int] = None):
        self.resume_step = resume_step or 0
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:  # called by the base __init__, where Lightning deletes the file
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as file:
            reader = csv.DictReader(file)
            rows = list(reader)
            columns = list(reader.fieldnames or [])
        kept = [row for row in rows if _step(row) < self.resume_step]
        if not kept:
            os.remove(self.metrics_file_path)  # nothing before the resumed step: a fresh file
            return
        self.metrics_keys = sorted(columns)
        if len(kept) < len(rows):
            self._write_all(self.metrics_keys, kept)

    def _rewrite_with_new_header(self, fieldnames) -> None:
        with open(self.metrics_file_path, newline="") as file:
            rows = list(csv.DictReader(file))
        self._write_all(fieldnames, rows)

    def _write_all(self, fieldnames, rows) -> None:
        tmp = f"{self.metrics_file_path}.tmp-{os.getpid()}"
        with open(tmp, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.metrics_file_path)


def _step(row) -> float:
    try:
        return float(row.get("step") or 0)
    except ValueError:
        return 0.0
