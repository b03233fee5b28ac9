"""Generic Perceiver building blocks. Imports only torch."""

from perceiver.core.attention import AttentionConfig, KVCache, MultiHeadAttention, apply_rotary, attend_mask
from perceiver.core.layers import (
    MLP,
    CrossAttentionLayer,
    SelfAttentionBlock,
    SelfAttentionLayer,
    set_activation_checkpointing,
)
from perceiver.core.perceiver_ar import PerceiverAR, PerceiverARCache, PerceiverARConfig
from perceiver.core.position import RotaryEmbedding, fourier_features, positions

__all__ = [
    "AttentionConfig",
    "CrossAttentionLayer",
    "KVCache",
    "MLP",
    "MultiHeadAttention",
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
