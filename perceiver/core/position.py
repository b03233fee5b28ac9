"""Position information: positions under left padding, rotary angles and Fourier features."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from perceiver.core.attention import Rotary


def positions(pad_mask: Optional[Tensor], batch_size: int, length: int, device=None) -> Tensor:
    """Absolute positions (B, N) of a left-padded batch: the first real token of every row is position 0.

    Padding positions get position 0 too (their embeddings are never attended to).
    """
    if pad_mask is None:
        return torch.arange(length, device=device).expand(batch_size, length)
    return ((~pad_mask).cumsum(dim=1) - 1).clamp(min=0)


class RotaryEmbedding(nn.Module):
    """Rotary angles for ``num_channels`` channels of each head (must be even); ``forward(positions)`` -> (cos, sin).

    Frequencies follow the usual geometric progression ``base ** (-2i / num_channels)``.
    """

    def __init__(self, num_channels: int, base: float = 10000.0):
        super().__init__()
        if num_channels % 2:
            raise ValueError(f"rotary channels must be even, got {num_channels}")
        inv_freq = base ** (-torch.arange(0, num_channels, 2, dtype=torch.float32) / num_channels)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: Tensor) -> Rotary:
        """:param positions: (B, N) -> cos, sin each (B, 1, N, num_channels)"""
        angles = positions[..., None].float() * self.inv_freq  # (B, N, R/2)
        angles = torch.cat((angles, angles), dim=-1)[:, None]  # (B, 1, N, R)
        return angles.cos(), angles.sin()


def fourier_features(
    spatial_shape: Sequence[int], num_bands: int, max_resolution: Optional[Sequence[int]] = None
) -> Tensor:
    """Fourier position features of a grid, as in the Perceiver papers.

    Coordinates are spaced evenly in [-1, 1] along each axis; each is encoded by sin/cos of ``pi * f * x`` for
    ``num_bands`` frequencies ``f`` spaced linearly from 1 to ``max_resolution / 2``, and the raw coordinate.
    Channel order is DeepMind's (and Hugging Face's): the D raw coordinates, then the sines of all axes (axis-major:
    axis 0's F bands, axis 1's F bands, ...), then the cosines in the same order.

    :return: (prod(spatial_shape), len(spatial_shape) * (2 * num_bands + 1))
    """
    max_resolution = max_resolution or spatial_shape
    axes = [torch.linspace(-1.0, 1.0, steps=size) for size in spatial_shape]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(spatial_shape))  # (N, D)
    freqs = torch.stack([torch.linspace(1.0, res / 2.0, steps=num_bands) for res in max_resolution])  # (D, F)
    angles = (coords[:, :, None] * freqs[None]).reshape(coords.shape[0], -1)  # (N, D * F), axis-major
    return torch.cat([coords, torch.sin(math.pi * angles), torch.cos(math.pi * angles)], dim=-1)
