"""Optimizer and trainer options (plain dataclasses; no torch or Lightning import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class OptimizerConfig:
    optimizer: str = "adamw"
    """adam or adamw."""
    lr: float = 2e-4
    weight_decay: float = 0.01
    """Decoupled weight decay (adamw) on matrices; biases and norms are not decayed."""
    beta1: float = 0.9
    beta2: float = 0.999
    warmup_steps: int = 200
    schedule: str = "cosine"
    """cosine (decay to min_lr_ratio * lr after warmup) or constant (after warmup)."""
    min_lr_ratio: float = 0.1

    def __post_init__(self):
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be adam or adamw, got {self.optimizer!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be cosine or constant, got {self.schedule!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")


@dataclass
class TrainerConfig:
    output_dir: str = "runs/train"
    """Checkpoints, logs and the exported model (output_dir/model) go here."""
    max_steps: int = 1000
    val_check_interval: int = 200
    """Validate (and checkpoint) every this many training steps."""
    limit_val_batches: int = 50
    """Validation batches per validation run (0 = all)."""
    accumulate_grad_batches: int = 1
    gradient_clip: Optional[float] = 1.0
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    seed: int = 0
    log_every_n_steps: int = 10
    logger: str = "csv"
    """csv or tensorboard."""
    compile: bool = False
    """torch.compile the model."""
    progress: bool = True

    def __post_init__(self):
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.val_check_interval < 1:
            raise ValueError(f"val_check_interval must be >= 1, got {self.val_check_interval}")
        if self.accumulate_grad_batches < 1:
            raise ValueError(f"accumulate_grad_batches must be >= 1, got {self.accumulate_grad_batches}")
        if self.logger not in ("csv", "tensorboard"):
            raise ValueError(f"logger must be csv or tensorboard, got {self.logger!r}")
