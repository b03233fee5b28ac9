"""Optimizer and trainer options (plain dataclasses; no torch or Lightning import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from perceiver.config_checks import check_ranges


@dataclass
class OptimizerConfig:
    optimizer: str = "adamw"
    """adam or adamw."""
    lr: float = 2e-4
    """Peak learning rate, reached after warmup_steps."""
    weight_decay: float = 0.01
    """Decoupled weight decay (adamw) on matrices; biases and norms are not decayed."""
    beta1: float = 0.9
    """Adam's first-moment decay."""
    beta2: float = 0.999
    """Adam's second-moment decay."""
    warmup_steps: int = 200
    """Optimizer steps of linear warmup from 0 to lr."""
    schedule: str = "cosine"
    """cosine (decay to min_lr_ratio * lr after warmup) or constant (after warmup)."""
    min_lr_ratio: float = 0.1
    """Final learning rate of the cosine schedule, as a fraction of lr."""

    def __post_init__(self):
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be adam or adamw, got {self.optimizer!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be cosine or constant, got {self.schedule!r}")
        check_ranges(
            self,
            {"lr": "> 0", "weight_decay": ">= 0", "beta1": "[0, 1)", "beta2": "[0, 1)", "warmup_steps": ">= 0",
             "min_lr_ratio": "[0, 1]"},
        )


@dataclass
class TrainerConfig:
    output_dir: str = "runs/train"
    """Checkpoints, logs and the exported model (output_dir/model) go here."""
    max_steps: int = 1000
    """Optimizer steps to train for (the run's total, also when resumed)."""
    val_check_interval: int = 200
    """Validate every this many training steps."""
    checkpoint_every: int = 0
    """Rewrite checkpoints/last.ckpt every this many training steps (0: every val_check_interval steps)."""
    checkpoint_every_minutes: float = 2.0
    """Also rewrite it after this many minutes of training since the last time (0: by steps only). A hard kill
    (kill -9, power loss) loses at most this much; Ctrl-C and SIGTERM save the current step."""
    limit_val_batches: int = 50
    """Validation batches per validation run (0 = all)."""
    accumulate_grad_batches: int = 1
    """Sum the gradients of this many batches per optimizer step (global batch: batch_size x devices x nodes x this)."""
    gradient_clip: Optional[float] = 1.0
    """Clip the gradient norm to this value (none: no clipping)."""
    accelerator: str = "auto"
    """auto, cpu, gpu (cuda) or another Lightning accelerator."""
    devices: str = "auto"
    """Devices (processes) per machine: a number, auto (all GPUs, else 1 CPU process) or GPU ids like 0,1."""
    num_nodes: int = 1
    """Machines in the run (see docs/distributed.md for torchrun and SLURM)."""
    strategy: str = "auto"
    """auto (DDP for several devices), ddp, or fsdp (shards parameters, gradients and optimizer state; CUDA only)."""
    precision: str = "32"
    """32, bf16-mixed (CPU or recent GPUs) or 16-mixed (CUDA, with loss scaling)."""
    distributed_timeout: int = 1800
    """Seconds a process waits for the others (start-up, collectives) before it gives up."""
    seed: int = 0
    """Random seed of initialisation, data order and dropout."""
    log_every_n_steps: int = 10
    """Write metrics to the log (and print a progress line, when not on a terminal) every this many steps."""
    logger: str = "csv"
    """csv (logs/metrics.csv) or tensorboard (logs/); a resumed run continues the same log."""
    compile: bool = False
    """torch.compile the model."""
    progress: bool = True
    """A live progress bar when stderr is a terminal; otherwise, and with --no-progress, plain lines."""
    init_from: Optional[str] = None
    """Start from the weights of this model (an export, run, .ckpt, Hub repo id, krasserm or DeepMind model of the
    same task), keeping its architecture and tokenizer (see docs/hub.md)."""
    lora_r: int = 0
    """LoRA rank: train only low-rank adapters of the --init-from model's linear layers (0: train every weight)."""
    lora_alpha: float = 16.0
    """LoRA scale numerator: the adapter's update is multiplied by lora_alpha / lora_r."""
    lora_targets: str = "q,k,v,o,mlp"
    """Linear layers that get LoRA adapters: q, k, v, o (attention projections), mlp (fc1, fc2), or layer names."""

    def __post_init__(self):
        check_ranges(
            self,
            {"max_steps": ">= 1", "val_check_interval": ">= 1", "limit_val_batches": ">= 0",
             "accumulate_grad_batches": ">= 1", "gradient_clip": ">= 0", "num_nodes": ">= 1",
             "distributed_timeout": ">= 1", "seed": f"[0, {MAX_SEED}]", "log_every_n_steps": ">= 1",
             "checkpoint_every": ">= 0", "checkpoint_every_minutes": ">= 0", "lora_r": ">= 0", "lora_alpha": "> 0"},
        )
        if self.logger not in ("csv", "tensorboard"):
            raise ValueError(f"logger must be csv or tensorboard, got {self.logger!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if str(self.precision) not in PRECISIONS:
            raise ValueError(f"precision must be 32, bf16-mixed or 16-mixed, got {self.precision!r}")
        self.precision = str(self.precision)
        self.devices = str(self.devices).strip()
        if not _valid_devices(self.devices):
            raise ValueError(f"devices must be a number, auto, -1 (all) or GPU ids like 0,1; got {self.devices!r}")


MAX_SEED = 2**32 - 1
"""Largest seed Lightning's seed_everything takes (it replaces larger ones by a random seed)."""
STRATEGIES = ("auto", "ddp", "fsdp")
PRECISIONS = {"32": "32-true", "32-true": "32-true", "bf16-mixed": "bf16-mixed", "16-mixed": "16-mixed"}
"""Accepted --precision values -> Lightning's names."""


def _valid_devices(devices: str) -> bool:
    if devices in ("auto", "-1") or (devices.isdigit() and int(devices) >= 1):
        return True
    ids = [part.strip() for part in devices.split(",") if part.strip()]  # "0,1" or "1," (Lightning's GPU ids)
    return "," in devices and bool(ids) and all(part.isdigit() for part in ids)
