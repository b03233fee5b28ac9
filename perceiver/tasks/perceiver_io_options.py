"""What the Perceiver IO tasks (``mlm``, ``clf``) share: their encoder/decoder options (:class:`PerceiverIOOptions`)
and how their adapters are built by name."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from torch import nn

from perceiver import registry
from perceiver.adapters.base import InputAdapter
from perceiver.config_checks import ConfigError, check_ranges
from perceiver.core.decoder import PerceiverDecoder, PerceiverDecoderConfig, QueryProvider
from perceiver.core.encoder import PerceiverEncoder, PerceiverEncoderConfig

_NOT_WEIGHTS = {"num_input_channels", "cross_attention_residual", "attention_dropout", "residual_dropout", "init_scale",
                "activation_checkpointing"}
ENCODER_FIELDS = tuple(f.name for f in dataclasses.fields(PerceiverEncoderConfig) if f.name not in _NOT_WEIGHTS)
"""Options that define the encoder's weights (an encoder can be reused by a model with the same values)."""


@dataclass
class PerceiverIOOptions(PerceiverEncoderConfig):
    """Encoder options (inherited from :class:`~perceiver.core.encoder.PerceiverEncoderConfig`) and decoder options
    of the Perceiver IO tasks. ``None`` value channels mean "the latent channels" in the encoder, "the query
    channels" in the decoder."""

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
    init_scale: float = 0.1
    """Standard deviation of the normal weight initialisation. At 0.02 the attention of every layer starts so
    uniform that small models trained for thousands of steps never learn to use the context (see
    tests/test_mlm.py::test_a_tiny_masked_lm_learns_to_use_the_context)."""
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
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(PerceiverEncoderConfig)}
        for name in ("num_cross_attention_v_channels", "num_self_attention_v_channels"):
            values[name] = values[name] or self.num_latent_channels
        return PerceiverEncoderConfig(**{**values, "num_input_channels": num_input_channels})

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
    """The registered input adapter ``name`` (an output adapter or any other module is an error)."""
    entry = registry.get("adapter", name)
    if entry.metadata.get("side") == "output":
        raise ConfigError(f"adapter {name!r} is an output adapter, not an input adapter")
    adapter = create_adapter(name, options, **shared)
    if not isinstance(adapter, InputAdapter):
        raise ConfigError(f"adapter {name!r} is not an input adapter (perceiver.adapters.InputAdapter)")
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
