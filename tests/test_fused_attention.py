"""Every attention call of every model kind is one that SDPA's fused kernels accept (equal batch sizes, no tensor
mask), so a GPU runs them with flash attention and never materialises the B x H x Q x K scores. Checked on CPU,
where the flash kernel exists too: under ``sdpa_kernel([FLASH_ATTENTION])`` any other call fails.

These inputs are unpadded: on a GPU a padding mask (a tensor) rules the flash kernel out, though the CPU's accepts
it; so the causal-only mask is torch's ``causal_lower_right`` bias, checked separately. Attention dropout in
training takes its own path on CPU (core/attention_dropout.py), so the models run in eval mode.
"""

import pytest
import torch
import torch.nn.functional as F
from tiny_models import MODELS, inputs
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import CausalBias

from perceiver.core.attention import attend_mask, mask_tensor


@pytest.mark.parametrize("kind", MODELS)
def test_every_attention_call_takes_the_flash_kernel(kind):
    torch.manual_seed(0)
    model = MODELS[kind]().eval()
    args, _ = inputs(kind)
    with torch.no_grad():
        expected = model(*args)
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            got = model(*args)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_cached_generation_takes_the_flash_kernel():
    torch.manual_seed(0)
    model = MODELS["clm"]().eval()
    prompt = torch.randint(6, 262, (3, 12))
    expected = model.generate(prompt, num_tokens=6, num_latents=4, temperature=0)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        got = model.generate(prompt, num_tokens=6, num_latents=4, temperature=0)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("num_queries,num_keys", [(4, 10), (6, 6), (1, 5)])
def test_a_causal_only_mask_is_the_lower_right_bias_fused_kernels_take(num_queries, num_keys):
    mask = attend_mask(None, num_queries, num_keys, causal=True)
    assert isinstance(mask, CausalBias)
    pad_mask = torch.zeros(1, num_keys, dtype=torch.bool)
    pad_mask[0, 0] = True  # with padding the mask is a tensor: the same causal part, plus the padding
    with_padding = attend_mask(pad_mask, num_queries, num_keys, causal=True)
    explicit = mask_tensor(mask)
    expected = with_padding.clone()
    expected[..., 0] = explicit[..., 0]
    assert torch.equal(explicit.expand_as(expected), expected)
    assert torch.equal(explicit[0, 0, -1], torch.ones(num_keys, dtype=torch.bool))  # the last query sees every key
    q, k, v = torch.randn(2, 2, num_queries, 8), torch.randn(2, 2, num_keys, 8), torch.randn(2, 2, num_keys, 8)
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=explicit))
