"""The one weight initialisation of every Perceiver model."""

from __future__ import annotations

from torch import nn


def init_parameters(module: nn.Module, init_scale: float = 0.02) -> None:
    """Normal(0, init_scale) for the weights of every linear and embedding layer inside ``module``, zeros for their
    biases, ones and zeros for LayerNorm. Other parameters (the trainable queries of a query provider) keep the
    initialisation their module gave them."""
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Embedding)):
            nn.init.normal_(sub.weight, std=init_scale)
            if getattr(sub, "bias", None) is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.LayerNorm):
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)
