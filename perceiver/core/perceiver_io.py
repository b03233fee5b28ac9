"""Perceiver IO: input adapter -> encoder -> decoder -> output adapter.

Shapes: B batch, N input positions, C input channels, M latents, D latent channels, Q output queries,
E query channels.

The adapters are plain modules with these contracts (see :mod:`perceiver.adapters.base`):

* input adapter: ``forward(inputs, pad_mask=None) -> (x (B, N, C), pad_mask (B, N) or None)`` and an attribute
  ``num_input_channels`` (= C);
* output adapter: ``forward(hidden (B, Q, E)) -> task output`` (e.g. token or class logits), or None to return the
  decoder's output unchanged.
"""

from __future__ import annotations

from typing import Any, Optional

from torch import Tensor, nn

from perceiver.core.decoder import PerceiverDecoder
from perceiver.core.encoder import PerceiverEncoder


class PerceiverIO(nn.Module):
    """``forward(inputs, pad_mask (B, N) True at padding, positions (B, Q)) -> output_adapter((B, Q, E))``."""

    def __init__(
        self,
        input_adapter: nn.Module,
        encoder: PerceiverEncoder,
        decoder: PerceiverDecoder,
        output_adapter: Optional[nn.Module] = None,
    ):
        super().__init__()
        channels = getattr(input_adapter, "num_input_channels", None)
        if channels is not None and channels != encoder.config.num_input_channels:
            raise ValueError(
                f"input adapter produces {channels} channels, the encoder expects {encoder.config.num_input_channels}"
            )
        if decoder.config.num_latent_channels != encoder.config.num_latent_channels:
            raise ValueError(
                f"decoder reads {decoder.config.num_latent_channels} latent channels, "
                f"the encoder makes {encoder.config.num_latent_channels}"
            )
        self.input_adapter = input_adapter
        self.encoder = encoder
        self.decoder = decoder
        self.output_adapter = output_adapter

    def encode(self, inputs: Any, pad_mask: Optional[Tensor] = None):
        """-> (latents (B, M, D), adapted input (B, N, C), pad mask (B, N) or None)."""
        x, pad_mask = self.input_adapter(inputs, pad_mask)
        return self.encoder(x, pad_mask), x, pad_mask

    def forward(self, inputs: Any, pad_mask: Optional[Tensor] = None, positions: Optional[Tensor] = None):
        """
        :param inputs: what the input adapter reads, e.g. token ids (B, N) or images (B, H, W, C)
        :param pad_mask: (B, N), True at padding positions (token inputs)
        :param positions: (B, Q) output positions for position-indexed queries (default: the provider's own)
        :return: the output adapter's output for the (B, Q, E) decoder output
        """
        latents, x, _ = self.encode(inputs, pad_mask)
        hidden = self.decoder(latents, x, positions)
        return self.output_adapter(hidden) if self.output_adapter is not None else hidden


__all__ = ["PerceiverIO"]
