"""Cached decoding projects q/k/v (self-attention) or k/v (cross-attention) of plain layers with one concatenated
weight, kept on the layer's KV cache; wrapped layers are called on the separate path. Both give the same output."""

import pytest
import torch
from torch import nn

from perceiver.core.attention import KVCache
from perceiver.core.layers import CrossAttentionLayer, SelfAttentionLayer
from perceiver.core.position import RotaryEmbedding


def _decode(layer, cross: bool, steps=3):
    """Outputs of ``steps`` one-position calls of ``layer`` with a cache, and the cache (batch 2, 16 channels)."""
    torch.manual_seed(1)
    xs = torch.randn(steps, 2, 1, 16)
    rotary = RotaryEmbedding(4)
    cache = KVCache.empty(2, 2, steps, 8, 8, xs)
    outs = []
    with torch.no_grad():
        for t in range(steps):
            angles = rotary(torch.full((2, 1), t))
            if cross:
                outs.append(layer(xs[t], xs[t], None, rotary_q=angles, rotary_k=angles, kv_cache=cache))
            else:
                outs.append(layer(xs[t], None, rotary=angles, kv_cache=cache))
    return torch.cat(outs, 1), cache


@pytest.mark.parametrize("cross", [False, True])
def test_fused_projections_match_the_separate_layers_and_skip_wrapped_ones(cross):
    torch.manual_seed(0)
    layer = CrossAttentionLayer(2, 16, 16) if cross else SelfAttentionLayer(2, 16)
    layer.eval()
    fused, cache = _decode(layer, cross)
    assert cache.projection is not None and cache.projection[0].shape == ((2 if cross else 3) * 16, 16)

    calls = []
    handle = layer.attention.v_proj.register_forward_hook(lambda *args: calls.append(1))
    separate, hooked_cache = _decode(layer, cross)
    handle.remove()
    assert hooked_cache.projection is None and len(calls) == 3  # the wrapped layer was called every step
    torch.testing.assert_close(fused, separate, atol=1e-6, rtol=1e-5)


def test_concatenated_bias_fills_in_for_a_layer_without_one():
    from perceiver.core.linear import concat_linears

    layers = [nn.Linear(4, 3), nn.Linear(4, 2, bias=False)]
    weight, bias = concat_linears(layers)
    x = torch.randn(5, 4)
    torch.testing.assert_close(x @ weight.T + bias, torch.cat([m(x) for m in layers], -1))
    assert concat_linears([nn.Linear(4, 3, bias=False)])[1] is None
