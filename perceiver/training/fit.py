"""Run a :class:`~perceiver.training.plan.TrainPlan` with the Lightning Trainer.

Layout of ``output_dir``: ``checkpoints/last.ckpt`` (rewritten atomically every ``val_check_interval`` steps and at the end),
``logs/`` (CSV or TensorBoard) and, at the end, ``model/`` (``config.json`` + ``model.safetensors``).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytorch_lightning as pl
import torch

from perceiver import registry
from perceiver.checkpoint import save_model
from perceiver.training.lightning import AtomicCheckpointIO
from perceiver.training.plan import PlanError, TrainPlan

LAST_CHECKPOINT = "last.ckpt"


class ResumeError(PlanError):
    """A run that cannot be resumed, or would overwrite an earlier run."""


def checkpoint_dir(output_dir) -> Path:
    return Path(output_dir) / "checkpoints"


def _resume_path(plan: TrainPlan) -> Optional[str]:
    last = checkpoint_dir(plan.trainer_config.output_dir) / LAST_CHECKPOINT
    if plan.resume:
        if not last.exists():
            raise ResumeError(f"nothing to resume: {last} does not exist")
        checkpoint = torch.load(last, map_location="cpu", weights_only=True)
        saved = checkpoint.get("hyper_parameters", {}).get("config", {})
        current = asdict(plan.model_config)
        differ = sorted(k for k in current if k in saved and saved[k] != current[k] and k != "activation_checkpointing")
        if differ:
            details = ", ".join(f"{k}={saved[k]!r} (now {current[k]!r})" for k in differ[:4])
            raise ResumeError(f"{last} was trained with a different model config: {details}")
        return str(last)
    if last.exists():
        raise ResumeError(
            f"{plan.trainer_config.output_dir} already holds a training run; "
            "pass --resume to continue it or choose another --output-dir"
        )
    return None


def _logger(plan: TrainPlan):
    out = plan.trainer_config.output_dir
    if plan.trainer_config.logger == "tensorboard":
        from pytorch_lightning.loggers import TensorBoardLogger

        return TensorBoardLogger(out, name="logs")
    from pytorch_lightning.loggers import CSVLogger

    return CSVLogger(out, name="logs")


def _callbacks(plan: TrainPlan) -> List[pl.Callback]:
    from pytorch_lightning.callbacks import ModelCheckpoint

    cfg = plan.trainer_config
    callbacks: List[pl.Callback] = [
        ModelCheckpoint(
            dirpath=checkpoint_dir(cfg.output_dir),
            save_last=True,
            save_top_k=0,
            every_n_train_steps=cfg.val_check_interval,
        )
    ]
    if cfg.progress:
        if sys.stderr.isatty():
            from pytorch_lightning.callbacks import RichProgressBar

            callbacks.append(RichProgressBar(leave=True))
        else:
            from pytorch_lightning.callbacks import TQDMProgressBar

            callbacks.append(TQDMProgressBar(refresh_rate=max(1, cfg.log_every_n_steps)))
    return callbacks


def build_trainer(plan: TrainPlan, **overrides: Any) -> pl.Trainer:
    cfg = plan.trainer_config
    kwargs = dict(
        default_root_dir=cfg.output_dir,
        max_steps=cfg.max_steps,
        val_check_interval=cfg.val_check_interval,
        check_val_every_n_epoch=None,
        limit_val_batches=cfg.limit_val_batches or 1.0,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        gradient_clip_val=cfg.gradient_clip,
        accelerator=cfg.accelerator,
        devices=cfg.devices if cfg.devices == "auto" else _devices(cfg.devices),
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        precision=cfg.precision,
        log_every_n_steps=cfg.log_every_n_steps,
        logger=_logger(plan),
        callbacks=_callbacks(plan),
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=cfg.progress,
        enable_model_summary=cfg.progress,
        num_sanity_val_steps=0,
    )
    kwargs.update(overrides)
    return pl.Trainer(**kwargs)


def _devices(devices: str):
    try:
        return int(devices)
    except ValueError:
        return devices  # e.g. "0,1"


def _quiet_lightning() -> None:
    if os.environ.get("PERCEIVER_DEBUG", "") in ("", "0"):
        for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)


def fit(plan: TrainPlan) -> Dict[str, Any]:
    """Train, checkpoint and export; returns final metrics and paths."""
    _quiet_lightning()
    cfg = plan.trainer_config
    resume_from = _resume_path(plan)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    task_entry = registry.get("task", plan.task)
    lit_class = registry.resolve(task_entry.metadata["lightning"])
    datamodule = registry.get("dataset", plan.dataset).load()(plan.data_config)
    lit = lit_class(plan.model_config, plan.optimizer_config)
    if cfg.compile:
        lit.model = torch.compile(lit.model)
    trainer = build_trainer(plan)
    trainer.fit(lit, datamodule=datamodule, ckpt_path=resume_from)
    trainer.save_checkpoint(checkpoint_dir(cfg.output_dir) / LAST_CHECKPOINT, weights_only=False)
    model = getattr(lit.model, "_orig_mod", lit.model)
    export_dir = Path(cfg.output_dir) / "model"
    if trainer.is_global_zero:
        save_model(model, export_dir, task=plan.task)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    return {"metrics": metrics, "model_dir": str(export_dir), "step": trainer.global_step}
