"""``linear``: ``F.linear`` with a faster path for the few-row products of decoding on a CPU.

Decoding one token multiplies a handful of rows by every weight matrix of the model, so it streams the weights
from memory; the speed is that of the matrix-vector kernel. On CPUs, MKL runs that kernel on one thread whatever
``torch.get_num_threads()`` says, which leaves half the memory bandwidth of a 2-core machine unused. Splitting the
weight's output rows into one group per thread and multiplying the groups as a batch (``torch.bmm`` parallelises
over the batch) reads the same memory, without a copy, about twice as fast. Training and large inputs take
``F.linear`` unchanged.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

MAX_SPLIT_ROWS = 16
"""Inputs with at most this many rows take the split path (on CPU, without autograd)."""


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``F.linear(x, weight, bias)``: (..., in) -> (..., out), with ``weight`` (out, in)."""
    num_groups = torch.get_num_threads()
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if (
        num_groups < 2
        or x.device.type != "cpu"
        or not 0 < rows <= MAX_SPLIT_ROWS
        or torch.is_grad_enabled()
        or weight.shape[0] % num_groups
    ):
        return F.linear(x, weight, bias)
    out_features, in_features = weight.shape
    groups = weight.view(num_groups, out_features // num_groups, in_features).transpose(1, 2)  # (G, in, out/G)
    x_rows = x.reshape(1, rows, in_features).expand(num_groups, rows, in_features)  # (G, rows, in)
    out = torch.bmm(x_rows, groups).transpose(0, 1).reshape(*x.shape[:-1], out_features)  # (..., out)
    return out + bias if bias is not None else out
