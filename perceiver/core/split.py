"""An adapted input whose last channels are the same for every example (pixels followed by position features), and
its LayerNorm + projection without copying the shared part once per example."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
from torch import Tensor, nn

from perceiver.core.linear import is_plain


@dataclass
class SplitInput:
    """An adapted input of shape (B, N, Cp + Cs) whose last Cs channels are the same for every example, such as
    pixels followed by position features: ``own`` (B, N, Cp) and ``shared`` (N, Cs).

    The encoder normalises and projects it without making B copies of the shared channels: the key/value
    projections of the shared part run once per batch instead of once per example (exact up to float rounding; most
    of the work of an image cross-attention when Cs >> Cp).
    """

    own: Tensor
    shared: Tensor

    @property
    def shape(self) -> Tuple[int, int, int]:
        return (self.own.shape[0], self.own.shape[1], self.own.shape[2] + self.shared.shape[1])

    def full(self) -> Tensor:
        """The (B, N, Cp + Cs) tensor."""
        return torch.cat([self.own, self.shared.expand(self.own.shape[0], -1, -1)], dim=-1)


def norm_and_project(norm: nn.LayerNorm, projections: Sequence[nn.Linear], x: SplitInput) -> List[Tensor]:
    """``[p(norm(x.full())) for p in projections]``, each (B, N, D), without materialising ``x.full()``.

    With mean m and inverse deviation r of each position over all channels (:func:`_moments`), and W' = W * gamma:
    ``p(norm(x)) = r * (own @ W'_own.T + shared @ W'_shared.T - m * W'.sum(1)) + W @ beta + b``.
    """
    if not (is_plain(norm) and all(is_plain(projection) for projection in projections)):
        normed = norm(x.full())  # wrapped or replaced layers are called
        return [projection(normed) for projection in projections]
    own, shared = x.own, x.shared
    mean, rstd = _moments(own, shared, norm.eps)
    num_own = own.shape[-1]
    outs = []
    for projection in projections:
        weight = projection.weight * norm.weight  # (D, C)
        offset = projection.weight @ norm.bias + (projection.bias if projection.bias is not None else 0)
        # in place on the one (B, N, D) result: a chain of out-of-place ops held up to four of them at once
        out = own @ weight[:, :num_own].T  # (B, N, D)
        out += shared @ weight[:, num_own:].T  # (N, D): once per batch
        out.addcmul_(mean[..., None], weight.sum(1), value=-1)
        outs.append(out.mul_(rstd[..., None]).add_(offset))
    return outs


def _moments(own: Tensor, shared: Tensor, eps: float) -> Tuple[Tensor, Tensor]:
    """Mean m and 1 / sqrt(var + eps) over all Cp + Cs channels of each position, both (B, N), in two passes.

    With c the mean of the shared channels of a position (once per batch), the squared deviations from m split into
    ``sum((own - m)^2) + sum((shared - c)^2) + Cs * (c - m)^2``: no E[x^2] - E[x]^2 cancellation when the channels sit
    far from zero.
    """
    num_shared = shared.shape[-1]
    channels = own.shape[-1] + num_shared
    shared_mean = shared.mean(-1)  # (N,)
    shared_spread = (shared - shared_mean[:, None]).pow(2).sum(-1)  # (N,)
    mean = (own.sum(-1) + num_shared * shared_mean) / channels  # (B, N)
    spread = (own - mean[..., None]).pow(2).sum(-1) + shared_spread + num_shared * (shared_mean - mean).pow(2)
    return mean, torch.rsqrt(spread / channels + eps)
