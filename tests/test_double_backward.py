"""Second derivatives through the custom autograd functions: exact where the backward pass is differentiable,
an error (never a silently wrong number) where it is not."""

import pytest
import torch
from torch import nn
from torch.autograd import gradgradcheck

from perceiver import registry
from perceiver.core.attention import _RotaryRotation
from perceiver.core.attention_dropout import attention_with_dropout
from perceiver.core.linear import _GeluLinear, norm_linears
from perceiver.tasks.mlm import MaskedLanguageModel, MaskedLanguageModelConfig

TWICE = "differentiate twice a function that was marked with @once_differentiable"


def double(*shape):
    return torch.randn(*shape, dtype=torch.double, requires_grad=True)


def test_gelu_linear_second_derivatives_are_exact():
    torch.manual_seed(0)
    assert gradgradcheck(_GeluLinear.apply, (double(3, 4, 5), double(6, 5), double(6)))


def test_rotary_rotation_second_derivatives_are_exact():
    torch.manual_seed(0)
    angles = torch.randn(2, 1, 5, 4, dtype=torch.double).repeat(1, 1, 1, 2)  # the tables repeat for each half
    assert gradgradcheck(lambda x: _RotaryRotation.apply(x, angles.cos(), angles.sin()), (double(2, 2, 5, 8),))


def second_grad_raises(output: torch.Tensor, wrt: torch.Tensor) -> None:
    """A gradient penalty: the backward pass of ||d loss / d wrt||^2 must raise, not give a wrong number."""
    (first,) = torch.autograd.grad(output.pow(2).sum(), wrt, create_graph=True)  # its grad_output needs grad
    with pytest.raises(RuntimeError, match=TWICE):
        first.pow(2).sum().backward()
    with pytest.raises(RuntimeError):  # asked directly: the function's backward is not part of the graph
        torch.autograd.grad(first.pow(2).sum(), wrt)


def test_norm_linears_refuses_a_second_derivative():
    torch.manual_seed(0)
    x = double(2, 3, 8)
    norm, layer = nn.LayerNorm(8).double(), nn.Linear(8, 4).double()
    (out,) = norm_linears(x, norm, [layer])
    assert type(out.grad_fn).__name__ == "_NormLinearsBackward"
    second_grad_raises(out, x)


def test_attention_with_dropout_refuses_a_second_derivative():
    torch.manual_seed(0)
    q = double(2, 2, 5, 4)
    out = attention_with_dropout(q, double(2, 2, 7, 4), double(2, 2, 7, 4), None, 0.3)
    second_grad_raises(out, q)


def test_row_sparse_decoder_refuses_a_second_derivative():
    torch.manual_seed(0)
    values = {**registry.get("model", "mlm-tiny").load(), "row_sparse_backward": True}
    model = MaskedLanguageModel(MaskedLanguageModelConfig(**values)).train()
    logits = model(torch.randint(6, 262, (2, 16)))  # all positions in training: the row-sparse path
    assert type(logits.grad_fn).__name__ == "_RowSparseDecodeBackward"
    second_grad_raises(logits[:, :3], model.decoder.cross_attention.attention.q_proj.weight)
