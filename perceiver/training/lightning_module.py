"""The one Lightning module that trains every registered task, :class:`LitTask`, and its named specialisations for
the built-in tasks (``LitCausalLanguageModel``, ``LitMaskedLanguageModel``, ``LitClassifier``).

A task's registration says everything training needs (metadata; see docs/plugins.md): ``metrics``, its
``batch_metrics(model, batch) -> {"loss", "count", ...}`` (the loss is optimised, everything is logged), and
optionally ``prepare`` (called with the new model before training, e.g. to load or freeze an encoder),
``throughput_unit`` (what ``count`` counts, per second) and ``fsdp_units``. ``perceiver eval`` uses the same
``metrics`` without Lightning (:mod:`.evaluate`).

The callbacks that run a training are in :mod:`.callbacks` and :mod:`.progress`, the checkpoint writer in
:mod:`.checkpoint_io`. The models (``perceiver.tasks.clm`` etc.) do not import Lightning; this module does.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, is_dataclass
from typing import Any, Dict, Optional, Tuple, Union

import pytorch_lightning as pl
import torch

from perceiver import registry
from perceiver.core.layers import CrossAttentionLayer, SelfAttentionLayer
from perceiver.training.config import OptimizerConfig
from perceiver.training.metrics import WeightedMeans, task_metrics
from perceiver.training.schedules import ConstantWithWarmupLR, CosineWithWarmupLR


class LitTask(pl.LightningModule):
    """Trains the model of any registered task: ``LitTask(config, task="clm")``.

    ``config`` is the task's config dataclass (or a dict of its fields); ``optimizer`` an
    :class:`~perceiver.training.config.OptimizerConfig` (or a dict). Validation logs ``val_<key>`` for every
    ``batch_metrics`` key, weighted by ``count``. Hyperparameters are stored as plain dicts (task, config,
    optimizer), so that checkpoints load with ``torch.load(weights_only=True)`` and ``LitTask.load_from_checkpoint``
    rebuilds the module.
    """

    task_name: Optional[str] = None
    """The task of a named specialisation (``LitCausalLanguageModel``: ``"clm"``); None for the generic module."""
    fsdp_units: Tuple[type, ...] = (CrossAttentionLayer, SelfAttentionLayer)
    """Layer classes that ``--strategy fsdp`` shards as one unit each (a task may register its own)."""

    def __init__(
        self,
        config: Union[Dict[str, Any], Any],
        optimizer: Union[Dict[str, Any], OptimizerConfig, None] = None,
        task: Optional[str] = None,
    ):
        super().__init__()
        task = self._check_task(task)
        entry = registry.get("task", task)
        config_class = entry.config_class()
        if not isinstance(config, config_class):
            config = config_class(**config)
        if optimizer is None:
            optimizer = OptimizerConfig()
        elif not isinstance(optimizer, OptimizerConfig):
            optimizer = OptimizerConfig(**optimizer)
        self.save_hyperparameters({"task": task, "config": asdict(config), "optimizer": asdict(optimizer)})
        self.task = task
        self.batch_metrics = task_metrics(task)
        self.throughput_unit: str = entry.metadata.get("throughput_unit", "items/s")
        """What ``count`` counts, per second: the throughput shown while training and logged under this name."""
        if "fsdp_units" in entry.metadata:
            self.fsdp_units = tuple(registry.resolve(unit) for unit in entry.metadata["fsdp_units"])
        self.optimizer_config = optimizer
        self.model = entry.load()(config)
        if entry.metadata.get("prepare"):
            registry.resolve(entry.metadata["prepare"])(self.model)
        self.num_parameters = sum(p.numel() for p in self.model.parameters())
        """Counted before FSDP shards the parameters."""
        # FSDP flattens parameters before configure_optimizers runs: remember which ones are matrices
        self._param_dims = {name: p.dim() for name, p in self.named_parameters()}

    @classmethod
    def _check_task(cls, task: Optional[str]) -> str:
        if cls.task_name is not None and task not in (None, cls.task_name):
            raise ValueError(f"{cls.__name__} trains task {cls.task_name!r}, not {task!r}: use LitTask(config, "
                             f"task={task!r})")
        task = task or cls.task_name
        if task is None:
            raise TypeError("LitTask needs the task to train: LitTask(config, task=NAME)")
        return task

    @classmethod
    def create(cls, config: Any, optimizer: Union[OptimizerConfig, Dict[str, Any], None] = None,
               task: Optional[str] = None) -> "LitTask":
        return cls(config, optimizer, task=task)

    def step(self, batch) -> Dict[str, torch.Tensor]:
        return self.batch_metrics(self.model, batch)

    def training_step(self, batch, batch_idx):
        """Returns ``loss`` and ``count`` (a tensor, never read here: the progress callback sums it on the device).
        ``train_loss`` is logged on logging steps only, as the mean over ranks: no host sync or all-reduce on the
        other steps."""
        out = self.step(batch)
        if self._logging_step():
            loss = out["loss"].detach()
            if self.trainer.world_size > 1:
                loss = self.trainer.strategy.reduce(loss, reduce_op="mean")
            self.log("train_loss", loss, prog_bar=True, batch_size=_batch_size(batch))
        return {"loss": out["loss"], "count": torch.as_tensor(out["count"]).detach()}

    def _logging_step(self) -> bool:
        """Whether Lightning writes this batch's step metrics (every ``log_every_n_steps`` optimizer steps)."""
        every = self.trainer.log_every_n_steps
        return every > 0 and (self.trainer.global_step + 1) % every == 0

    def on_validation_epoch_start(self):
        self._val_means = WeightedMeans(self.device)
        if self.trainer.world_size > 1 and not getattr(self, "_val_sampler_checked", False):
            self._val_sampler_checked = True
            _warn_if_padded(self.trainer.val_dataloaders)

    def validation_step(self, batch, batch_idx):
        self._val_means.update(self.step(batch))

    def on_validation_epoch_end(self):
        """Log ``val_<key>`` = sum(value * count) / sum(count) over every batch of every rank: the same numbers as
        ``perceiver eval`` on the same data, on any number of devices."""
        means = getattr(self, "_val_means", None)
        if means is None or not means.means:
            return
        metrics = means.compute()  # already global (summed over ranks)
        if metrics.pop("count") > 0:
            for key, value in metrics.items():
                # sync_dist only averages equal values (and tells Lightning the value is global)
                self.log(f"val_{key}", value.float(), prog_bar=key == "loss", sync_dist=True)
        self._val_means = None

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        checkpoint["perceiver_task"] = self.task

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """On resume, before Lightning restores the optimizer and schedule: this run's optimizer options (which
        ``--allow-change`` may have changed) replace the checkpoint's; the moments and the step count stay."""
        cfg = self.optimizer_config
        decay = cfg.weight_decay if cfg.optimizer == "adamw" else 0.0
        for state in checkpoint.get("optimizer_states", []):
            for index, group in enumerate(state.get("param_groups", [])):
                base = group.get("initial_lr") or cfg.lr
                group["lr"] = group.get("lr", base) * cfg.lr / base  # the schedule's current factor, new base
                group["initial_lr"] = cfg.lr
                group["betas"] = (cfg.beta1, cfg.beta2)
                group["weight_decay"] = decay if index == 0 else 0.0  # the groups of configure_optimizers
        for scheduler in checkpoint.get("lr_schedulers", []):
            if "base_lrs" in scheduler:
                scheduler["base_lrs"] = [cfg.lr] * len(scheduler["base_lrs"])

    def configure_optimizers(self):
        cfg = self.optimizer_config
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (decay if self._param_dims.get(_unwrapped_name(name), p.dim()) >= 2 else no_decay).append(p)
        # the names label the learning rate in the logs (lr/decay, lr/no_decay: the same value)
        groups = [
            {"params": decay, "weight_decay": cfg.weight_decay, "name": "decay"},
            {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
        ]
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
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1, "name": "lr"},
        }


def _warn_if_padded(loaders) -> None:
    """Lightning's DistributedSampler repeats items so that every rank gets as many: say so (on rank 0)."""
    from torch.utils.data import DataLoader, DistributedSampler

    for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
        sampler = getattr(loader, "sampler", None) if isinstance(loader, DataLoader) else None
        if type(sampler) is DistributedSampler and sampler.total_size > len(sampler.dataset) and sampler.rank == 0:
            warnings.warn(
                f"validation counts {sampler.total_size - len(sampler.dataset)} item(s) twice to give every rank the "
                "same number; build the val loader with perceiver.data.distributed.evaluation_loader for exact metrics"
            )


def _unwrapped_name(name: str) -> str:
    """A parameter's name without the wrapper modules that FSDP and torch.compile insert."""
    for wrapper in ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod."):
        name = name.replace(wrapper, "")
    return name


def _batch_size(batch) -> Optional[int]:
    """Rows of the first tensor in a batch (tuple, list, dict or tensor), so that Lightning does not guess."""
    if isinstance(batch, dict):
        batch = list(batch.values())
    for item in batch if isinstance(batch, (tuple, list)) else [batch]:
        if torch.is_tensor(item) and item.dim() > 0:
            return item.shape[0]
    return None


def config_dict(config: Any) -> Dict[str, Any]:
    return asdict(config) if is_dataclass(config) else dict(config)


class LitCausalLanguageModel(LitTask):
    """:class:`LitTask` of the ``clm`` task (:class:`~perceiver.tasks.clm.CausalLanguageModel`): loss and bits per
    byte of next-token prediction on the latent positions."""

    task_name = "clm"


class LitMaskedLanguageModel(LitTask):
    """:class:`LitTask` of the ``mlm`` task (:class:`~perceiver.tasks.mlm.MaskedLanguageModel`): loss and accuracy
    on the masked tokens."""

    task_name = "mlm"


class LitClassifier(LitTask):
    """:class:`LitTask` of the ``clf`` task (:class:`~perceiver.tasks.clf.Classifier`): loss and accuracy. With
    ``encoder_from`` the encoder starts from a trained model, and ``freeze_encoder`` keeps it fixed."""

    task_name = "clf"
