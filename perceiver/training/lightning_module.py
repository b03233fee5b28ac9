"""The Lightning modules that train the tasks: :class:`LitTask` (optimizer, schedule, logging) and the built-in
tasks' ``LitCausalLanguageModel``, ``LitMaskedLanguageModel`` and ``LitClassifier``.

The callbacks that run a training are in :mod:`.callbacks` and :mod:`.progress`, the checkpoint writer in
:mod:`.checkpoint_io`. The models (``perceiver.tasks.clm`` etc.) do not import Lightning; this module does.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, is_dataclass
from typing import Any, Dict, Optional, Tuple, Union

import pytorch_lightning as pl
import torch

from perceiver.core.layers import CrossAttentionLayer, SelfAttentionLayer
from perceiver.tasks import clf, clm, mlm
from perceiver.training.config import OptimizerConfig
from perceiver.training.schedules import ConstantWithWarmupLR, CosineWithWarmupLR


class LitTask(pl.LightningModule):
    """Base of the Lightning modules: builds ``model_class(config)``, logs what ``step`` returns.

    Subclasses set ``task_name``, ``config_class``, ``model_class`` and implement ``compute(model, batch) -> dict``
    with ``loss`` and ``count`` (how many predictions the batch holds, the weight of its metrics); other entries are
    logged as ``val_<key>``. ``compute`` is static so that ``perceiver eval`` uses it on a loaded model.
    Hyperparameters are stored as plain dicts so that checkpoints load with ``torch.load(weights_only=True)``.
    """

    task_name: str = ""
    throughput_unit: str = "items/s"
    """What ``count`` counts, per second: the throughput shown while training and logged under this name."""
    config_class: type = type(None)
    model_class: type = type(None)
    fsdp_units: Tuple[type, ...] = (CrossAttentionLayer, SelfAttentionLayer)
    """Layer classes that ``--strategy fsdp`` shards as one unit each."""

    def __init__(
        self, config: Union[Dict[str, Any], Any], optimizer: Union[Dict[str, Any], OptimizerConfig, None] = None
    ):
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
        self.num_parameters = sum(p.numel() for p in self.model.parameters())
        """Counted before FSDP shards the parameters."""
        # FSDP flattens parameters before configure_optimizers runs: remember which ones are matrices
        self._param_dims = {name: p.dim() for name, p in self.named_parameters()}

    @classmethod
    def create(cls, config: Any, optimizer: Union[OptimizerConfig, Dict[str, Any], None] = None) -> "LitTask":
        return cls(config, optimizer)

    @staticmethod
    def compute(model: torch.nn.Module, batch) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def step(self, batch) -> Dict[str, torch.Tensor]:
        return self.compute(self.model, batch)

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
        self._val_totals: Dict[str, torch.Tensor] = {}
        if self.trainer.world_size > 1 and not getattr(self, "_val_sampler_checked", False):
            self._val_sampler_checked = True
            _warn_if_padded(self.trainer.val_dataloaders)

    def validation_step(self, batch, batch_idx):
        out = self.step(batch)
        count = torch.as_tensor(out.pop("count"), device=self.device).detach().float()
        for key, value in out.items():
            total = self._val_totals.get(key, 0.0)
            self._val_totals[key] = total + torch.as_tensor(value, device=self.device).detach().float() * count
        self._val_totals["count"] = self._val_totals.get("count", 0.0) + count

    def on_validation_epoch_end(self):
        """Log ``val_<key>`` = sum(value * count) / sum(count) over every batch of every rank: the same numbers as
        ``perceiver eval`` on the same data, on any number of devices."""
        totals = getattr(self, "_val_totals", {})
        if "count" not in totals:
            return
        keys = sorted(k for k in totals if k != "count") + ["count"]
        summed = self.trainer.strategy.reduce(torch.stack([totals[k] for k in keys]), reduce_op="sum")
        for key, value in zip(keys[:-1], summed[:-1]):
            # already global; sync_dist only averages equal values (and tells Lightning the value is global)
            self.log(f"val_{key}", value / summed[-1].clamp(min=1), prog_bar=key == "loss", sync_dist=True)
        self._val_totals = {}

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        checkpoint["perceiver_task"] = self.task_name

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
    """Trains a :class:`~perceiver.tasks.clm.CausalLanguageModel`: cross-entropy on the latent positions; logs
    loss and bits per byte. Batches are ``(labels, input_ids, pad_mask)`` with labels -100 where no prediction is
    wanted."""

    task_name = "clm"
    throughput_unit = "tok/s"
    config_class = clm.CausalLanguageModelConfig
    model_class = clm.CausalLanguageModel
    compute = staticmethod(clm.batch_metrics)


class LitMaskedLanguageModel(LitTask):
    """Trains a :class:`~perceiver.tasks.mlm.MaskedLanguageModel` on byte corpora; logs loss and masked-token
    accuracy (see :func:`perceiver.tasks.mlm.batch_metrics`)."""

    task_name = "mlm"
    throughput_unit = "tok/s"
    config_class = mlm.MaskedLanguageModelConfig
    model_class = mlm.MaskedLanguageModel
    compute = staticmethod(mlm.batch_metrics)


class LitClassifier(LitTask):
    """Trains a :class:`~perceiver.tasks.clf.Classifier`: cross-entropy, accuracy. With ``encoder_from`` the
    encoder starts from a trained model, and ``freeze_encoder`` keeps it fixed."""

    task_name = "clf"
    throughput_unit = "items/s"
    config_class = clf.ClassifierConfig
    model_class = clf.Classifier
    compute = staticmethod(clf.batch_metrics)

    def __init__(self, config, optimizer=None):
        super().__init__(config, optimizer)
        if self.model.config.encoder_from:
            clf.init_encoder_from(self.model, self.model.config.encoder_from)
        if self.model.config.freeze_encoder:
            clf.freeze_encoder(self.model)
