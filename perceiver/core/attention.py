"""Multi-head attention on ``torch.nn.functional.scaled_dot_product_attention``, with a key/value cache.

Mask convention
---------------
* Public APIs take ``pad_mask``: a bool tensor of shape ``(B, N)`` that is ``True`` at **padding** positions.
* Attention layers take ``attend_mask``: a bool tensor broadcastable to ``(B, H, Q, K)`` that is ``True`` where a
  query **may attend** to a key (the ``scaled_dot_product_attention`` convention). ``None`` means "attend to all".
* :func:`attend_mask` converts the first into the second, once per forward pass. Its one rule for padding: a
  query may not attend to a padding key, unless that would leave it nothing to attend to (an empty row makes the
  softmax undefined); such a row (a padding query of a left-padded causal sequence, or latents over an input that is
  all padding) keeps the keys it would see without padding. Its output is finite and meaningless, and no real
  position reads it: real queries of a causal sequence always see themselves, and padding keys are hidden from them.
* A causal mask with fewer queries than keys is right-aligned: query ``i`` of ``Q`` sits at key position
  ``K - Q + i`` (a plain bool tensor: torch's ``causal_lower_right`` bias is a tensor subclass that dispatch modes
  such as ``FlopCounterMode`` fail on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from perceiver.config_checks import check_ranges
from perceiver.core.linear import concat_linears, is_plain, linear, norm_linears, project
from perceiver.core.split import SplitInput, norm_and_project

if TYPE_CHECKING:
    from perceiver.core.attention_dropout import KeptDropout

Rotary = Tuple[Tensor, Tensor]  # (cos, sin), each (B, 1, N, R): rotary angles of N positions


def attend_mask(
    pad_mask: Optional[Tensor], num_queries: int = 1, num_keys: Optional[int] = None, causal: bool = False,
    device=None,
) -> Optional[Tensor]:
    """A ``True = may attend`` mask from a key pad mask (B, K) (True at padding), by the rule of the module docstring.

    :return: (B or 1, 1, Q, K) when ``causal``, (B, 1, 1, K) (the same for every query) otherwise; ``None`` when
        nothing needs masking (no pad mask, not causal). Callers pass ``None`` rather than a pad mask without padding.
    """
    if pad_mask is None and not causal:
        return None
    num_keys = pad_mask.shape[1] if num_keys is None else num_keys
    device = pad_mask.device if pad_mask is not None else device
    structure = None
    if causal:
        query_pos = torch.arange(num_keys - num_queries, num_keys, device=device)[:, None]  # (Q, 1) key index
        structure = (torch.arange(num_keys, device=device)[None, :] <= query_pos)[None, None]  # (1, 1, Q, K)
        if pad_mask is None:
            return structure
    mask = ~pad_mask[:, None, None, :]  # (B, 1, 1, K)
    if structure is not None:
        mask = mask & structure
    empty = ~mask.any(dim=-1, keepdim=True)  # rows that padding leaves empty
    return mask | (empty if structure is None else empty & structure)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs ``(i, i + R/2)`` of the first ``R`` channels of ``x`` by the angles of ``cos``/``sin``."""
    half = cos.shape[-1] // 2
    cos, sin = cos[..., :half].to(x.dtype), sin[..., :half].to(x.dtype)  # the tables repeat for the second half
    x1, x2, x_pass = x[..., :half], x[..., half : 2 * half], x[..., 2 * half :]
    return torch.cat((torch.addcmul(x1 * cos, x2, sin, value=-1), torch.addcmul(x2 * cos, x1, sin), x_pass), dim=-1)


class _RotaryRotation(torch.autograd.Function):
    """A rotation's gradient is the rotation by the opposite angles, so the backward pass needs only the angles:
    autograd would otherwise keep the unrotated queries and keys as well as the rotated ones. The backward pass is
    itself a rotation, so second derivatives are exact (tests/test_double_backward.py)."""

    @staticmethod
    def forward(ctx, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        ctx.save_for_backward(cos, sin)
        return _rotate(x, cos, sin)

    @staticmethod
    def backward(ctx, grad: Tensor):
        cos, sin = ctx.saved_tensors
        return _rotate(grad, cos, -sin), None, None


def apply_rotary(x: Tensor, rotary: Rotary) -> Tensor:
    """Rotate the first ``R`` channels of each head of ``x`` (B, H, N, D) by the angles in ``rotary`` (B, 1, N, R).

    The angles are position tables and get no gradient.
    """
    cos, sin = rotary
    if torch.is_grad_enabled() and x.requires_grad:
        return _RotaryRotation.apply(x, cos, sin)
    return _rotate(x, cos, sin)


class KVCache:
    """Preallocated keys and values of one attention layer.

    ``keys``: (B, H, capacity, Dqk), ``values``: (B, H, capacity, Dv); the first ``length`` positions are filled.
    Appending writes in place, so decoding one token costs no reallocation.

    ``projection`` holds the layer's key/value projections (with the query one in self-attention) concatenated into
    one weight (out_q + out_k + out_v, in) and bias, built by :class:`MultiHeadAttention` on the cache's first use:
    a decoding step then makes one product where it made three. Keys and values in the cache are only valid for the
    weights that computed them, so the concatenation lives exactly as long: a new cache (a new ``generate`` call)
    reads the weights again; ``reset`` keeps it.
    """

    def __init__(self, keys: Tensor, values: Tensor):
        self.keys = keys
        self.values = values
        self.length = 0
        self.projection: Optional[Tuple[Tensor, Optional[Tensor]]] = None

    @classmethod
    def empty(cls, batch_size: int, num_heads: int, capacity: int, qk_dim: int, v_dim: int, like: Tensor) -> "KVCache":
        keys = like.new_empty(batch_size, num_heads, capacity, qk_dim)
        values = like.new_empty(batch_size, num_heads, capacity, v_dim)
        return cls(keys, values)

    @property
    def capacity(self) -> int:
        return self.keys.shape[2]

    def append(self, keys: Tensor, values: Tensor) -> Tuple[Tensor, Tensor]:
        """Append (B, H, T, D) keys/values; return views of all filled positions."""
        start, end = self.length, self.length + keys.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache overflow: {end} positions > capacity {self.capacity}")
        self.keys[:, :, start:end] = keys
        self.values[:, :, start:end] = values
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def reset(self) -> None:
        self.length = 0


@dataclass
class AttentionConfig:
    """Shape of one multi-head attention.

    ``num_qk_channels`` and ``num_v_channels`` default to the query input channels; ``num_output_channels``
    defaults to the query input channels too (so the attention output can be added to its input).
    """

    num_heads: int
    num_q_input_channels: int
    num_kv_input_channels: int
    num_qk_channels: Optional[int] = None
    num_v_channels: Optional[int] = None
    num_output_channels: Optional[int] = None
    dropout: float = 0.0
    bias: bool = True
    """Bias of the query, key and value projections (and of the output projection unless ``out_bias`` is set)."""
    out_bias: Optional[bool] = None
    """Bias of the output projection (None: same as ``bias``)."""

    def __post_init__(self):
        check_ranges(
            self,
            {"num_heads": ">= 1", "num_q_input_channels": ">= 1", "num_kv_input_channels": ">= 1",
             "num_qk_channels": ">= 1", "num_v_channels": ">= 1", "num_output_channels": ">= 1", "dropout": "[0, 1)"},
        )


class MultiHeadAttention(nn.Module):
    """Multi-head attention of queries (B, Q, Cq) over keys/values (B, K, Ckv) -> (B, Q, Cout).

    Serves cross-attention (Cq != Ckv) and self-attention. Rotary embeddings, when given, rotate the first
    channels of each query and key head. With a :class:`KVCache`, the keys and values computed from ``x_kv`` are
    appended to the cache and the queries attend to all cached positions.
    """

    def __init__(self, config: AttentionConfig):
        super().__init__()
        qk = config.num_qk_channels or config.num_q_input_channels
        v = config.num_v_channels or qk
        out = config.num_output_channels or config.num_q_input_channels
        if qk % config.num_heads or v % config.num_heads:
            raise ValueError(
                f"qk channels ({qk}) and v channels ({v}) must be divisible by num_heads ({config.num_heads})"
            )
        self.num_heads = config.num_heads
        self.qk_head_dim = qk // config.num_heads
        self.v_head_dim = v // config.num_heads
        self.dropout = config.dropout
        self.q_proj = nn.Linear(config.num_q_input_channels, qk, bias=config.bias)
        self.k_proj = nn.Linear(config.num_kv_input_channels, qk, bias=config.bias)
        self.v_proj = nn.Linear(config.num_kv_input_channels, v, bias=config.bias)
        self.o_proj = nn.Linear(v, out, bias=config.bias if config.out_bias is None else config.out_bias)

    def _heads(self, x: Tensor) -> Tensor:
        """(B, N, H * D) -> (B, H, N, D), a view. Plain view/transpose rather than ``einops.rearrange``: these run
        three times per layer and token in cached decoding, where rearrange's per-call Python overhead made each
        generated token of a small model measurably slower."""
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, -1).transpose(1, 2)

    def forward(
        self,
        x_q: Tensor,
        x_kv: Tensor,
        attend_mask: Optional[Tensor] = None,
        is_causal: bool = False,
        rotary_q: Optional[Rotary] = None,
        rotary_k: Optional[Rotary] = None,
        kv_cache: Optional[KVCache] = None,
        q_norm: Optional[nn.LayerNorm] = None,
        kv_norm: Optional[nn.LayerNorm] = None,
        kept_dropout: Optional["KeptDropout"] = None,
    ) -> Tensor:
        """
        :param x_q: queries input (B, Q, Cq)
        :param x_kv: keys/values input (B, K, Ckv); with a cache, only the new positions; a
            :class:`~perceiver.core.split.SplitInput` (with ``kv_norm``) is normalised and projected without copying
            its shared channels per example
        :param attend_mask: bool (B or 1, 1, Q, K_total), True = may attend (see module docstring)
        :param is_causal: use the kernel's own causal mask (only valid for Q == K_total and no ``attend_mask``)
        :param rotary_q: rotary angles of the query positions, (B, 1, Q, R)
        :param rotary_k: rotary angles of the key positions in ``x_kv``, (B, 1, K, R)
        :param kv_cache: cache to append the new keys/values to
        :param q_norm: LayerNorm applied to ``x_q`` first (pre-LN layers pass theirs, so that the normalised copy is
            not kept for the backward pass); likewise ``kv_norm`` for ``x_kv``
        :param kept_dropout: in training, drop attention probabilities through this
            :class:`~perceiver.core.attention_dropout.KeptDropout` mask (drawn into it when empty), so that a
            recomputation (the row-sparse decoder backward pass) drops the same ones
        :return: (B, Q, Cout)
        """
        fused = self._fused_decoding_projections(x_q, x_kv, q_norm, kv_norm, rotary_q, rotary_k, kv_cache)
        if fused is not None:
            q, k, v = fused
        else:
            q, k, v = self._project(x_q, x_kv, q_norm, kv_norm)
            q, k, v = self._heads(q), self._heads(k), self._heads(v)  # (B, H, Q, Dqk), (B, H, K, Dqk), (B, H, K, Dv)
            if rotary_q is not None:
                q = apply_rotary(q, rotary_q)
            if rotary_k is not None:
                k = apply_rotary(k, rotary_k)
        if kv_cache is not None:
            k, v = kv_cache.append(k, v)
        if q.shape[0] != k.shape[0]:  # latents or queries shared by the batch: the fused kernels need equal batches
            q = q.expand(k.shape[0], -1, -1, -1)  # a view, no copy
        dropout = self.dropout if self.training else 0.0
        if dropout > 0 and kept_dropout is not None:
            from perceiver.core.attention_dropout import attention_with_kept_dropout

            out = attention_with_kept_dropout(q, k, v, attend_mask, dropout, kept_dropout)
        elif dropout > 0 and not is_causal and q.device.type == "cpu":  # SDPA's CPU dropout path is a slow fallback
            from perceiver.core.attention_dropout import attention_with_dropout

            out = attention_with_dropout(q, k, v, attend_mask, dropout)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attend_mask, dropout_p=dropout, is_causal=is_causal)
        out = out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)  # (B, H, Q, Dv) -> (B, Q, H * Dv)
        return project(self.o_proj, out)

    def _project(self, x_q: Tensor, x_kv, q_norm: Optional[nn.LayerNorm], kv_norm: Optional[nn.LayerNorm]):
        """Queries (B, Q, H * Dqk), keys (B, K, H * Dqk) and values (B, K, H * Dv), each projection on its own."""
        if q_norm is not None and q_norm is kv_norm and x_q is x_kv:
            return norm_linears(x_q, q_norm, (self.q_proj, self.k_proj, self.v_proj))
        q = norm_linears(x_q, q_norm, (self.q_proj,))[0] if q_norm is not None else project(self.q_proj, x_q)
        if isinstance(x_kv, SplitInput):
            k, v = norm_and_project(kv_norm, (self.k_proj, self.v_proj), x_kv)
        elif kv_norm is not None:
            k, v = norm_linears(x_kv, kv_norm, (self.k_proj, self.v_proj))
        else:
            k, v = project(self.k_proj, x_kv), project(self.v_proj, x_kv)
        return q, k, v

    def _fused_decoding_projections(
        self, x_q: Tensor, x_kv, q_norm: Optional[nn.LayerNorm], kv_norm: Optional[nn.LayerNorm],
        rotary_q: Optional[Rotary], rotary_k: Optional[Rotary], kv_cache: Optional[KVCache],
    ) -> Optional[Tuple[Tensor, Tensor, Tensor]]:
        """Rotated heads q (B, H, Q, Dqk), k (B, H, K, Dqk), v (B, H, K, Dv) from one product per input, or None.

        Only when decoding with a cache (no autograd) and every projection and LayerNorm involved is plain
        (:func:`~perceiver.core.linear.is_plain`): a wrapped layer (PEFT, quantized, hooked) is called instead, on the
        path of :meth:`_project`. Self-attention (one LayerNorm over one input) projects q, k and v in one product and
        rotates q and k in one call; cross-attention projects k and v in one.
        """
        if kv_cache is None or torch.is_grad_enabled() or isinstance(x_kv, SplitInput):
            return None
        shared = q_norm is not None and q_norm is kv_norm and x_q is x_kv
        layers = (self.q_proj, self.k_proj, self.v_proj) if shared else (self.k_proj, self.v_proj)
        if not all(is_plain(m) for m in (*layers, kv_norm) if m is not None):
            return None
        if kv_cache.projection is None:
            kv_cache.projection = concat_linears(layers)
        weight, bias = kv_cache.projection
        heads, qk_channels = self.num_heads, self.num_heads * self.qk_head_dim
        x_kv = _layer_norm(x_kv, kv_norm)
        projected = linear(x_kv, weight, bias)  # (B, K, [H * Dqk +] H * Dqk + H * Dv)
        batch, length, _ = projected.shape
        if shared:
            qk = projected[..., : 2 * qk_channels].view(batch, length, 2 * heads, -1).transpose(1, 2)  # (B, 2H, K, D)
            if rotary_q is not None and rotary_q is rotary_k:
                qk = apply_rotary(qk, rotary_q)
                rotary_q = rotary_k = None
            q, k = qk[:, :heads], qk[:, heads:]
            v = projected[..., 2 * qk_channels :]
        else:
            q = self._heads(project(self.q_proj, _layer_norm(x_q, q_norm)))  # the query's own layer may be wrapped
            k = projected[..., :qk_channels].view(batch, length, heads, -1).transpose(1, 2)
            v = projected[..., qk_channels:]
        v = v.view(batch, length, heads, -1).transpose(1, 2)
        if rotary_q is not None:
            q = apply_rotary(q, rotary_q)
        if rotary_k is not None:
            k = apply_rotary(k, rotary_k)
        return q, k, v


def _layer_norm(x: Tensor, norm: Optional[nn.LayerNorm]) -> Tensor:
    """``norm(x)``, without the module call for a plain LayerNorm; ``x`` when ``norm`` is None."""
    if norm is None:
        return x
    if not is_plain(norm):
        return norm(x)
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
