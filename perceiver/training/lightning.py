"""The Lightning side of every task: optimizer, schedule, logging, atomic checkpoints.

This and the ``Lit*`` classes are the only places that import Lightning.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, is_dataclass
from typing import Any, Dict, Optional, Union

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from perceiver.training.config import OptimizerConfig
from perceiver.training.schedules import ConstantWithWarmupLR, CosineWithWarmupLR


class LitTask(pl.LightningModule):
    """Base of the Lightning modules: builds ``model_class(config)``, logs what ``step`` returns.

    Subclasses set ``task_name``, ``config_class``, ``model_class`` and implement ``compute(model, batch) -> dict``
    with ``loss`` and ``count`` (how many predictions the batch holds, the weight of its metrics); other entries are
    logged as ``val_<key>``. ``compute`` is static so that ``perceiver eval`` uses it on a loaded model. Hyperparameters are stored as
    plain dicts so that checkpoints load with ``torch.load(weights_only=True)``.
    """

    task_name: str = ""
    throughput_unit: str = "items/s"
    config_class: type = type(None)
    model_class: type = type(None)

    def __init__(self, config: Union[Dict[str, Any], Any], optimizer: Union[Dict[str, Any], OptimizerConfig, None] = None):
        super().__init__()
        if not isinstance(config, self.config_class):
            config = self.config_class(**config)
        if optimizer is None:
            optimizer = OptimizerConfig()
        elif not isinstance(optimizer, OptimizerConfig):
            optimizer = OptimizerConfig(**optimizer)
        self.save_hyperparameters({"config": asdict(config), "optimizer": asdict(optimizer)})
        self.optimizer_config = optimizer
        self.model = self.model_class(config)
        self._last_step_time: Optional[float] = None

    @classmethod
    def create(cls, config: Any, optimizer: Union[OptimizerConfig, Dict[str, Any], None] = None) -> "LitTask":
        return cls(config, optimizer)

    @staticmethod
    def compute(model: torch.nn.Module, batch) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def step(self, batch) -> Dict[str, torch.Tensor]:
        return self.compute(self.model, batch)

    def training_step(self, batch, batch_idx):
        out = self.step(batch)
        self.log("train_loss", out["loss"], prog_bar=True)
        now = time.perf_counter()
        if self._last_step_time is not None:
            count = out["count"].item() * self.trainer.world_size
            self.log(self.throughput_unit, count / max(now - self._last_step_time, 1e-9), prog_bar=True)
        self._last_step_time = now
        return out["loss"]

    def validation_step(self, batch, batch_idx):
        out = self.step(batch)
        for key, value in out.items():
            if key != "count":
                self.log(f"val_{key}", value, prog_bar=key == "loss", sync_dist=True)

    def on_validation_end(self):
        self._last_step_time = None  # do not count validation time as training throughput

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        checkpoint["perceiver_task"] = self.task_name

    def configure_optimizers(self):
        cfg = self.optimizer_config
        decay = [p for p in self.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.dim() < 2]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer_class = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        if cfg.optimizer == "adam":
            groups[0]["weight_decay"] = 0.0
        kwargs = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        # the fused kernel is fastest, but Lightning's mixed-precision plugins cannot clip its gradients
        precision = str(self.trainer.precision) if self._trainer is not None else "32-true"
        optimizer = None
        if precision.startswith(("32", "64")):
            try:
                optimizer = optimizer_class(groups, fused=True, **kwargs)
            except (RuntimeError, TypeError):
                optimizer = None
        if optimizer is None:
            optimizer = optimizer_class(groups, **kwargs)
        if cfg.schedule == "cosine":
            training_steps = self.trainer.max_steps if self.trainer.max_steps > 0 else 10_000
            scheduler = CosineWithWarmupLR(optimizer, training_steps, cfg.warmup_steps, cfg.min_lr_ratio)
        else:
            scheduler = ConstantWithWarmupLR(optimizer, cfg.warmup_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file and renames it into place (a kill mid-write leaves the previous
    checkpoint intact); loads with ``torch.load(weights_only=True)``."""

    def save_checkpoint(self, checkpoint: Dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        path = os.fspath(path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def load_checkpoint(self, path, map_location: Optional[Any] = None, weights_only: Optional[bool] = None):
        return torch.load(os.fspath(path), map_location=map_location or "cpu", weights_only=True)


def config_dict(config: Any) -> Dict[str, Any]:
    return asdict(config) if is_dataclass(config) else dict(config)
