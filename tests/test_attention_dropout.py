"""The CPU attention-with-dropout function: same values and gradients as the reference formula with the same mask."""

import pytest
import torch

from perceiver.core.attention import AttentionConfig, MultiHeadAttention
from perceiver.core.attention_dropout import attention_with_dropout, drop_mask


def reference(q, k, v, mask, p, seed):
    torch.manual_seed(seed)
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = scores.softmax(-1)
    drop, p = drop_mask(probs.shape, p)
    return torch.matmul(probs.masked_fill(drop, 0.0) / (1 - p), v)


@pytest.mark.parametrize("broadcast_q", [False, True])
def test_values_and_gradients_match_the_reference(broadcast_q):
    torch.manual_seed(0)
    q = torch.randn(1 if broadcast_q else 3, 2, 5, 4, dtype=torch.double, requires_grad=True)
    k = torch.randn(3, 2, 7, 4, dtype=torch.double, requires_grad=True)
    v = torch.randn(3, 2, 7, 6, dtype=torch.double, requires_grad=True)
    mask = torch.ones(3, 1, 1, 7, dtype=torch.bool)
    mask[1, ..., 4:] = False
    weights = torch.randn(3, 2, 5, 6, dtype=torch.double)
    torch.manual_seed(7)
    out = attention_with_dropout(q, k, v, mask, 0.3)
    (out * weights).sum().backward()
    got = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    expected = reference(q, k, v, mask, 0.3, seed=7)
    (expected * weights).sum().backward()
    assert torch.allclose(out, expected, atol=1e-12)
    for g, t in zip(got, (q, k, v)):
        assert g.shape == t.shape and torch.allclose(g, t.grad, atol=1e-12)


def test_drop_rate_and_scaling():
    q, k = torch.zeros(1, 1, 200, 4), torch.zeros(1, 1, 50, 4)
    v = torch.ones(1, 1, 50, 1)
    out = attention_with_dropout(q, k, v, None, 0.25)  # uniform attention: out = kept share / 0.75
    assert out.mean().item() == pytest.approx(1.0, abs=0.02)


def test_multi_head_attention_uses_it_in_training_only():
    """In training on CPU the layer's output is this function's, dropout mask included (SDPA's own dropout draws
    another mask, so its output would differ); in eval mode there is no dropout."""
    torch.manual_seed(0)
    attention = MultiHeadAttention(AttentionConfig(num_heads=2, num_q_input_channels=8, num_kv_input_channels=8,
                                                   dropout=0.5)).double()
    x = torch.randn(2, 6, 8, dtype=torch.double)
    attention.eval()
    assert torch.equal(attention(x, x), attention(x, x))
    attention.train()
    torch.manual_seed(3)
    out = attention(x, x)
    projections = (attention.q_proj, attention.k_proj, attention.v_proj)
    heads = [proj(x).view(2, 6, 2, 4).transpose(1, 2) for proj in projections]
    expected = reference(*heads, None, 0.5, seed=3).transpose(1, 2).reshape(2, 6, 8)
    assert torch.allclose(out, attention.o_proj(expected), atol=1e-12)
    assert not torch.equal(attention(x, x), out)  # a new mask at every call


def test_drop_mask_rate_is_p_rounded_to_a_multiple_of_2_to_the_minus_16():
    torch.manual_seed(0)
    drop, p = drop_mask((1000, 999), 0.1)
    assert drop.shape == (1000, 999) and drop.dtype == torch.bool
    assert p == round(0.1 * 65536) / 65536 and abs(p - 0.1) < 1e-5
    assert drop.float().mean().item() == pytest.approx(p, abs=0.002)
    rows = drop.float().mean(dim=1)
    assert rows.std().item() == pytest.approx((p * (1 - p) / 999) ** 0.5, rel=0.1)  # independent draws
