"""A toy plugin task for the tests of the generic Lightning module and of ``perceiver eval``: a lookup table that
learns ``label = (token + 1) % num_classes``. Registers like any plugin (``TASK_PLUGIN``); imports no Lightning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from perceiver import hookimpl


@dataclass
class ToyTaskConfig:
    num_classes: int = 4
    """Tokens and classes."""
    hidden: int = 8
    """Width of the embedding."""


class ToyModel(nn.Module):
    def __init__(self, config: ToyTaskConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.num_classes, config.hidden)
        self.head = nn.Linear(config.hidden, config.num_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        """(B,) tokens -> (B, num_classes) logits."""
        return self.head(self.embedding(tokens))


def toy_metrics(model: ToyModel, batch) -> Dict[str, Tensor]:
    """Loss and accuracy of a batch ``(labels (B,), tokens (B,))``."""
    labels, tokens = batch
    logits = model(tokens)
    return {
        "loss": F.cross_entropy(logits, labels),
        "accuracy": (logits.argmax(-1) == labels).float().mean(),
        "count": torch.tensor(labels.numel()),
    }


def toy_batches(num_items: int, batch_size: int, num_classes: int = 4) -> DataLoader:
    """``(labels, tokens)`` batches of a fixed order; the last one is smaller when ``batch_size`` does not divide."""
    tokens = torch.arange(num_items) % num_classes
    return DataLoader(TensorDataset((tokens + 1) % num_classes, tokens), batch_size=batch_size)


class TaskPlugin:
    @hookimpl
    def register_tasks(self, register):
        register("toy-lookup", ToyModel, config=ToyTaskConfig, description="A toy lookup task",
                 metrics=toy_metrics, throughput_unit="lookups/s", inputs=("tokens",), batches=("labelled",))


TASK_PLUGIN = TaskPlugin()
