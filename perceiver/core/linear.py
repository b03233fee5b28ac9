"""Linear products: ``linear`` (``F.linear`` with a faster path for the few-row products of decoding on a CPU), and
``norm_linears`` (LayerNorm, then projections) and ``gelu_linear`` (GELU, then a projection), which keep less for the
backward pass than autograd would.

The fused paths read a layer's parameters instead of calling it, which is only the same computation when the layer
is a plain ``nn.Linear`` / ``nn.LayerNorm`` (:func:`is_plain`). A layer that was wrapped or replaced (a PEFT LoRA
layer, a quantized linear, a subclass, a tensor-subclass weight, a module with hooks) is called instead, so that
what a user or a library put there takes part.

Decoding one token multiplies a handful of rows by every weight matrix of the model, so it streams the weights
from memory; the speed is that of the matrix-vector kernel. On CPUs, MKL runs that kernel on one thread whatever
``torch.get_num_threads()`` says, which leaves half the memory bandwidth of a 2-core machine unused. Splitting the
weight's output rows into one group per thread and multiplying the groups as a batch (``torch.bmm`` parallelises
over the batch) reads the same memory, without a copy, about twice as fast. Training and large inputs take
``F.linear`` unchanged.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

MAX_SPLIT_ROWS = 16
"""Inputs with at most this many rows take the split path (on CPU, without autograd)."""

_PLAIN_TENSORS = (nn.Parameter, Tensor)
"""Parameter types a fused path may read: not tensor subclasses such as quantized weights or DTensors. Plain
tensors too, because FSDP swaps parameters for plain tensor views during forward and recomputation."""

_CONTAINERS = (nn.ModuleList, nn.ModuleDict, nn.Sequential, nn.Identity, nn.Dropout, nn.GELU, nn.Embedding)


def _hooked(module: nn.Module) -> bool:
    from torch.nn.modules import module as torch_module

    return bool(
        module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
        or getattr(module, "_backward_pre_hooks", None)
        or torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks
        or torch_module._global_backward_hooks or getattr(torch_module, "_global_backward_pre_hooks", None)
    )


def is_plain(module: nn.Module) -> bool:
    """True when ``module`` is an ``nn.Linear`` or ``nn.LayerNorm`` itself (not a subclass or replacement) with
    ordinary parameters and no hooks: then reading its parameters computes exactly what calling it would."""
    return (
        type(module) in (nn.Linear, nn.LayerNorm)
        and not _hooked(module)
        and all(type(p) in _PLAIN_TENSORS for p in module._parameters.values() if p is not None)
    )


def is_plain_tree(module: nn.Module) -> bool:
    """True when every module inside ``module`` is one of this project's own, a plain layer (:func:`is_plain`) or
    a torch container, with no hooks: a functional path over the whole tree then computes what its modules would."""
    for sub in module.modules():
        if _hooked(sub):
            return False
        if type(sub) in (nn.Linear, nn.LayerNorm):
            if not is_plain(sub):
                return False
        elif not (type(sub).__module__.startswith("perceiver.") or type(sub) in _CONTAINERS):
            return False
    return True


def project(layer: nn.Module, x: Tensor) -> Tensor:
    """``layer(x)`` for a linear layer: (..., in) -> (..., out); a plain ``nn.Linear`` takes :func:`linear`."""
    return linear(x, layer.weight, layer.bias) if is_plain(layer) else layer(x)


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``F.linear(x, weight, bias)``: (..., in) -> (..., out), with ``weight`` (out, in)."""
    if torch.compiler.is_compiling():  # the compiler picks its own kernel (and would break the graph at the next call)
        return F.linear(x, weight, bias)
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
    if bias is None:
        out = torch.bmm(x_rows, groups)  # (G, rows, out/G)
    else:  # the bias added by the product (under autocast in its dtype, as F.linear's)
        out = torch.baddbmm(bias.view(num_groups, 1, out_features // num_groups), x_rows, groups)
    return out.transpose(0, 1).reshape(*x.shape[:-1], out_features)  # (..., out)


def concat_linears(layers: Sequence[nn.Linear]) -> Tuple[Tensor, Optional[Tensor]]:
    """One weight (sum of out_i, in) and bias (sum of out_i,) computing ``cat([layer(x) for layer in layers], -1)``
    for plain linear layers of the same input size; the bias is None when no layer has one, zeros stand in for a
    missing one otherwise. A copy: it does not follow later changes of the layers' weights."""
    weight = torch.cat([layer.weight for layer in layers]).detach()
    if all(layer.bias is None for layer in layers):
        return weight, None
    biases = [layer.bias if layer.bias is not None else layer.weight.new_zeros(layer.out_features) for layer in layers]
    return weight, torch.cat(biases).detach()


class _NormLinears(torch.autograd.Function):
    """``[F.linear(layer_norm(x), W_i, b_i) for i]`` that keeps ``x`` instead of ``layer_norm(x)``.

    Every pre-LN layer normalises its input and projects the result; autograd would keep both the input (for the
    LayerNorm's backward) and the normalised copy (for the projections' weight gradients). The backward pass here
    recomputes the normalisation, one cheap pass over ``x``. Products run in the dtype of the incoming gradients
    (that of the autocast forward); gradients come back in the dtypes of the inputs.
    """

    @staticmethod
    def forward(ctx, x: Tensor, norm_weight: Tensor, norm_bias: Tensor, eps: float, *params: Optional[Tensor]):
        ctx.eps = eps
        ctx.save_for_backward(x, norm_weight, norm_bias, *params)
        normed = F.layer_norm(x, x.shape[-1:], norm_weight, norm_bias, eps)
        return tuple(F.linear(normed, params[i], params[i + 1]) for i in range(0, len(params), 2))

    @staticmethod
    @once_differentiable  # not differentiable itself: a second derivative raises
    def backward(ctx, *grads: Optional[Tensor]):
        x, norm_weight, norm_bias, *params = ctx.saved_tensors
        needs = ctx.needs_input_grad
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(need) for t, need in zip((x, norm_weight, norm_bias), needs[:3])]
            normed = F.layer_norm(leaves[0], x.shape[-1:], leaves[1], leaves[2], ctx.eps)
        flat_normed = normed.detach().reshape(-1, x.shape[-1])
        grad_normed = None
        param_grads: List[Optional[Tensor]] = []
        for index, grad in enumerate(grads):
            weight, bias = params[2 * index], params[2 * index + 1]
            need_weight, need_bias = needs[4 + 2 * index], needs[5 + 2 * index]
            if grad is None:
                param_grads += [None, None]
                continue
            flat_grad = grad.reshape(-1, grad.shape[-1])
            part = grad @ weight.to(grad.dtype)
            grad_normed = part if grad_normed is None else grad_normed + part
            param_grads.append((flat_grad.T @ flat_normed.to(grad.dtype)).to(weight.dtype) if need_weight else None)
            param_grads.append(flat_grad.sum(dim=0).to(bias.dtype) if need_bias else None)
        wanted = [t for t in leaves if t.requires_grad]
        leaf_grads = iter(torch.autograd.grad(normed, wanted, grad_normed.to(normed.dtype)) if wanted else ())
        return (*(next(leaf_grads) if t.requires_grad else None for t in leaves), None, *param_grads)


def norm_linears(x: Tensor, norm: nn.LayerNorm, layers: Sequence[nn.Module]) -> List[Tensor]:
    """``[layer(norm(x)) for layer in layers]``: (..., C) -> [(..., out_i)]; in training with plain layers the
    normalised ``x`` is not kept for the backward pass (see :class:`_NormLinears`)."""
    plain = is_plain(norm) and all(is_plain(layer) for layer in layers)
    if plain and torch.is_grad_enabled() and norm.weight is not None:  # decoding skips this
        params = [p for layer in layers for p in (layer.weight, layer.bias)]
        if x.requires_grad or any(p is not None and p.requires_grad for p in (norm.weight, norm.bias, *params)):
            return list(_NormLinears.apply(x, norm.weight, norm.bias, norm.eps, *params))
    normed = norm(x)
    return [project(layer, normed) for layer in layers]


class _GeluLinear(torch.autograd.Function):
    """``F.linear(gelu(h), weight, bias)`` that keeps ``h`` for the backward pass and recomputes ``gelu(h)`` there.

    Autograd would keep both ``h`` and ``gelu(h)``, the two widest activations of an MLP; recomputing the GELU
    costs one elementwise pass and saves one of them. Under autocast the products run in the dtype autocast chose
    for the forward pass (that of ``grad_out``); gradients come back in the dtypes of the inputs. The backward pass
    is itself differentiable: second derivatives are exact (tests/test_double_backward.py).
    """

    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        ctx.save_for_backward(h, weight)
        ctx.has_bias = bias is not None
        ctx.bias_dtype = bias.dtype if bias is not None else None
        return F.linear(F.gelu(h), weight, bias)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        h, weight = ctx.saved_tensors
        dtype = grad_out.dtype
        grad_out_2d = grad_out.reshape(-1, grad_out.shape[-1])  # (T, out)
        activation = F.gelu(h).to(dtype).reshape(-1, h.shape[-1])  # (T, in)
        grad_activation = grad_out @ weight.to(dtype)  # (..., in)
        grad_h = torch.ops.aten.gelu_backward(grad_activation.to(h.dtype), h)
        grad_weight = (grad_out_2d.T @ activation).to(weight.dtype)  # (out, in)
        grad_bias = grad_out_2d.sum(dim=0).to(ctx.bias_dtype) if ctx.has_bias else None
        return grad_h, grad_weight, grad_bias


def gelu_linear(h: Tensor, layer: nn.Module) -> Tensor:
    """``layer(F.gelu(h))``: (..., in) -> (..., out); in training with a plain layer it stores ``h`` only."""
    if not is_plain(layer):
        return layer(F.gelu(h))
    if torch.is_grad_enabled() and (h.requires_grad or layer.weight.requires_grad):
        return _GeluLinear.apply(h, layer.weight, layer.bias)
    return linear(F.gelu(h), layer.weight, layer.bias)
