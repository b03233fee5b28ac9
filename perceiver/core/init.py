"""Weight initialisation of the Perceiver blocks (in the manner of ``torch.nn.init``)."""

from __future__ import annotations

from torch import nn


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
