"""Image input adapter: every pixel is an input position, with 2D Fourier position features (Perceiver, Perceiver IO).

Images enter channels-last, ``(B, H, W, C)``: ``uint8`` in 0..255 or floating point in [0, 1]. The adapter scales
uint8 to [0, 1], normalises each channel with ``(x - mean) / std`` and appends the Fourier features of the pixel's
position, so the encoder cross-attends to ``H * W`` positions of ``C + 2 * (2 * num_frequency_bands + 1)`` channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import Tensor

from perceiver.adapters.base import InputAdapter
from perceiver.core.encoder import SplitInput
from perceiver.core.position import fourier_features


@dataclass
class ImageAdapterConfig:
    """Options of the ``image`` adapter. ``image_shape`` is set by the task from the data set."""

    image_shape: Optional[List[int]] = None
    """(height, width, channels) of the images the model reads."""
    num_frequency_bands: int = 32
    """Fourier frequency bands per spatial axis."""
    max_resolution: Optional[List[int]] = None
    """Resolution (height, width) that sets the highest frequency, resolution / 2 (default: the image size)."""
    mean: Optional[List[float]] = None
    """Per-channel mean subtracted after scaling to [0, 1] (default 0.5 for every channel)."""
    std: Optional[List[float]] = None
    """Per-channel standard deviation (default 0.5 for every channel)."""

    def __post_init__(self):
        from perceiver.config_checks import ConfigError, check_ranges

        if self.image_shape is None:
            raise ConfigError("the image adapter needs image_shape (height, width, channels)")
        self.image_shape = [int(v) for v in self.image_shape]
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ConfigError(f"image_shape must be (height, width, channels) >= 1, got {self.image_shape}")
        check_ranges(self, {"num_frequency_bands": ">= 1"}, ConfigError)
        if self.max_resolution is not None and (len(self.max_resolution) != 2 or min(self.max_resolution) < 1):
            raise ConfigError(f"max_resolution must be (height, width) >= 1, got {self.max_resolution}")
        channels = self.image_shape[2]
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None and len(value) != channels:
                raise ConfigError(f"{name} needs one value per channel ({channels}), got {value}")
        if self.std is not None and min(self.std) <= 0:
            raise ConfigError(f"std must be > 0, got {self.std}")


class ImageAdapter(InputAdapter):
    """Input side for images: ``forward(images (B, H, W, C)) -> (x (B, H * W, C + P), None)``, with
    P = 2 * (2 * num_frequency_bands + 1).

    Channel order of ``x``: the normalised pixel channels, then the position features (y, x coordinates in [-1, 1],
    their sines, their cosines; see :func:`perceiver.core.position.fourier_features`). ``x`` is a
    :class:`~perceiver.core.encoder.SplitInput` (pixels per image, positions shared by all images) so that the
    encoder projects the position features once per batch; ``x.full()`` is the plain tensor.
    """

    def __init__(self, config: ImageAdapterConfig):
        super().__init__()
        self.config = config
        height, width, channels = config.image_shape
        self.image_shape = (height, width, channels)
        features = fourier_features((height, width), config.num_frequency_bands, config.max_resolution)  # (HW, P)
        self.register_buffer("position_features", features, persistent=False)
        self.register_buffer("mean", torch.tensor(config.mean or [0.5] * channels), persistent=False)
        self.register_buffer("std", torch.tensor(config.std or [0.5] * channels), persistent=False)
        self.num_input_channels = channels + features.shape[1]

    def embed(self, images: Tensor, positions: Optional[Tensor] = None) -> SplitInput:
        """(B, H, W, C) images -> (B, H * W, C + P) as a :class:`SplitInput`; the pixel grid is the position
        information (Fourier features), so ``positions`` is not used."""
        if images.dim() != 4 or tuple(images.shape[1:]) != self.image_shape:
            height, width, channels = self.image_shape
            raise ValueError(
                f"expected images of shape (batch, {height}, {width}, {channels}) (channels last), "
                f"got {tuple(images.shape)}"
            )
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.to(self.mean.dtype)
        x = ((x - self.mean) / self.std).to(self.mean.dtype)  # uint8 images enter a bf16/fp16 model in its dtype
        x = x.reshape(x.shape[0], -1, x.shape[-1])  # (B, HW, C)
        return SplitInput(x, self.position_features.to(x.dtype))  # (B, HW, C) + (HW, P), see SplitInput

    def forward(self, images: Tensor, pad_mask: Optional[Tensor] = None):
        return self.embed(images), None


__all__ = ["ImageAdapter", "ImageAdapterConfig"]
