"""Evaluate a trained model on a data set's validation split, without Lightning: the task's registered
``batch_metrics``, aggregated as validation aggregates them (:class:`~perceiver.training.metrics.WeightedMeans`)."""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, Optional

import torch

from perceiver.training.metrics import WeightedMeans, task_metrics


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: Iterable[Any],
    task: str,
    max_batches: Optional[int] = None,
    device: str = "cpu",
    progress: bool = True,
) -> Dict[str, float]:
    """Metrics of ``model`` over ``batches``, each weighted by the number of predictions in its batch.

    Adds ``perplexity`` = exp(loss) for causal language models (per byte for byte-level models, else per token).
    """
    batch_metrics = task_metrics(task)
    model = model.to(device).eval()
    means = WeightedMeans(device)
    total = len(batches) if hasattr(batches, "__len__") else None
    if max_batches is not None and total is not None:
        total = min(total, max_batches)
    from rich.progress import track

    iterator = track(batches, description="evaluating", total=total, disable=not progress, transient=True)
    for index, batch in enumerate(iterator):
        if max_batches is not None and index >= max_batches:
            break
        batch = [item.to(device) if torch.is_tensor(item) else item for item in batch]
        means.update(batch_metrics(model, batch))
    metrics = {key: float(value) for key, value in means.compute().items()}
    count = metrics.pop("count")
    if count == 0:
        raise ValueError("the validation data produced no predictions")
    if "bpb" in metrics or "bits_per_token" in metrics:
        metrics["perplexity"] = math.exp(metrics["loss"])
    metrics["predictions"] = count
    return metrics
