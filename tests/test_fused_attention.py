"""Every attention call of every model kind is one that SDPA's fused kernels accept (equal batch sizes), so a GPU
runs them with a fused kernel and never materialises the B x H x Q x K scores. Checked on CPU, where the flash kernel
exists too: under ``sdpa_kernel([FLASH_ATTENTION])`` any other call fails. Attention dropout in training takes its
own path on CPU (core/attention_dropout.py), so the models run in eval mode.
"""

import pytest
import torch
from tiny_models import MODELS, inputs
from torch.nn.attention import SDPBackend, sdpa_kernel


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
