"""Choosing the next token from logits."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor


def validate_sampling(top_k: Optional[int], top_p: Optional[float], temperature: float) -> None:
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")


def sample_next(
    logits: Tensor,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    temperature: float = 1.0,
    generator: Union[None, torch.Generator, Sequence[torch.Generator]] = None,
) -> Tensor:
    """Sample one token per row from ``logits`` (B, V) -> (B, 1).

    ``temperature == 0`` picks the most likely token (greedy). ``top_k`` keeps the k most likely tokens,
    ``top_p`` the smallest set whose probability reaches p (nucleus sampling). ``generator`` is one generator for
    the batch, or a sequence of B generators, one per row: then a row's tokens do not depend on the other rows.
    """
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        threshold = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative - sorted_logits.softmax(dim=-1) >= top_p  # keeps at least the top token
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    if generator is None or isinstance(generator, torch.Generator):
        return torch.multinomial(probs, num_samples=1, generator=generator)
    if len(generator) != probs.shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {probs.shape[0]} rows")
    return torch.cat([torch.multinomial(row[None], 1, generator=gen) for row, gen in zip(probs, generator)])
