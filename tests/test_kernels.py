"""The memory- and speed-minded pieces of the core compute what the plain formulas compute, gradients included."""

import pytest
import torch
import torch.nn.functional as F

from perceiver.core.attention import apply_rotary
from perceiver.core.layers import MLP
from perceiver.core.linear import _GeluLinear, gelu_linear, linear
from perceiver.core.position import RotaryEmbedding


def reference_rotary(x, rotary):
    cos, sin = rotary
    r = cos.shape[-1]
    x_rot, x_pass = x[..., :r], x[..., r:]
    x1, x2 = x_rot.chunk(2, dim=-1)
    return torch.cat((x_rot * cos + torch.cat((-x2, x1), dim=-1) * sin, x_pass), dim=-1)


def test_rotary_matches_the_rotate_half_formula_and_its_gradient():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 8, dtype=torch.double, requires_grad=True)
    cos, sin = RotaryEmbedding(4)(torch.arange(7).expand(2, 7))
    rotary = (cos.double(), sin.double())
    grad = torch.randn(2, 3, 7, 8, dtype=torch.double)
    (ours,) = torch.autograd.grad(apply_rotary(x, rotary), x, grad)
    (expected,) = torch.autograd.grad(reference_rotary(x, rotary), x, grad)
    assert torch.allclose(apply_rotary(x, rotary), reference_rotary(x, rotary), atol=1e-12)
    assert torch.allclose(ours, expected, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: apply_rotary(t, rotary), (x,))


def test_rotation_keeps_norms_and_leaves_the_unrotated_channels_alone():
    x = torch.randn(1, 2, 5, 8)
    out = apply_rotary(x, RotaryEmbedding(4)(torch.arange(5)[None] * 100))
    assert torch.allclose(out[..., :4].norm(dim=-1), x[..., :4].norm(dim=-1), atol=1e-5)
    assert torch.equal(out[..., 4:], x[..., 4:])


def test_mlp_gradients_equal_those_of_the_unfused_formula():
    torch.manual_seed(0)
    mlp = MLP(16, 4).double()
    x = torch.randn(3, 5, 16, dtype=torch.double, requires_grad=True)
    grad = torch.randn(3, 5, 16, dtype=torch.double)

    def unfused(x):
        return mlp.fc2(F.gelu(mlp.fc1(mlp.norm(x))))

    params = [x, *mlp.parameters()]
    ours = torch.autograd.grad(mlp(x), params, grad)
    expected = torch.autograd.grad(unfused(x), params, grad)
    assert torch.allclose(mlp(x), unfused(x), atol=1e-12)
    for a, b in zip(ours, expected):
        assert torch.allclose(a, b, atol=1e-12)


def test_gelu_linear_gradcheck_and_autocast_dtypes():
    h = torch.randn(4, 6, dtype=torch.double, requires_grad=True)
    w = torch.randn(3, 6, dtype=torch.double, requires_grad=True)
    b = torch.randn(3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(_GeluLinear.apply, (h, w, b))
    assert torch.autograd.gradcheck(lambda h, w: _GeluLinear.apply(h, w, None), (h, w))
    layer = torch.nn.Linear(6, 3).double()
    assert torch.allclose(gelu_linear(h, layer), layer(F.gelu(h)), atol=1e-12)

    mlp = MLP(16, 2)
    x = torch.randn(2, 4, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mlp(x)
    out.float().sum().backward()
    assert out.dtype == torch.bfloat16
    assert x.grad.dtype == mlp.fc2.weight.grad.dtype == mlp.fc2.bias.grad.dtype == torch.float32


@pytest.mark.parametrize("rows", [1, 3, 16])
def test_few_row_linear_equals_f_linear(rows):
    torch.manual_seed(0)
    weight, bias = torch.randn(64, 32), torch.randn(64)
    x = torch.randn(rows, 1, 32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with torch.no_grad():
            assert torch.allclose(linear(x, weight, bias), F.linear(x, weight, bias), atol=1e-5)
            assert torch.allclose(linear(x, weight), F.linear(x, weight), atol=1e-5)
            odd = torch.randn(63, 32)  # output rows that do not split evenly take F.linear
            assert torch.allclose(linear(x, odd), F.linear(x, odd), atol=1e-5)
    finally:
        torch.set_num_threads(threads)


def test_norm_linears_gradients_equal_those_of_layer_norm_then_linear():
    from perceiver.core.linear import norm_linears

    torch.manual_seed(0)
    norm = torch.nn.LayerNorm(8).double()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    layers = [torch.nn.Linear(8, 6).double(), torch.nn.Linear(8, 4, bias=False).double()]
    x = torch.randn(2, 5, 8, dtype=torch.double, requires_grad=True)
    params = [x, norm.weight, norm.bias, *(p for layer in layers for p in layer.parameters())]
    grads = [torch.randn(2, 5, 6, dtype=torch.double), torch.randn(2, 5, 4, dtype=torch.double)]

    ours = norm_linears(x, norm, layers)
    expected = [layer(norm(x)) for layer in layers]
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(ours, expected))
    for a, b in zip(torch.autograd.grad(ours, params, grads), torch.autograd.grad(expected, params, grads)):
        assert torch.allclose(a, b, atol=1e-12)
    # an output that gets no gradient, and frozen parameters
    layers[0].weight.requires_grad_(False)
    (first, _) = norm_linears(x, norm, layers)
    gx, = torch.autograd.grad(first.sum(), x)
    assert torch.allclose(gx, torch.autograd.grad(layers[0](norm(x)).sum(), x)[0], atol=1e-12)


def test_norm_linears_under_autocast_returns_input_dtypes():
    from perceiver.core.linear import norm_linears

    norm, layer = torch.nn.LayerNorm(8), torch.nn.Linear(8, 4)
    x = torch.randn(3, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (out,) = norm_linears(x, norm, [layer])
    out.float().sum().backward()
    assert out.dtype == torch.bfloat16
    assert x.grad.dtype == norm.weight.grad.dtype == layer.weight.grad.dtype == layer.bias.grad.dtype == torch.float32
    reference = layer(norm(x.detach()))
    assert torch.allclose(out.float(), reference, atol=0.05)
