"""Generic Perceiver building blocks. Imports only torch."""

from perceiver.core.attention import AttentionConfig, KVCache, MultiHeadAttention, apply_rotary, attend_mask
from perceiver.core.decoder import (
    FourierQueryProvider,
    PerceiverDecoder,
    PerceiverDecoderConfig,
    PositionQueryProvider,
    QueryProvider,
    TrainableQueryProvider,
)
from perceiver.core.encoder import PerceiverEncoder, PerceiverEncoderConfig, SplitInput
from perceiver.core.layers import (
    MLP,
    CrossAttentionLayer,
    SelfAttentionBlock,
    SelfAttentionLayer,
    set_activation_checkpointing,
)
from perceiver.core.linear import gelu_linear, linear, norm_linears
from perceiver.core.perceiver_ar import PerceiverAR, PerceiverARCache, PerceiverARConfig
from perceiver.core.perceiver_io import PerceiverIO
from perceiver.core.position import RotaryEmbedding, fourier_features, positions

__all__ = [
    "AttentionConfig",
    "CrossAttentionLayer",
    "KVCache",
    "MLP",
    "MultiHeadAttention",
    "FourierQueryProvider",
    "PerceiverDecoder",
    "PerceiverDecoderConfig",
    "PerceiverEncoder",
    "PerceiverEncoderConfig",
    "PerceiverIO",
    "PositionQueryProvider",
    "QueryProvider",
    "SplitInput",
    "TrainableQueryProvider",
    "PerceiverAR",
    "PerceiverARCache",
    "PerceiverARConfig",
    "RotaryEmbedding",
    "SelfAttentionBlock",
    "SelfAttentionLayer",
    "apply_rotary",
    "attend_mask",
    "fourier_features",
    "gelu_linear",
    "linear",
    "norm_linears",
    "positions",
    "set_activation_checkpointing",
]
