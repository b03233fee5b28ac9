"""Evaluate a trained model on a data set's validation split, without a Trainer."""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, Optional

import torch

from perceiver import registry


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
    lit_class = registry.resolve(registry.get("task", task).metadata["lightning"])
    model = model.to(device).eval()
    totals: Dict[str, float] = {}
    count = 0.0
    total = len(batches) if hasattr(batches, "__len__") else None
    if max_batches is not None and total is not None:
        total = min(total, max_batches)
    from rich.progress import track

    iterator = track(batches, description="evaluating", total=total, disable=not progress, transient=True)
    for index, batch in enumerate(iterator):
        if max_batches is not None and index >= max_batches:
            break
        batch = [item.to(device) if torch.is_tensor(item) else item for item in batch]
        out = lit_class.compute(model, batch)
        weight = float(out.pop("count"))
        count += weight
        for key, value in out.items():
            totals[key] = totals.get(key, 0.0) + float(value) * weight
    if count == 0:
        raise ValueError("the validation data produced no predictions")
    metrics = {key: value / count for key, value in totals.items()}
    if "bpb" in metrics or "bits_per_token" in metrics:
        metrics["perplexity"] = math.exp(metrics["loss"])
    metrics["predictions"] = count
    return metrics
