"""Generic Perceiver building blocks. Imports only torch.

Internals (the fused linear functions of ``perceiver.core.linear``, ``perceiver.core.split``) are imported from
their modules."""

from perceiver.core.attention import AttentionConfig, KVCache, MultiHeadAttention, apply_rotary, attend_mask
from perceiver.core.decoder import (
    FourierQueryProvider,
    PerceiverDecoder,
    PerceiverDecoderConfig,
    PositionQueryProvider,
    QueryProvider,
    TrainableQueryProvider,
)
from perceiver.core.encoder import PerceiverEncoder, PerceiverEncoderConfig
from perceiver.core.layers import (
    MLP,
    CrossAttentionLayer,
    SelfAttentionBlock,
    SelfAttentionLayer,
    set_activation_checkpointing,
)
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
    "positions",
    "set_activation_checkpointing",
]
