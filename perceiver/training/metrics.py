"""A task's metrics over many batches: the task's ``batch_metrics`` and their count-weighted means.

Validation (:class:`~perceiver.training.lightning_module.LitTask`) and ``perceiver eval``
(:func:`perceiver.training.evaluate.evaluate`) both aggregate with :class:`WeightedMeans`, so they report the same
numbers on the same data, for built-in and plugin tasks alike. No Lightning import.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric, SumMetric

from perceiver import registry

BatchMetrics = Callable[[nn.Module, Any], Dict[str, Tensor]]
"""``batch_metrics(model, batch) -> {"loss": ..., "count": ..., <other metrics>}``: scalar tensors; ``count`` is the
number of predictions in the batch (the weight of its metrics)."""


def task_metrics(task: str) -> BatchMetrics:
    """The ``batch_metrics`` function that task ``task`` registers (metadata ``metrics``)."""
    entry = registry.get("task", task)
    target = entry.metadata.get("metrics")
    if target is None:
        raise registry.RegistryError(
            f"task {task!r} registers no metrics function (metadata 'metrics'): it cannot be trained or evaluated"
        )
    return registry.resolve(target)


class WeightedMeans:
    """``sum(value * count) / sum(count)`` of every metric a task's ``batch_metrics`` returns, one torchmetrics
    ``MeanMetric`` (weighted by ``count``) per key. In a distributed run :meth:`compute` sums over all processes
    (every process must call it).

    The metrics keep the default ``nan_strategy``: it reads ``isnan(...).any()`` once per batch, but
    ``"disable"`` (which would not) also drops the weights in torchmetrics 1.9 (Lightning-AI/torchmetrics#3434).
    Accuracy is the count-weighted mean of each batch's accuracy, which equals torchmetrics' micro ``Accuracy``
    over all predictions (tests/test_lit_task.py checks it); using ``Accuracy`` here would need every task's
    ``batch_metrics`` to return its predictions instead of its accuracy.
    """

    def __init__(self, device: Any = "cpu"):
        self.device = torch.device(device)
        # float64 sums, as Python floats would be, except where the device has no float64
        self.dtype = torch.float32 if self.device.type == "mps" else torch.float64
        self.means: Dict[str, MeanMetric] = {}
        self.count = self._metric(SumMetric)

    def _metric(self, kind: type):
        metric = kind().to(self.device)
        metric.set_dtype(self.dtype)
        return metric

    def update(self, out: Dict[str, Any]) -> None:
        """Add one batch's ``batch_metrics`` output (not read on the host)."""
        count = torch.as_tensor(out["count"], device=self.device).detach().to(self.dtype)
        for key, value in out.items():
            if key == "count":
                continue
            if key not in self.means:
                self.means[key] = self._metric(MeanMetric)
            self.means[key].update(torch.as_tensor(value, device=self.device).detach().to(self.dtype), weight=count)
        self.count.update(count)

    def compute(self) -> Dict[str, Tensor]:
        """The weighted mean of each metric (0 where no batch held a prediction) and ``count``, their total weight."""
        count = self.count.compute()
        means = {key: metric.compute() if count > 0 else torch.zeros((), device=self.device)
                 for key, metric in sorted(self.means.items())}
        return {**means, "count": count}
