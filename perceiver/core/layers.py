"""Pre-LayerNorm attention layers with MLP and residuals, and a block of self-attention layers."""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from perceiver.core.attention import AttentionConfig, KVCache, MultiHeadAttention, Rotary
from perceiver.core.linear import gelu_linear, norm_linears


class MLP(nn.Module):
    """LayerNorm -> Linear(C, f*C) -> GELU -> Linear(f*C, C): (B, N, C) -> (B, N, C)."""

    def __init__(self, num_channels: int, widening_factor: int = 4, bias: bool = True):
        super().__init__()
        self.norm = nn.LayerNorm(num_channels)
        self.fc1 = nn.Linear(num_channels, widening_factor * num_channels, bias=bias)
        self.fc2 = nn.Linear(widening_factor * num_channels, num_channels, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        (h,) = norm_linears(x, self.norm, (self.fc1,))
        return gelu_linear(h, self.fc2)


class _Checkpointable(nn.Module):
    """Runs ``_forward`` under ``torch.utils.checkpoint`` in training when ``activation_checkpointing`` is set."""

    activation_checkpointing: bool = False

    def forward(self, *args, **kwargs):
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, *args, use_reentrant=False, **kwargs)
        return self._forward(*args, **kwargs)


class CrossAttentionLayer(_Checkpointable):
    """Queries (B, Q, Cq) attend to a key/value input (B, K, Ckv); pre-LN, residual, MLP -> (B, Q, Cq).

    :param attention_residual: add the attention output to the queries (off for Perceiver IO output queries
        that only carry positions).
    :param bias: biases of the query, key and value projections, and by default of the output projection and MLP
    :param out_bias: bias of the attention output projection (None: ``bias``)
    :param mlp_bias: biases of the MLP (None: ``bias``)
    """

    def __init__(
        self,
        num_heads: int,
        num_q_channels: int,
        num_kv_channels: int,
        num_qk_channels: Optional[int] = None,
        num_v_channels: Optional[int] = None,
        widening_factor: int = 4,
        attention_dropout: float = 0.0,
        residual_dropout: float = 0.0,
        attention_residual: bool = True,
        bias: bool = True,
        out_bias: Optional[bool] = None,
        mlp_bias: Optional[bool] = None,
    ):
        super().__init__()
        self.q_norm = nn.LayerNorm(num_q_channels)
        self.kv_norm = nn.LayerNorm(num_kv_channels)
        self.attention = MultiHeadAttention(
            AttentionConfig(
                num_heads=num_heads,
                num_q_input_channels=num_q_channels,
                num_kv_input_channels=num_kv_channels,
                num_qk_channels=num_qk_channels,
                num_v_channels=num_v_channels,
                dropout=attention_dropout,
                bias=bias,
                out_bias=out_bias,
            )
        )
        self.mlp = MLP(num_q_channels, widening_factor, bias=bias if mlp_bias is None else mlp_bias)
        self.dropout = nn.Dropout(residual_dropout)
        self.attention_residual = attention_residual

    def _forward(
        self,
        x_q: Tensor,
        x_kv: Tensor,
        attend_mask: Optional[Tensor] = None,
        rotary_q: Optional[Rotary] = None,
        rotary_k: Optional[Rotary] = None,
        kv_cache: Optional[KVCache] = None,
        num_query_norm_keys: int = 0,
        kept_dropout=None,
    ) -> Tensor:
        """:param num_query_norm_keys: the last ``num_query_norm_keys`` key/value positions are normalised with the
            query LayerNorm instead of the key/value one (krasserm's Perceiver AR, whose latents are the last keys)
        :param kept_dropout: attention-dropout mask to draw into or reuse (see :class:`MultiHeadAttention`)"""
        kv_norm = self.kv_norm
        if num_query_norm_keys:
            split = x_kv.shape[1] - num_query_norm_keys
            x_kv = torch.cat([self.kv_norm(x_kv[:, :split]), self.q_norm(x_kv[:, split:])], dim=1)
            kv_norm = None
        h = self.attention(
            x_q, x_kv, attend_mask, rotary_q=rotary_q, rotary_k=rotary_k, kv_cache=kv_cache,
            q_norm=self.q_norm, kv_norm=kv_norm, kept_dropout=kept_dropout,
        )
        x = x_q + self.dropout(h) if self.attention_residual else self.dropout(h)
        return x + self.dropout(self.mlp(x))


class SelfAttentionLayer(_Checkpointable):
    """Pre-LN self-attention with residual, then MLP with residual: (B, N, C) -> (B, N, C)."""

    def __init__(
        self,
        num_heads: int,
        num_channels: int,
        num_qk_channels: Optional[int] = None,
        num_v_channels: Optional[int] = None,
        widening_factor: int = 4,
        attention_dropout: float = 0.0,
        residual_dropout: float = 0.0,
        bias: bool = True,
        out_bias: Optional[bool] = None,
        mlp_bias: Optional[bool] = None,
    ):
        super().__init__()
        self.norm = nn.LayerNorm(num_channels)
        self.attention = MultiHeadAttention(
            AttentionConfig(
                num_heads=num_heads,
                num_q_input_channels=num_channels,
                num_kv_input_channels=num_channels,
                num_qk_channels=num_qk_channels,
                num_v_channels=num_v_channels,
                dropout=attention_dropout,
                bias=bias,
                out_bias=out_bias,
            )
        )
        self.mlp = MLP(num_channels, widening_factor, bias=bias if mlp_bias is None else mlp_bias)
        self.dropout = nn.Dropout(residual_dropout)

    def _forward(
        self,
        x: Tensor,
        attend_mask: Optional[Tensor] = None,
        is_causal: bool = False,
        rotary: Optional[Rotary] = None,
        kv_cache: Optional[KVCache] = None,
    ) -> Tensor:
        h = self.attention(
            x, x, attend_mask, is_causal=is_causal, rotary_q=rotary, rotary_k=rotary, kv_cache=kv_cache,
            q_norm=self.norm, kv_norm=self.norm,
        )
        x = x + self.dropout(h)
        return x + self.dropout(self.mlp(x))


class SelfAttentionBlock(nn.Module):
    """``num_layers`` self-attention layers applied in sequence: (B, N, C) -> (B, N, C).

    :param num_rotary_layers: only the first ``num_rotary_layers`` layers apply the rotary embedding (None: all)
    """

    def __init__(self, num_layers: int, num_rotary_layers: Optional[int] = None, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList(SelfAttentionLayer(**layer_kwargs) for _ in range(num_layers))
        self.num_rotary_layers = num_layers if num_rotary_layers is None else num_rotary_layers

    def forward(
        self,
        x: Tensor,
        attend_mask: Optional[Tensor] = None,
        is_causal: bool = False,
        rotary: Optional[Rotary] = None,
        kv_caches: Optional[List[KVCache]] = None,
    ) -> Tensor:
        for i, layer in enumerate(self.layers):
            cache = kv_caches[i] if kv_caches is not None else None
            x = layer(x, attend_mask, is_causal, rotary if i < self.num_rotary_layers else None, cache)
        return x


def set_activation_checkpointing(module: nn.Module, enabled: bool = True) -> None:
    """Turn activation checkpointing on or off for every attention layer inside ``module``."""
    for layer in module.modules():
        if isinstance(layer, _Checkpointable):
            layer.activation_checkpointing = enabled
