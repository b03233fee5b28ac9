"""Behaviour of the Perceiver AR core and the clm model: causality, padding, cache, dropout, checkpointing."""

import pytest
import torch

from perceiver.core.attention import AttentionConfig, MultiHeadAttention, attend_mask
from perceiver.core.layers import set_activation_checkpointing
from perceiver.tasks.clm import CausalLanguageModel, CausalLanguageModelConfig


def tiny_model(seed=0, **overrides) -> CausalLanguageModel:
    torch.manual_seed(seed)
    values = dict(
        max_seq_len=32, max_latents=8, num_channels=32, num_heads=2, num_self_attention_layers=2,
        cross_attention_dropout=0.5, init_scale=0.3,
    )
    values.update(overrides)
    return CausalLanguageModel(CausalLanguageModelConfig(**values)).eval()


def test_attend_mask_is_right_aligned_causal_and_hides_padding():
    pad = torch.tensor([[True, False, False, False, False]])
    mask = attend_mask(pad, num_queries=2, num_keys=5, causal=True)[0, 0]
    # query 0 sits at key 3, query 1 at key 4; key 0 is padding
    assert mask.tolist() == [[False, True, True, True, False], [False, True, True, True, True]]


def test_attend_mask_keeps_the_unpadded_row_where_padding_would_empty_it():
    pad = torch.tensor([[True, True, False, False], [False, True, False, True]])
    mask = attend_mask(pad, num_queries=4, num_keys=4, causal=True)
    # left padding: the padding queries 0 and 1 see only padding, so they keep their causal row; real ones hide it
    assert mask[0, 0].tolist() == [[True, False, False, False], [True, True, False, False],
                                   [False, False, True, False], [False, False, True, True]]
    # padding in the middle: a padding query with a real key before it sees only the real keys
    assert mask[1, 0].tolist() == [[True, False, False, False], [True, False, False, False],
                                   [True, False, True, False], [True, False, True, False]]
    keys_only = attend_mask(torch.tensor([[True, False], [True, True]]))
    assert keys_only[:, 0, 0].tolist() == [[False, True], [True, True]]


def test_attention_matches_explicit_softmax():
    torch.manual_seed(0)
    attention = MultiHeadAttention(AttentionConfig(num_heads=2, num_q_input_channels=8, num_kv_input_channels=6))
    x_q, x_kv = torch.randn(2, 3, 8), torch.randn(2, 5, 6)
    pad = torch.tensor([[False] * 5, [True, True, False, False, False]])
    out = attention(x_q, x_kv, attend_mask(pad, 3, 5, causal=False))

    q = attention.q_proj(x_q).view(2, 3, 2, 4).transpose(1, 2)
    k = attention.k_proj(x_kv).view(2, 5, 2, 4).transpose(1, 2)
    v = attention.v_proj(x_kv).view(2, 5, 2, 4).transpose(1, 2)
    scores = (q @ k.transpose(-1, -2)) / 2.0
    scores = scores.masked_fill(pad[:, None, None, :], float("-inf"))
    expected = attention.o_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 3, 8))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_future_tokens_never_change_earlier_logits():
    model = tiny_model()
    x = torch.randint(6, 262, (2, 32))
    logits = model(x, prefix_len=24)
    for position in (24, 28, 31):  # change a latent token; every earlier latent's logits stay the same
        changed = x.clone()
        changed[:, position] = (changed[:, position] + 1 - 6) % 256 + 6
        changed_logits = model(changed, prefix_len=24)
        latent = position - 24
        torch.testing.assert_close(changed_logits[:, :latent], logits[:, :latent], atol=1e-6, rtol=0)
        assert not torch.allclose(changed_logits[:, latent:], logits[:, latent:])


def test_prefix_tokens_do_change_latent_logits():
    model = tiny_model()
    x = torch.randint(6, 262, (1, 32))
    changed = x.clone()
    changed[:, 3] = (changed[:, 3] + 1 - 6) % 256 + 6
    assert not torch.allclose(model(x, prefix_len=24), model(changed, prefix_len=24))


def test_left_padding_does_not_change_logits_of_real_tokens():
    model = tiny_model()
    x = torch.randint(6, 262, (2, 20))
    reference = model(x, prefix_len=12)
    padded = torch.cat([torch.zeros(2, 12, dtype=torch.long), x], dim=1)
    pad_mask = torch.zeros(2, 32, dtype=torch.bool)
    pad_mask[:, :12] = True
    torch.testing.assert_close(model(padded, prefix_len=24, pad_mask=pad_mask), reference, atol=1e-5, rtol=1e-5)


def test_padding_inside_latents_is_invariant_too():
    model = tiny_model()
    x = torch.randint(6, 262, (1, 5))  # shorter than max_latents: some latents are padding
    reference = model(x, prefix_len=0)
    padded = torch.cat([torch.zeros(1, 27, dtype=torch.long), x], dim=1)
    pad_mask = torch.arange(32)[None] < 27
    out = model(padded, prefix_len=24, pad_mask=pad_mask)
    torch.testing.assert_close(out[:, -5:], reference, atol=1e-5, rtol=1e-5)


def test_prefix_dropout_only_in_training():
    model = tiny_model(cross_attention_dropout=0.5)
    x = torch.randint(6, 262, (2, 32))
    model.eval()
    torch.testing.assert_close(model(x, prefix_len=24), model(x, prefix_len=24))
    model.train()
    torch.manual_seed(1)
    first = model(x, prefix_len=24)
    torch.manual_seed(2)
    second = model(x, prefix_len=24)
    assert not torch.allclose(first, second)
    no_dropout = tiny_model(cross_attention_dropout=0.0).train()
    torch.testing.assert_close(no_dropout(x, prefix_len=24), no_dropout(x, prefix_len=24))


@pytest.mark.parametrize(
    "prompt_len,num_latents,num_tokens",
    [
        (10, 3, 4),  # latents grow, stay below max_latents
        (10, 3, 20),  # latents reach max_latents, then the prefix grows
        (20, 8, 30),  # past max_seq_len: the window slides
        (1, 1, 40),  # a one-token prompt all the way past max_seq_len
    ],
)
def test_kv_cache_gives_the_tokens_of_recomputation(prompt_len, num_latents, num_tokens):
    model = tiny_model()
    prompt = torch.randint(6, 262, (2, prompt_len))
    cached = model.generate(prompt, num_tokens=num_tokens, num_latents=num_latents, temperature=0, use_cache=True)
    recomputed = model.generate(prompt, num_tokens=num_tokens, num_latents=num_latents, temperature=0, use_cache=False)
    assert cached.shape == (2, num_tokens)
    assert len(set(recomputed.flatten().tolist())) > 3, "greedy output should not be degenerate for this test"
    assert torch.equal(cached, recomputed)


def test_kv_cache_with_left_padded_batch_matches_single_prompts():
    model = tiny_model()
    long_prompt, short_prompt = torch.randint(6, 262, (1, 12)), torch.randint(6, 262, (1, 5))
    batch = torch.cat([long_prompt, torch.cat([torch.zeros(1, 7, dtype=torch.long), short_prompt], 1)])
    pad_mask = torch.zeros(2, 12, dtype=torch.bool)
    pad_mask[1, :7] = True
    out = model.generate(batch, pad_mask, num_tokens=6, num_latents=2, temperature=0)
    alone = model.generate(short_prompt, num_tokens=6, num_latents=2, temperature=0)
    assert torch.equal(out[1:], alone)
    assert torch.equal(out[:1], model.generate(long_prompt, num_tokens=6, num_latents=2, temperature=0))


def test_sampling_is_reproducible_with_a_generator():
    model = tiny_model()
    prompt = torch.randint(6, 262, (1, 6))
    runs = [
        model.generate(prompt, num_tokens=10, top_k=5, generator=torch.Generator().manual_seed(7)) for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])


def test_generate_rejects_bad_arguments():
    model = tiny_model()
    prompt = torch.randint(6, 262, (1, 6))
    with pytest.raises(ValueError, match="num_latents"):
        model.generate(prompt, num_latents=9)
    with pytest.raises(ValueError, match="num_latents"):
        model.generate(prompt, num_latents=0)
    with pytest.raises(ValueError, match="non-empty"):
        model.generate(prompt[:, :0])
    with pytest.raises(ValueError, match="max_seq_len"):
        model.generate(torch.randint(6, 262, (1, 33)))
    with pytest.raises(ValueError, match="top_p"):
        model.generate(prompt, top_p=1.5)


def test_activation_checkpointing_gives_the_same_gradients():
    model = tiny_model(cross_attention_dropout=0.0).train()
    x = torch.randint(6, 262, (2, 32))

    def grads():
        model.zero_grad()
        model(x, prefix_len=24).logsumexp(-1).mean().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    set_activation_checkpointing(model, True)
    checkpointed = grads()
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b)


def test_config_validation_errors_are_clear():
    with pytest.raises(ValueError, match="max_latents"):
        CausalLanguageModelConfig(max_seq_len=16, max_latents=32)
    with pytest.raises(ValueError, match="divisible"):
        CausalLanguageModelConfig(num_channels=30, num_heads=4)
    with pytest.raises(ValueError, match="cross_attention_dropout"):
        CausalLanguageModelConfig(cross_attention_dropout=1.0)


def test_seed_config_has_30_6m_parameters():
    from perceiver import registry

    config = registry.get("task", "clm").build_config(**registry.get("model", "clm-30m").load())
    with torch.device("meta"):
        model = CausalLanguageModel(config)
    assert abs(sum(p.numel() for p in model.parameters()) - 30.6e6) < 0.1e6
