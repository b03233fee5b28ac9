"""Perceiver AR: the last ``num_latents`` positions of a sequence cross-attend causally to the whole sequence,
then causal self-attention layers process those latents.

Shapes: B batch, N sequence length (prefix + latents), P prefix length, M latents, C channels,
R rotary channels per head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import Tensor, nn

from perceiver.config_checks import ConfigError, check_ranges
from perceiver.core.attention import KVCache, Rotary, attend_mask
from perceiver.core.layers import CrossAttentionLayer, SelfAttentionBlock, set_activation_checkpointing


@dataclass
class PerceiverARConfig:
    """Sizes and options of a :class:`PerceiverAR`. Task configs (``CausalLanguageModelConfig``) extend it, so an
    option added here reaches the task, the CLI and saved configs."""

    num_channels: int = 512
    """Channels of the embeddings, latents and every attention layer."""
    num_heads: int = 8
    """Attention heads of every layer (num_channels must be divisible by it)."""
    max_seq_len: int = 4096
    """Longest sequence (prefix + latents) the model reads."""
    max_latents: int = 512
    """Number of latent positions: the last max_latents positions, which get predictions."""
    num_self_attention_layers: int = 8
    """Self-attention layers over the latents after the cross-attention layer."""
    cross_attention_widening_factor: int = 4
    """MLP width of the cross-attention layer, as a multiple of num_channels."""
    self_attention_widening_factor: int = 4
    """MLP width of the self-attention layers, as a multiple of num_channels."""
    cross_attention_dropout: float = 0.5
    """Fraction of the prefix dropped in training (Perceiver AR prefix dropout)."""
    post_attention_dropout: float = 0.0
    """Dropout on attention and MLP outputs before they join the residual stream."""
    attention_dropout: float = 0.0
    """Dropout on the attention probabilities."""
    activation_checkpointing: bool = False
    """Recompute each layer's activations in the backward pass (less memory, slower: bench/activation_checkpointing.py
    measures how much)."""
    num_rotary_layers: Optional[int] = None
    """Self-attention layers, counted from the first, that apply rotary position embedding (None: all; the
    cross-attention always does)."""
    qkv_bias: bool = True
    """Biases of the query, key and value projections (cross- and self-attention)."""
    cross_attention_out_bias: bool = True
    """Bias of the cross-attention's output projection."""
    self_attention_out_bias: bool = True
    """Bias of the self-attention layers' output projections."""
    mlp_bias: bool = True
    """Biases of the MLPs (cross- and self-attention layers)."""
    latent_kv_query_norm: bool = False
    """In the cross-attention, normalise the latents' keys and values with the query LayerNorm (krasserm's Perceiver
    AR) instead of the key/value LayerNorm that normalises the prefix."""

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        check_ranges(
            self,
            {"num_channels": ">= 1", "num_heads": ">= 1", "max_seq_len": ">= 1", "num_self_attention_layers": ">= 0",
             "cross_attention_widening_factor": ">= 1", "self_attention_widening_factor": ">= 1",
             "cross_attention_dropout": "[0, 1)", "post_attention_dropout": "[0, 1)", "attention_dropout": "[0, 1)",
             "num_rotary_layers": ">= 0"},
            ConfigError,
        )
        if not 1 <= self.max_latents <= self.max_seq_len:
            raise ConfigError(f"max_latents ({self.max_latents}) must be in 1..max_seq_len ({self.max_seq_len})")
        if self.num_channels % self.num_heads:
            raise ConfigError(f"num_channels ({self.num_channels}) must be divisible by num_heads ({self.num_heads})")


@dataclass
class PerceiverARCache:
    """Decoding state: cross-attention keys/values of all positions, self-attention keys/values of the latents,
    and the inputs, pad mask and rotary angles of every position seen (capacity = max_seq_len)."""

    cross: KVCache
    self_attention: List[KVCache]
    inputs: Tensor  # (B, capacity, C)
    pad_mask: Tensor  # (B, capacity)
    rotary: Optional[Rotary]  # (B, 1, capacity, R) each
    length: int = 0
    num_latents: int = 0


def _slice_rotary(rotary: Optional[Rotary], start: int, end: int) -> Optional[Rotary]:
    if rotary is None:
        return None
    return rotary[0][:, :, start:end], rotary[1][:, :, start:end]


class PerceiverAR(nn.Module):
    """Causal cross-attention of the latents to prefix + latents, then a causal self-attention block.

    ``forward(x, prefix_len, pad_mask, rotary)``: x (B, N, C) -> latents (B, N - prefix_len, C).
    """

    def __init__(self, config: PerceiverARConfig):
        super().__init__()
        config.validate()
        self.config = config
        common = dict(
            attention_dropout=config.attention_dropout,
            residual_dropout=config.post_attention_dropout,
            bias=config.qkv_bias,
            mlp_bias=config.mlp_bias,
        )
        self.cross_attention = CrossAttentionLayer(
            num_heads=config.num_heads,
            num_q_channels=config.num_channels,
            num_kv_channels=config.num_channels,
            widening_factor=config.cross_attention_widening_factor,
            out_bias=config.cross_attention_out_bias,
            **common,
        )
        self.self_attention = SelfAttentionBlock(
            config.num_self_attention_layers,
            num_rotary_layers=config.num_rotary_layers,
            num_heads=config.num_heads,
            num_channels=config.num_channels,
            widening_factor=config.self_attention_widening_factor,
            out_bias=config.self_attention_out_bias,
            **common,
        )
        set_activation_checkpointing(self, config.activation_checkpointing)

    def _drop_prefix(self, x: Tensor, prefix_len: int, pad_mask: Optional[Tensor], rotary: Optional[Rotary]):
        """Keep a random ``1 - cross_attention_dropout`` fraction of the prefix positions of every row."""
        num_keep = prefix_len - int(prefix_len * self.config.cross_attention_dropout)
        batch_size = x.shape[0]
        keep = torch.rand(batch_size, prefix_len, device=x.device).topk(num_keep, dim=1).indices  # (B, P_keep)
        keep = torch.cat([keep, torch.arange(prefix_len, x.shape[1], device=x.device).expand(batch_size, -1)], dim=1)
        rows = torch.arange(batch_size, device=x.device)[:, None]  # (B, 1)
        x = x[rows, keep]  # indexing, unlike gather, does not keep x (B, N, C) for the backward pass
        if pad_mask is not None:
            pad_mask = pad_mask[rows, keep]
        if rotary is not None:
            rotary = (rotary[0][rows, :, keep].transpose(1, 2), rotary[1][rows, :, keep].transpose(1, 2))
        return x, pad_mask, rotary

    def forward(
        self, x: Tensor, prefix_len: int, pad_mask: Optional[Tensor] = None, rotary: Optional[Rotary] = None
    ) -> Tensor:
        """
        :param x: embedded sequence (B, N, C); the last ``N - prefix_len`` positions are the latents
        :param prefix_len: number of prefix positions P (0 <= P < N)
        :param pad_mask: (B, N), True at padding positions
        :param rotary: rotary angles of all positions, (B, 1, N, R) each
        :return: latents (B, M, C), M = N - prefix_len
        """
        num_latents = x.shape[1] - prefix_len
        if not 0 < num_latents <= self.config.max_latents:
            raise ValueError(
                f"number of latents N - prefix_len = {num_latents} must be in 1..{self.config.max_latents}"
            )
        if pad_mask is not None and not pad_mask.any():
            pad_mask = None
        if self.training and prefix_len > 0 and self.config.cross_attention_dropout > 0:
            x, pad_mask, rotary = self._drop_prefix(x, prefix_len, pad_mask, rotary)
        num_keys = x.shape[1]
        latents = x[:, -num_latents:]
        rotary_latents = _slice_rotary(rotary, num_keys - num_latents, num_keys)

        mask = attend_mask(pad_mask, num_latents, num_keys, causal=True, device=x.device)
        num_query_norm_keys = self._query_norm_keys(num_latents)
        latents = self.cross_attention(
            latents, x, mask, rotary_q=rotary_latents, rotary_k=rotary, num_query_norm_keys=num_query_norm_keys
        )

        latent_pad = pad_mask[:, -num_latents:] if pad_mask is not None else None
        sa_mask = attend_mask(latent_pad, num_latents, num_latents, causal=True) if latent_pad is not None else None
        return self.self_attention(latents, sa_mask, is_causal=sa_mask is None, rotary=rotary_latents)

    def _query_norm_keys(self, num_latents: int) -> int:
        """How many of the last keys (the latents) the cross-attention normalises with its query LayerNorm."""
        return num_latents if self.config.latent_kv_query_norm else 0

    # ---------------------------------------------------------------------------------------------------------
    #  Decoding with a cache
    # ---------------------------------------------------------------------------------------------------------

    def empty_cache(self, batch_size: int, like: Tensor, num_rotary_channels: int = 0) -> PerceiverARCache:
        """An empty decoding cache for ``batch_size`` sequences of up to ``max_seq_len`` positions."""
        cfg = self.config
        head_dim = cfg.num_channels // cfg.num_heads
        cross = KVCache.empty(batch_size, cfg.num_heads, cfg.max_seq_len, head_dim, head_dim, like)
        self_attention = [
            KVCache.empty(batch_size, cfg.num_heads, cfg.max_latents, head_dim, head_dim, like)
            for _ in range(cfg.num_self_attention_layers)
        ]
        rotary = None
        if num_rotary_channels:
            shape = (batch_size, 1, cfg.max_seq_len, num_rotary_channels)
            rotary = (like.new_empty(shape), like.new_empty(shape))
        return PerceiverARCache(
            cross=cross,
            self_attention=self_attention,
            inputs=like.new_empty(batch_size, cfg.max_seq_len, cfg.num_channels),
            pad_mask=torch.zeros(batch_size, cfg.max_seq_len, dtype=torch.bool, device=like.device),
            rotary=rotary,
        )

    def forward_cached(
        self,
        x: Tensor,
        cache: PerceiverARCache,
        num_latents: int,
        pad_mask: Optional[Tensor] = None,
        rotary: Optional[Rotary] = None,
    ) -> Tensor:
        """Process new positions appended to the cached sequence; eval mode only.

        The latents are the last ``num_latents`` positions of the whole sequence (cached + new). When they are the
        previous latents plus exactly the new positions, only the new positions are computed; otherwise (first
        call, or the latent window moved) the self-attention caches are rebuilt from the cached inputs, which gives
        exactly what a full forward pass would give.

        :param x: new positions (B, T, C)
        :param pad_mask: (B, T), True at padding positions
        :param rotary: rotary angles of the new positions, (B, 1, T, R) each
        :return: outputs of the latents computed in this call (B, Q, C); the last one is the newest position
        """
        start, end = cache.length, cache.length + x.shape[1]
        if end > self.config.max_seq_len:
            raise ValueError(f"sequence of {end} positions exceeds max_seq_len {self.config.max_seq_len}")
        if not 0 < num_latents <= min(end, self.config.max_latents):
            raise ValueError(f"num_latents must be in 1..{min(end, self.config.max_latents)}, got {num_latents}")
        cache.inputs[:, start:end] = x
        cache.pad_mask[:, start:end] = pad_mask if pad_mask is not None else False
        if cache.rotary is not None:
            cache.rotary[0][:, :, start:end] = rotary[0]
            cache.rotary[1][:, :, start:end] = rotary[1]

        extend = cache.num_latents > 0 and num_latents == cache.num_latents + x.shape[1]
        query_start = start if extend else end - num_latents
        if not extend:
            for sa_cache in cache.self_attention:
                sa_cache.reset()
            if self.config.latent_kv_query_norm and start > 0:
                # positions that left the latents are keys of the prefix now, normalised differently: recompute all
                cache.cross.reset()
                x, rotary = cache.inputs[:, :end], _slice_rotary(cache.rotary, 0, end)
        cache.length, cache.num_latents = end, num_latents

        pad = cache.pad_mask[:, :end]
        if not torch.compiler.is_compiling() and not pad.any():  # compiled, the mask stays: no data-dependent branch
            pad = None
        num_queries = end - query_start
        queries = cache.inputs[:, query_start:end]
        rotary_q = _slice_rotary(cache.rotary, query_start, end)

        mask = attend_mask(pad, num_queries, end, causal=num_queries > 1, device=x.device)
        latents = self.cross_attention(
            queries, x, mask, rotary_q=rotary_q, rotary_k=rotary, kv_cache=cache.cross,
            num_query_norm_keys=self._query_norm_keys(min(num_latents, x.shape[1])),
        )
        latent_pad = pad[:, end - num_latents : end] if pad is not None else None
        sa_mask = attend_mask(latent_pad, num_queries, num_latents, causal=num_queries > 1, device=x.device)
        return self.self_attention(latents, sa_mask, rotary=rotary_q, kv_caches=cache.self_attention)
