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

    With mean m and inverse deviation r of each position over all channels, and W' = W * gamma:
    ``p(norm(x)) = r * (own @ W'_own.T + shared @ W'_shared.T - m * W'.sum(1)) + W @ beta + b``.
    """
    if not (is_plain(norm) and all(is_plain(projection) for projection in projections)):
        normed = norm(x.full())  # wrapped or replaced layers are called
        return [projection(normed) for projection in projections]
    own, shared = x.own, x.shared
    num_own, channels = own.shape[-1], own.shape[-1] + shared.shape[-1]
    total = own.sum(-1) + shared.sum(-1)  # (B, N)
    squares = own.pow(2).sum(-1) + shared.pow(2).sum(-1)
    mean = total / channels
    rstd = torch.rsqrt((squares / channels - mean.pow(2)).clamp(min=0) + norm.eps)
    outs = []
    for projection in projections:
        weight = projection.weight * norm.weight  # (D, C)
        shared_part = shared @ weight[:, num_own:].T  # (N, D): once per batch
        own_part = own @ weight[:, :num_own].T  # (B, N, D)
        offset = projection.weight @ norm.bias + (projection.bias if projection.bias is not None else 0)
        outs.append((own_part + shared_part - mean[..., None] * weight.sum(1)) * rstd[..., None] + offset)
    return outs
