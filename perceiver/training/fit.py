"""Run a :class:`~perceiver.training.plan.TrainPlan` with the Lightning Trainer, on one device or many.

Layout of ``output_dir``: ``checkpoints/last.ckpt`` (rewritten atomically every ``checkpoint_every`` steps or
``val_check_interval`` steps, every ``checkpoint_every_minutes``, on Ctrl-C or SIGTERM, and at the end), ``logs/``
(one CSV or TensorBoard log for the run, continued by ``--resume``) and, at the end, ``model/`` (``config.json`` +
``model.safetensors``).

Scaling out is Lightning's: ``strategy`` ddp or fsdp, ``devices`` processes per machine, ``num_nodes`` machines
(docs/distributed.md). Requests that cannot work here (more devices than exist, FSDP or 16-mixed without CUDA)
fail before any process starts. In a distributed run only rank 0 writes checkpoints and the exported model; both
hold full, unsharded weights, so they load on any number of devices.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytorch_lightning as pl
import torch

from perceiver import registry
from perceiver.checkpoint import load_model, save_model
from perceiver.training import lora
from perceiver.training.callbacks import LoggedStepsFollowGlobalStep, SeedEveryStep, StepCheckpoint, StopOnSignal
from perceiver.training.checkpoint_io import AtomicCheckpointIO
from perceiver.training.config import PRECISIONS, TrainerConfig
from perceiver.training.init_from import load_initial_weights
from perceiver.training.lightning_module import LitTask
from perceiver.training.logs import run_logger
from perceiver.training.plan import RUN_FILE, PlanError, TrainPlan, changed_model_fields
from perceiver.training.signals import TrainingInterrupted

LAST_CHECKPOINT = "last.ckpt"


class ResumeError(PlanError):
    """A run that cannot be resumed, or would overwrite an earlier run."""


class DeviceError(PlanError):
    """Devices, strategy or precision that this machine cannot provide."""


def checkpoint_dir(output_dir) -> Path:
    return Path(output_dir) / "checkpoints"


RUN_ENTRIES = ("checkpoints", "logs", "model", "curves.png", "tokenizer", RUN_FILE)
"""What a training run writes into its output directory; a directory holding anything else is not a run."""


def check_output_dir(output_dir) -> None:
    """Refuse to train into a directory with content that is not a training run's, and check its ``model/`` early:
    training writes only the entries of :data:`RUN_ENTRIES` and never deletes a file it did not write."""
    from perceiver.checkpoint import check_export_target

    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ResumeError(f"--output-dir {out} is a file; choose a directory")
    foreign = sorted(name for name in (os.listdir(out) if out.exists() else []) if name not in RUN_ENTRIES)
    if foreign:
        raise ResumeError(
            f"{out} is not empty and is not a perceiver training run (it holds {foreign[0]}); "
            "choose another --output-dir"
        )
    check_export_target(out / "model", overwrite=True)


def _resume_path(plan: TrainPlan) -> Optional[str]:
    check_output_dir(plan.trainer_config.output_dir)
    last = checkpoint_dir(plan.trainer_config.output_dir) / LAST_CHECKPOINT
    if plan.resume:
        if not last.exists():
            raise ResumeError(f"nothing to resume: {last} does not exist")
        checkpoint = torch.load(last, map_location="cpu", weights_only=True, mmap=True)  # every rank reads it
        saved = checkpoint.get("hyper_parameters", {}).get("config", {})
        current = asdict(plan.model_config)
        vetted = {"activation_checkpointing"} | changed_model_fields(plan)  # --allow-change
        differ = sorted(k for k in current if k in saved and saved[k] != current[k] and k not in vetted)
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


def _checkpoint_step(path: Optional[str]) -> Optional[int]:
    if path is None:
        return None
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("global_step", 0))


def _callbacks(plan: TrainPlan, unit: str = "items/s") -> List[pl.Callback]:
    from pytorch_lightning.callbacks import LearningRateMonitor

    from perceiver.training.progress import TrainingProgress

    cfg = plan.trainer_config
    every = dict(dirpath=checkpoint_dir(cfg.output_dir), save_last=True, save_top_k=0, enable_version_counter=False)
    callbacks: List[pl.Callback] = [
        StepCheckpoint(every_n_train_steps=cfg.checkpoint_every or cfg.val_check_interval, **every)
    ]
    if cfg.checkpoint_every_minutes > 0:  # Lightning wants one ModelCheckpoint per kind of interval
        callbacks.append(StepCheckpoint(train_time_interval=timedelta(minutes=cfg.checkpoint_every_minutes), **every))
    callbacks += [LoggedStepsFollowGlobalStep(), LearningRateMonitor(logging_interval="step")]
    live = cfg.progress and sys.stderr.isatty()
    callbacks.append(TrainingProgress(live=live, every=cfg.log_every_n_steps, unit=unit))
    callbacks.append(SeedEveryStep(cfg.seed))
    return callbacks


def check_devices(cfg: TrainerConfig) -> Tuple[str, int]:
    """The device kind (cuda, cpu, or another accelerator name) and the number of processes per machine that ``cfg``
    asks for; raises :class:`DeviceError` with one line when this machine cannot provide them."""
    accelerator = cfg.accelerator.lower()
    cuda = torch.cuda.is_available()
    if accelerator in ("gpu", "cuda") and not cuda:
        raise DeviceError(f"--accelerator {cfg.accelerator} needs a CUDA GPU, and torch sees none")
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and cuda):
        kind, available, unit = "cuda", torch.cuda.device_count(), "CUDA GPU(s)"
    elif accelerator in ("cpu", "auto"):
        kind, available, unit = "cpu", os.cpu_count() or 1, "CPU core(s), and each device is one process"
    else:
        return accelerator, 1  # other accelerators (mps, tpu, ...): Lightning checks them
    devices = cfg.devices
    if devices == "auto":
        count = available if kind == "cuda" else 1
    elif devices == "-1":
        count = available
    elif "," in devices:
        ids = [int(part) for part in devices.split(",") if part.strip()]
        if kind != "cuda":
            raise DeviceError(f"--devices {devices} lists GPU ids, but the run is on {kind}: give a number of devices")
        if max(ids) >= available:
            raise DeviceError(f"--devices {devices} names GPU {max(ids)}, but this machine has {available} {unit}")
        count = len(ids)
    else:
        count = int(devices)
    if count > available:
        raise DeviceError(f"--devices {devices} asks for {count} devices, but this machine has {available} {unit}")
    _check_launcher(count, cfg.num_nodes)
    if cfg.strategy == "fsdp" and kind != "cuda":
        raise DeviceError(
            "--strategy fsdp needs CUDA GPUs (Lightning's FSDP does not run on CPU); "
            "use --strategy ddp, which runs on CPU with the gloo backend"
        )
    if cfg.precision == "16-mixed" and kind != "cuda":
        raise DeviceError("--precision 16-mixed needs a CUDA GPU; on CPU use --precision bf16-mixed or 32")
    if cfg.precision == "bf16-mixed" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError("this GPU does not support bfloat16: use --precision 16-mixed or 32")
    return kind, count


def _check_launcher(devices: int, num_nodes: int) -> None:
    """Processes started by torchrun or SLURM must be the run's processes: with other numbers each would train
    alone, all into the same output directory."""
    env = os.environ
    if "LOCAL_WORLD_SIZE" in env and "WORLD_SIZE" in env:
        launcher, per_node, world = "torchrun", int(env["LOCAL_WORLD_SIZE"]), int(env["WORLD_SIZE"])
    elif int(env.get("SLURM_NTASKS", "1") or 1) > 1 and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        world = int(env["SLURM_NTASKS"])
        per_node = int((env.get("SLURM_NTASKS_PER_NODE") or str(world)).split("(")[0])
        launcher = "SLURM"
    else:
        return
    if devices != per_node or devices * num_nodes != world:
        raise DeviceError(
            f"{launcher} started {per_node} process(es) per machine, {world} in all, but the run has --devices "
            f"{devices} and --num-nodes {num_nodes}: pass --devices {per_node} --num-nodes {max(1, world // per_node)}"
        )


def build_strategy(cfg: TrainerConfig, num_devices: int, fsdp_units: Sequence[type] = LitTask.fsdp_units):
    """Lightning's DDP or FSDP strategy with our timeout; FSDP shards every ``fsdp_units`` layer (our attention
    layers) as one unit and gathers full weights into rank 0's checkpoints. ``auto`` is DDP for several processes."""
    strategy = cfg.strategy
    if strategy == "auto" and num_devices * cfg.num_nodes > 1:
        strategy = "ddp"
    timeout = timedelta(seconds=cfg.distributed_timeout)
    if strategy == "ddp":
        from pytorch_lightning.strategies import DDPStrategy

        return DDPStrategy(timeout=timeout)
    if strategy == "fsdp":
        from pytorch_lightning.strategies import FSDPStrategy

        return FSDPStrategy(
            auto_wrap_policy=fsdp_wrap_policy(fsdp_units), state_dict_type="full", use_orig_params=True, timeout=timeout
        )
    return "auto"


def fsdp_wrap_policy(units: Sequence[type] = LitTask.fsdp_units):
    """FSDP's auto-wrap policy that makes every instance of ``units`` one FSDP unit (all-gathered one at a time)."""
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    return ModuleWrapPolicy(set(units))


def build_trainer(
    plan: TrainPlan, callbacks: Optional[Sequence[pl.Callback]] = None, fsdp_units: Optional[Sequence[type]] = None,
    resume_step: Optional[int] = None, throughput_unit: str = "items/s", **overrides: Any,
) -> pl.Trainer:
    cfg = plan.trainer_config
    _, num_devices = check_devices(cfg)
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
        strategy=build_strategy(cfg, num_devices, fsdp_units or LitTask.fsdp_units),
        precision=PRECISIONS[cfg.precision],
        log_every_n_steps=cfg.log_every_n_steps,
        logger=run_logger(cfg.logger, cfg.output_dir, resume_step),
        callbacks=_callbacks(plan, throughput_unit) + list(callbacks or []),
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=True,  # TrainingProgress: a live bar or plain lines
        enable_model_summary=False,  # TrainingProgress prints the parameter count
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


def fit(plan: TrainPlan, callbacks: Optional[Sequence[pl.Callback]] = None) -> Dict[str, Any]:
    """Train, checkpoint and export; returns final metrics and paths (``is_global_zero`` is False on the other
    ranks of a distributed run). ``callbacks``: extra Lightning callbacks.

    Ctrl-C or SIGTERM: the step under way finishes, ``last.ckpt`` is saved at that step and
    :class:`~perceiver.training.signals.TrainingInterrupted` is raised (no export); ``--resume`` continues from there
    as if nothing had happened (same data, same random numbers)."""
    _quiet_lightning()
    cfg = plan.trainer_config
    check_devices(cfg)  # before anything slow
    resume_from = _resume_path(plan)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = registry.get("dataset", plan.dataset).load()(plan.data_config)
    lit = LitTask(plan.model_config, plan.optimizer_config, task=plan.task)
    if cfg.init_from and resume_from is None:  # a resumed run's checkpoint holds its weights
        load_initial_weights(lit.model, cfg.init_from)
    if cfg.lora_r:  # only the adapters train (a resumed run's checkpoint holds them, and the base weights)
        lit.model = lora.wrap(lit.model, cfg)
        lit.num_parameters = sum(p.numel() for p in lit.model.parameters() if p.requires_grad)
    if cfg.compile:
        lit.model.compile()  # in place: parameter names, and so checkpoints, stay those of the eager model
    last = checkpoint_dir(cfg.output_dir) / LAST_CHECKPOINT
    stop = StopOnSignal(str(last))
    trainer = build_trainer(
        plan, callbacks=[stop, *(callbacks or [])], fsdp_units=lit.fsdp_units,
        resume_step=_checkpoint_step(resume_from), throughput_unit=lit.throughput_unit,
    )
    stop.install()
    try:
        try:
            trainer.fit(lit, datamodule=datamodule, ckpt_path=resume_from)
        except TrainingInterrupted as interrupted:
            interrupted.step = trainer.global_step
            interrupted.report = trainer.is_global_zero
            raise
        trainer.save_checkpoint(last, weights_only=False)  # every rank takes part (FSDP gathers); rank 0 writes
        export_dir = Path(cfg.output_dir) / "model"
        if trainer.is_global_zero and cfg.lora_r:  # the adapter alone; load_model merges it into its base
            lora.save_adapter(lit.model, export_dir, tokenizer=getattr(datamodule, "tokenizer", None))
        elif trainer.is_global_zero:  # from the checkpoint: full weights even when the live model is sharded
            from perceiver.model_card import model_card

            model, tokenizer = load_model(last), getattr(datamodule, "tokenizer", None)
            card = model_card(model, source=export_dir, name=Path(cfg.output_dir).name, tokenizer=tokenizer)
            save_model(model, export_dir, task=plan.task, overwrite=True, tokenizer=tokenizer,  # the run's own export
                       card=card)
    finally:
        stop.restore()
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    return {
        "metrics": metrics, "model_dir": str(export_dir), "step": trainer.global_step,
        "is_global_zero": trainer.is_global_zero,
    }
