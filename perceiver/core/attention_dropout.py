"""Attention with dropout on the attention probabilities, for CPUs.

On CPU, ``scaled_dot_product_attention`` with ``dropout_p > 0`` falls back to its reference implementation, which
keeps a float dropout mask, the dropped-out probabilities and a "safe" softmax's bookkeeping for the backward pass.
This function computes the same thing (softmax, then dropout scaled by 1 / (1 - p)) with fewer passes over the
(B, H, Q, K) attention maps, which dominate the memory traffic of cross-attention over long inputs: it keeps the
probabilities and the dropped-out probabilities, and needs no mask in the backward pass.

The dropout mask comes from :func:`drop_mask`: four 16-bit random numbers per 64-bit draw, about twice as fast as
``bernoulli_`` on CPU. The drop probability is rounded to a multiple of 2^-16 (0.1 -> 0.100006), and outputs are
scaled by the exact 1 / (1 - rounded p), so expectations are unchanged.

Shapes: q (B or 1, H, Q, D), k (B, H, K, D), v (B, H, K, Dv) -> (B, H, Q, Dv); ``attend_mask`` broadcastable to
(B, H, Q, K), True = may attend, every row with at least one True.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def drop_mask(shape, p: float, device=None):
    """A bool mask of ``shape``, True with probability ``p`` (rounded to a multiple of 2^-16), and that probability.

    On CPU: 64-bit random integers split into four 16-bit lanes, each compared with a threshold; elsewhere
    ``bernoulli_``.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type != "cpu":
        return torch.empty(shape, dtype=torch.bool, device=device).bernoulli_(p), p
    count = math.prod(shape)
    threshold = round(p * 65536)
    bits = torch.empty((count + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)
    lanes = bits.view(torch.int16)[:count]  # uniform in [-32768, 32767]
    return (lanes < threshold - 32768).view(shape), threshold / 65536


def _sum_to(grad: Tensor, shape: torch.Size) -> Tensor:
    """Sum ``grad`` over the dimensions where ``shape`` was broadcast (size 1)."""
    dims = [i for i, (g, s) in enumerate(zip(grad.shape, shape)) if s == 1 and g != 1]
    return grad.sum(dim=dims, keepdim=True) if dims else grad


class _AttentionWithDropout(torch.autograd.Function):
    """Saves q, k, v (contiguous), the probabilities p and the dropped-out probabilities y = p * keep.

    Backward without the mask: with Gy = dL/dy, the softmax backward p * (Gp - sum(p * Gp)) with Gp = Gy * keep is
    y * Gy - p * sum(y * Gy).
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, attend_mask: Optional[Tensor], p: float) -> Tensor:
        scale = q.shape[-1] ** -0.5
        k, v = k.contiguous(), v.contiguous()  # one copy each instead of one per matmul below and in backward
        scores = torch.matmul(q * scale, k.transpose(-1, -2))  # (B, H, Q, K)
        if attend_mask is not None:
            scores.masked_fill_(attend_mask.logical_not(), float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        del scores
        drop, p = drop_mask(probs.shape, p, probs.device)
        dropped = probs.masked_fill(drop, 0.0)
        del drop
        out = torch.matmul(dropped, v).mul_(1.0 / (1.0 - p))  # (B, H, Q, Dv)
        ctx.save_for_backward(q, k, v, probs, dropped)
        ctx.scale, ctx.p = scale, p
        return out

    @staticmethod
    @once_differentiable  # not differentiable itself: a second derivative raises
    def backward(ctx, grad_out: Tensor):
        q, k, v, probs, dropped = ctx.saved_tensors
        grad_out = grad_out * (1.0 / (1.0 - ctx.p))
        grad_v = torch.matmul(dropped.transpose(-1, -2), grad_out)  # (B, H, K, Dv)
        grad_scores = torch.matmul(grad_out, v.transpose(-1, -2)).mul_(dropped)  # y * Gy, (B, H, Q, K)
        grad_scores.addcmul_(probs, grad_scores.sum(dim=-1, keepdim=True), value=-1.0)  # - p * sum(y * Gy)
        grad_q = torch.matmul(grad_scores, k).mul_(ctx.scale)
        grad_k = torch.matmul(grad_scores.transpose(-1, -2), q).mul_(ctx.scale)
        return _sum_to(grad_q, q.shape), _sum_to(grad_k, k.shape), _sum_to(grad_v, v.shape), None, None


def attention_with_dropout(q: Tensor, k: Tensor, v: Tensor, attend_mask: Optional[Tensor], p: float) -> Tensor:
    """``softmax(q k^T / sqrt(D)) v`` with dropout ``p`` on the probabilities (training), as SDPA computes it."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"dropout must be in (0, 1), got {p}")
    return _AttentionWithDropout.apply(q, k, v, attend_mask, p)


@dataclass
class KeptDropout:
    """An attention-dropout mask that is kept, so that a recomputation drops the same probabilities.

    ``drop`` (B, H, Q, K) is True where a probability is dropped, ``p`` the rounded drop probability; an empty one
    (``drop`` None) is filled by the first attention that uses it.
    """

    drop: Optional[Tensor] = None
    p: float = 0.0

    def rows(self, positions: Tensor) -> "KeptDropout":
        """The masks of query rows ``positions`` (B, Q') of every example: (B, H, Q', K)."""
        index = positions[:, None, :, None].expand(-1, self.drop.shape[1], -1, self.drop.shape[3])
        return KeptDropout(self.drop.gather(2, index), self.p)


def attention_with_kept_dropout(q: Tensor, k: Tensor, v: Tensor, attend_mask: Optional[Tensor], p: float,
                                kept: KeptDropout) -> Tensor:
    """``softmax(q k^T / sqrt(D)) v`` with dropout ``p`` on the probabilities through the mask ``kept`` (drawn into
    it when it is empty), in plain autograd ops."""
    probs = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2))  # (B, H, Q, K)
    if attend_mask is not None:
        probs = probs.masked_fill(attend_mask.logical_not(), float("-inf"))
    probs = probs.softmax(dim=-1)
    if kept.drop is None:
        kept.drop, kept.p = drop_mask(probs.shape, p, probs.device)
    probs = probs.masked_fill(kept.drop, 0.0) if torch.is_grad_enabled() else probs.masked_fill_(kept.drop, 0.0)
    return torch.matmul(probs, v).mul_(1.0 / (1.0 - kept.p))  # (B, H, Q, Dv)


__all__ = ["KeptDropout", "attention_with_dropout", "attention_with_kept_dropout", "drop_mask"]
