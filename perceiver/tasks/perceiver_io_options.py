"""What the Perceiver IO tasks (``mlm``, ``clf``) share: their encoder/decoder options (:class:`PerceiverIOOptions`)
and how their adapters are built by name."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from torch import nn

from perceiver import registry
from perceiver.adapters.base import InputAdapter, TokenAdapter, TokenInputAdapter
from perceiver.config_checks import ConfigError, check_ranges
from perceiver.core.decoder import PerceiverDecoder, PerceiverDecoderConfig, QueryProvider
from perceiver.core.encoder import PerceiverEncoder, PerceiverEncoderConfig

ENCODER_FIELDS = (
    "num_latents",
    "num_latent_channels",
    "num_cross_attention_heads",
    "num_cross_attention_qk_channels",
    "num_cross_attention_v_channels",
    "num_cross_attention_layers",
    "first_cross_attention_layer_shared",
    "cross_attention_widening_factor",
    "num_self_attention_heads",
    "num_self_attention_qk_channels",
    "num_self_attention_v_channels",
    "num_self_attention_layers_per_block",
    "num_self_attention_blocks",
    "first_self_attention_block_shared",
    "self_attention_widening_factor",
)
"""Options that define the encoder's weights (an encoder can be reused by a model with the same values)."""


@dataclass
class PerceiverIOOptions:
    """Encoder and decoder options of the Perceiver IO tasks. ``None`` qk or v channels mean "the query channels of
    the layer" (the latent channels in the encoder, the query channels in the decoder)."""

    num_latents: int = 256
    """Size M of the latent array."""
    num_latent_channels: int = 512
    """Channels D of each latent."""
    num_cross_attention_heads: int = 8
    """Heads of the encoder's cross-attention to the input."""
    num_cross_attention_qk_channels: Optional[int] = None
    """Query/key channels of the cross-attention (default: num_latent_channels)."""
    num_cross_attention_v_channels: Optional[int] = None
    """Value channels of the cross-attention (default: num_latent_channels)."""
    num_cross_attention_layers: int = 1
    """Cross-attention layers to the input (> 1: the original Perceiver's repeated cross-attention)."""
    first_cross_attention_layer_shared: bool = False
    """The first cross-attention layer shares the weights of the later ones."""
    cross_attention_widening_factor: int = 1
    """MLP width of the cross-attention layers, as a multiple of their channels."""
    num_self_attention_heads: int = 8
    """Heads of the self-attention layers over the latents."""
    num_self_attention_qk_channels: Optional[int] = None
    """Query/key channels of the self-attention (default: num_latent_channels)."""
    num_self_attention_v_channels: Optional[int] = None
    """Value channels of the self-attention (default: num_latent_channels)."""
    num_self_attention_layers_per_block: int = 6
    """Self-attention layers in each self-attention block."""
    num_self_attention_blocks: int = 1
    """Self-attention blocks; cross-attention layer i runs before block i."""
    first_self_attention_block_shared: bool = True
    """The first self-attention block shares the weights of the later ones."""
    self_attention_widening_factor: int = 1
    """MLP width of the self-attention layers, as a multiple of their channels."""
    num_decoder_heads: int = 8
    """Heads of the decoder's cross-attention from the output queries to the latents."""
    num_decoder_qk_channels: Optional[int] = None
    """Query/key channels of the decoder (default: the query channels)."""
    num_decoder_v_channels: Optional[int] = None
    """Value channels of the decoder (default: the query channels)."""
    decoder_widening_factor: int = 1
    """MLP width of the decoder, as a multiple of the query channels."""
    decoder_query_residual: Optional[bool] = None
    """Add the decoder's attention output to its queries (None: the task's choice, off for mlm, on for clf)."""
    attention_dropout: float = 0.1
    """Dropout on the attention probabilities."""
    residual_dropout: float = 0.0
    """Dropout on attention and MLP outputs before they join the residual stream."""
    init_scale: float = 0.1
    """Standard deviation of the normal weight initialisation. At 0.02 the attention of every layer starts so
    uniform that small models trained for thousands of steps never learn to use the context (see
    tests/test_mlm.py::test_a_tiny_masked_lm_learns_to_use_the_context)."""
    activation_checkpointing: bool = False
    """Recompute each layer's activations in the backward pass (less memory, slower)."""
    adapter: str = "text-bytes"
    """Registered input adapter (text-bytes for token ids, image for pixels)."""
    adapter_options: Dict[str, Any] = field(default_factory=dict)
    """Options of the input adapter (--set adapter.key=value; see perceiver show adapter NAME)."""

    def validate_io(self) -> None:
        """Check the encoder/decoder options (called from the task configs' ``__post_init__``)."""
        check_ranges(
            self,
            {"num_cross_attention_qk_channels": ">= 1", "num_cross_attention_v_channels": ">= 1",
             "num_self_attention_qk_channels": ">= 1", "num_self_attention_v_channels": ">= 1",
             "num_decoder_heads": ">= 1", "num_decoder_qk_channels": ">= 1", "num_decoder_v_channels": ">= 1",
             "decoder_widening_factor": ">= 1", "init_scale": "> 0"},
            ConfigError,
        )
        try:
            self.encoder_config(num_input_channels=1).validate()
        except ValueError as error:
            raise ConfigError(str(error)) from None
        for name in ("num_decoder_qk_channels", "num_decoder_v_channels"):
            channels = getattr(self, name)
            if channels is not None and channels % self.num_decoder_heads:
                raise ConfigError(
                    f"{name} ({channels}) must be divisible by num_decoder_heads ({self.num_decoder_heads})"
                )

    def encoder_config(self, num_input_channels: int) -> PerceiverEncoderConfig:
        values = {name: getattr(self, name) for name in ENCODER_FIELDS}
        for name in ("num_cross_attention_v_channels", "num_self_attention_v_channels"):
            values[name] = values[name] or self.num_latent_channels
        return PerceiverEncoderConfig(
            num_input_channels=num_input_channels,
            **values,
            attention_dropout=self.attention_dropout,
            residual_dropout=self.residual_dropout,
            init_scale=self.init_scale,
            activation_checkpointing=self.activation_checkpointing,
        )

    def decoder_config(self, num_query_channels: int, query_residual: bool) -> PerceiverDecoderConfig:
        return PerceiverDecoderConfig(
            num_latent_channels=self.num_latent_channels,
            num_query_channels=num_query_channels,
            num_heads=self.num_decoder_heads,
            num_qk_channels=self.num_decoder_qk_channels,
            num_v_channels=self.num_decoder_v_channels or num_query_channels,
            widening_factor=self.decoder_widening_factor,
            query_residual=query_residual,
            attention_dropout=self.attention_dropout,
            residual_dropout=self.residual_dropout,
            init_scale=self.init_scale,
            activation_checkpointing=self.activation_checkpointing,
        )


def create_adapter(name: str, options: Dict[str, Any], *args: Any, **shared: Any) -> nn.Module:
    """Build the registered adapter ``name``: ``factory(config, *args)``.

    ``shared`` are values the task sets (e.g. ``vocab_size``, ``image_shape``); each is used only if the adapter's
    config has that field. ``options`` are the user's adapter options; unknown ones are an error.
    """
    entry = registry.get("adapter", name)
    config_class = entry.config_class()
    known = {f.name for f in dataclasses.fields(config_class)} if config_class is not None else set()
    values = {key: value for key, value in shared.items() if key in known}
    values.update(options)
    config = entry.build_config(**values)
    factory = entry.load()
    return factory(config, *args) if config is not None else factory(*args)


def create_input_adapter(name: str, options: Dict[str, Any], **shared: Any) -> InputAdapter:
    """A registered input adapter as a Perceiver IO input adapter (token adapters are wrapped)."""
    entry = registry.get("adapter", name)
    if entry.metadata.get("side") == "output":
        raise ConfigError(f"adapter {name!r} is an output adapter, not an input adapter")
    adapter = create_adapter(name, options, **shared)
    if isinstance(adapter, TokenAdapter):
        return TokenInputAdapter(adapter)
    if not isinstance(adapter, InputAdapter):
        raise ConfigError(f"adapter {name!r} is neither a token adapter nor a Perceiver IO input adapter")
    return adapter


def build_encoder_decoder(options: PerceiverIOOptions, input_adapter: InputAdapter, query_provider: QueryProvider,
                          query_residual: bool):
    """:param query_residual: the task's default for ``options.decoder_query_residual``"""
    encoder = PerceiverEncoder(options.encoder_config(input_adapter.num_input_channels))
    if options.decoder_query_residual is not None:
        query_residual = options.decoder_query_residual
    decoder_config = options.decoder_config(query_provider.num_query_channels, query_residual)
    decoder = PerceiverDecoder(decoder_config, query_provider)
    return encoder, decoder


__all__ = ["ENCODER_FIELDS", "PerceiverIOOptions", "build_encoder_decoder", "create_adapter", "create_input_adapter"]
