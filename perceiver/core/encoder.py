"""Perceiver encoder: a trainable latent array cross-attends to an adapted input, then self-attends.

Shapes: B batch, N input positions, C input channels, M latents, D latent channels.

Layout (the original Perceiver's repeated cross-attention; Perceiver IO is the special case of one cross-attention
layer)::

    latents = trainable (M, D)
    for i in range(num_self_attention_blocks):
        if i < num_cross_attention_layers:
            latents = cross_attention[i](latents, input)      # latents (B, M, D) attend to input (B, N, C)
        latents = self_attention_block[i](latents)            # num_self_attention_layers_per_block layers

Weight sharing is explicit. Cross-attention layers 2..n always share one set of weights; the first layer has its own
weights unless ``first_cross_attention_layer_shared`` (then all layers use one set). Self-attention blocks work the
same way with ``first_self_attention_block_shared``. Shared layers are the same module object, so they hold one
parameter tensor each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from torch import Tensor, nn

from perceiver.config_checks import check_ranges
from perceiver.core.attention import attend_mask
from perceiver.core.decoder import TrainableQueryProvider
from perceiver.core.init import init_parameters
from perceiver.core.layers import CrossAttentionLayer, SelfAttentionBlock, set_activation_checkpointing
from perceiver.core.split import SplitInput


@dataclass
class PerceiverEncoderConfig:
    """Sizes and options of a :class:`PerceiverEncoder`. ``None`` qk channels default to the query channels of the
    layer (the latent channels D); ``None`` value channels default to the qk channels. The Perceiver IO tasks' configs
    extend this class, so an option added here reaches them, the CLI and saved configs."""

    num_input_channels: Optional[int] = None
    """Channels C of the adapted input (the tasks set it from their input adapter)."""
    num_latents: int = 256
    """Size M of the latent array."""
    num_latent_channels: int = 512
    """Channels D of each latent."""
    num_cross_attention_heads: int = 8
    """Heads of the encoder's cross-attention to the input."""
    num_cross_attention_qk_channels: Optional[int] = None
    """Query/key channels of the cross-attention (default: num_latent_channels)."""
    num_cross_attention_v_channels: Optional[int] = None
    """Value channels of the cross-attention (default: the qk channels)."""
    num_cross_attention_layers: int = 1
    """Cross-attention layers to the input (> 1: the original Perceiver's repeated cross-attention)."""
    first_cross_attention_layer_shared: bool = False
    """The first cross-attention layer shares the weights of the later ones."""
    cross_attention_widening_factor: int = 1
    """MLP width of the cross-attention layers, as a multiple of their channels."""
    cross_attention_residual: bool = True
    """Add the cross-attention's output to the latents (the residual connection around it)."""
    num_self_attention_heads: int = 8
    """Heads of the self-attention layers over the latents."""
    num_self_attention_qk_channels: Optional[int] = None
    """Query/key channels of the self-attention (default: num_latent_channels)."""
    num_self_attention_v_channels: Optional[int] = None
    """Value channels of the self-attention (default: the qk channels)."""
    num_self_attention_layers_per_block: int = 6
    """Self-attention layers in each self-attention block."""
    num_self_attention_blocks: int = 1
    """Self-attention blocks; cross-attention layer i runs before block i."""
    first_self_attention_block_shared: bool = True
    """The first self-attention block shares the weights of the later ones."""
    self_attention_widening_factor: int = 1
    """MLP width of the self-attention layers, as a multiple of their channels."""
    attention_dropout: float = 0.0
    """Dropout on the attention probabilities."""
    residual_dropout: float = 0.0
    """Dropout on attention and MLP outputs before they join the residual stream."""
    init_scale: float = 0.02
    """Standard deviation of the normal weight initialisation."""
    activation_checkpointing: bool = False
    """Recompute each layer's activations in the backward pass (less memory, slower)."""

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        at_least_one = (
            "num_input_channels", "num_latents", "num_latent_channels", "num_cross_attention_heads",
            "num_cross_attention_qk_channels", "num_cross_attention_v_channels", "num_self_attention_heads",
            "num_self_attention_qk_channels", "num_self_attention_v_channels", "num_cross_attention_layers",
            "num_self_attention_blocks", "cross_attention_widening_factor", "self_attention_widening_factor",
        )
        check_ranges(self, {name: ">= 1" for name in at_least_one})
        check_ranges(
            self,
            {"num_self_attention_layers_per_block": ">= 0", "attention_dropout": "[0, 1)", "residual_dropout": "[0, 1)",
             "init_scale": "> 0"},
        )
        if self.num_cross_attention_layers > self.num_self_attention_blocks:
            raise ValueError(
                f"num_cross_attention_layers ({self.num_cross_attention_layers}) must not exceed "
                f"num_self_attention_blocks ({self.num_self_attention_blocks}): each cross-attention precedes a block"
            )
        ca_qk = self.num_cross_attention_qk_channels or self.num_latent_channels
        ca_v = self.num_cross_attention_v_channels or ca_qk
        sa_qk = self.num_self_attention_qk_channels or self.num_latent_channels
        sa_v = self.num_self_attention_v_channels or sa_qk
        for what, channels, heads in (
            ("cross-attention qk", ca_qk, self.num_cross_attention_heads),
            ("cross-attention v", ca_v, self.num_cross_attention_heads),
            ("self-attention qk", sa_qk, self.num_self_attention_heads),
            ("self-attention v", sa_v, self.num_self_attention_heads),
        ):
            if channels % heads:
                raise ValueError(f"{what} channels ({channels}) must be divisible by the number of heads ({heads})")


class PerceiverEncoder(nn.Module):
    """``forward(x (B, N, C), pad_mask (B, N) True at padding) -> latents (B, M, D)``.

    Padding positions are never attended to, so the output does not depend on what they hold.
    """

    def __init__(self, config: PerceiverEncoderConfig):
        super().__init__()
        config.validate()
        if config.num_input_channels is None:
            raise ValueError("num_input_channels is not set: give the channels of the adapted input")
        self.config = config
        self.latent_provider = TrainableQueryProvider(config.num_latents, config.num_latent_channels, config.init_scale)
        self.cross_attention_1 = self._cross_attention_layer()
        self.cross_attention_n = None
        if config.num_cross_attention_layers > 1 and not config.first_cross_attention_layer_shared:
            self.cross_attention_n = self._cross_attention_layer()
        self.self_attention_1 = self._self_attention_block()
        self.self_attention_n = None
        if config.num_self_attention_blocks > 1 and not config.first_self_attention_block_shared:
            self.self_attention_n = self._self_attention_block()
        init_parameters(self, config.init_scale)
        set_activation_checkpointing(self, config.activation_checkpointing)

    def _cross_attention_layer(self) -> CrossAttentionLayer:
        c = self.config
        return CrossAttentionLayer(
            num_heads=c.num_cross_attention_heads,
            num_q_channels=c.num_latent_channels,
            num_kv_channels=c.num_input_channels,
            num_qk_channels=c.num_cross_attention_qk_channels,
            num_v_channels=c.num_cross_attention_v_channels,
            widening_factor=c.cross_attention_widening_factor,
            attention_dropout=c.attention_dropout,
            residual_dropout=c.residual_dropout,
            attention_residual=c.cross_attention_residual,
        )

    def _self_attention_block(self) -> SelfAttentionBlock:
        c = self.config
        return SelfAttentionBlock(
            c.num_self_attention_layers_per_block,
            num_heads=c.num_self_attention_heads,
            num_channels=c.num_latent_channels,
            num_qk_channels=c.num_self_attention_qk_channels,
            num_v_channels=c.num_self_attention_v_channels,
            widening_factor=c.self_attention_widening_factor,
            attention_dropout=c.attention_dropout,
            residual_dropout=c.residual_dropout,
        )

    def cross_attention(self, index: int) -> CrossAttentionLayer:
        """The cross-attention layer applied before self-attention block ``index``."""
        if index > 0 and self.cross_attention_n is not None:
            return self.cross_attention_n
        return self.cross_attention_1

    def self_attention(self, index: int) -> SelfAttentionBlock:
        """Self-attention block ``index``."""
        if index > 0 and self.self_attention_n is not None:
            return self.self_attention_n
        return self.self_attention_1

    def forward(self, x: Union[Tensor, "SplitInput"], pad_mask: Optional[Tensor] = None) -> Tensor:
        """
        :param x: adapted input (B, N, C), or a :class:`SplitInput` of the same shape
        :param pad_mask: (B, N), True at padding positions
        :return: latents (B, M, D)
        """
        if len(x.shape) != 3 or x.shape[2] != self.config.num_input_channels:
            raise ValueError(
                f"encoder input must have shape (batch, positions, {self.config.num_input_channels}), "
                f"got {tuple(x.shape)}"
            )
        padded = pad_mask is not None and bool(pad_mask.any())
        mask = attend_mask(pad_mask if padded else None)  # (B, 1, 1, N), shared by the latents
        latents = self.latent_provider()  # (1, M, D): normalised and projected once, broadcast over the batch
        for i in range(self.config.num_self_attention_blocks):
            if i < self.config.num_cross_attention_layers:
                layer = self.cross_attention(i)
                latents = layer(latents, x, mask)  # (B, M, D); x may be a SplitInput
            latents = self.self_attention(i)(latents)
        return latents.expand(x.shape[0], -1, -1) if latents.shape[0] != x.shape[0] else latents


__all__ = [
    "PerceiverEncoder",
    "PerceiverEncoderConfig",
    "SplitInput",
]
