"""What every task shares: config errors, weight initialisation, and the lazy name of its Lightning module."""

from __future__ import annotations

import importlib
from typing import Any, Callable

from torch import nn


class ConfigError(ValueError):
    """An invalid combination of configuration values."""


def init_parameters(module: nn.Module, init_scale: float = 0.02) -> None:
    """Normal(0, init_scale) for linear and embedding weights, zeros for biases, ones/zeros for LayerNorm."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.normal_(sub.weight, std=init_scale)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.Embedding):
            nn.init.normal_(sub.weight, std=init_scale)
        elif isinstance(sub, nn.LayerNorm):
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)


def lightning_module_getattr(module_name: str, class_name: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` that resolves ``class_name`` from ``perceiver.tasks.lightning`` on first use, so that a
    task module offers its ``Lit*`` class without importing Lightning with the model."""

    def __getattr__(name: str) -> Any:
        if name == class_name:
            return getattr(importlib.import_module("perceiver.tasks.lightning"), class_name)
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    return __getattr__
