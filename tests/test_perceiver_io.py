"""Perceiver IO core: encoder (padding, repeated cross-attention, weight sharing), decoder and query providers,
composition, Fourier features, and the row-sparse decoder backward pass."""

import math

import pytest
import torch

from perceiver.adapters.text import TextAdapterConfig, TextBytesAdapter
from perceiver.core.attention import attend_mask
from perceiver.core.decoder import (
    FourierQueryProvider,
    PerceiverDecoder,
    PerceiverDecoderConfig,
    PositionQueryProvider,
    TrainableQueryProvider,
    decode_row_sparse,
)
from perceiver.core.encoder import PerceiverEncoder, PerceiverEncoderConfig
from perceiver.core.perceiver_io import PerceiverIO
from perceiver.core.position import fourier_features


def encoder_config(**overrides):
    values = dict(num_input_channels=12, num_latents=5, num_latent_channels=16, num_cross_attention_heads=2,
                  num_self_attention_heads=2, num_self_attention_layers_per_block=2)
    values.update(overrides)
    return PerceiverEncoderConfig(**values)


def test_encoder_output_does_not_depend_on_padding_positions():
    torch.manual_seed(0)
    encoder = PerceiverEncoder(encoder_config()).eval()
    x = torch.randn(3, 10, 12)
    pad = torch.zeros(3, 10, dtype=torch.bool)
    pad[0, 7:] = True  # right padding
    pad[1, :4] = True  # left padding
    garbage = x.clone()
    garbage[pad] = torch.randn(int(pad.sum()), 12) * 100
    out = encoder(x, pad)
    assert torch.allclose(out, encoder(garbage, pad), atol=1e-5)
    # a padded row gives the same latents as the same row without its padding
    assert torch.allclose(out[0], encoder(x[:1, :7])[0], atol=1e-5)
    assert torch.allclose(out[1], encoder(x[1:2, 4:])[0], atol=1e-5)
    # and padding does matter when it is not masked
    assert not torch.allclose(encoder(garbage)[0], out[0], atol=1e-3)


def test_all_padding_row_is_finite():
    encoder = PerceiverEncoder(encoder_config()).eval()
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[1] = True
    assert torch.isfinite(encoder(torch.randn(2, 6, 12), pad)).all()
    mask = attend_mask(pad)  # one row per example, shared by the latents; the all-padding row keeps every key
    assert mask.shape == (2, 1, 1, 6) and mask[0].all() and mask[1].all()
    assert attend_mask(None) is None


def test_repeated_cross_attention_layout_and_weight_sharing():
    encoder = PerceiverEncoder(encoder_config(num_cross_attention_layers=3, num_self_attention_blocks=4,
                                              first_cross_attention_layer_shared=False,
                                              first_self_attention_block_shared=False))
    # unshared first layer/block: two distinct modules, later ones are one module (one parameter tensor)
    assert encoder.cross_attention(0) is not encoder.cross_attention(1)
    assert encoder.cross_attention(1) is encoder.cross_attention(2)
    assert encoder.self_attention(0) is not encoder.self_attention(1)
    assert encoder.self_attention(1) is encoder.self_attention(3)
    w0 = encoder.cross_attention(0).attention.q_proj.weight
    w1 = encoder.cross_attention(1).attention.q_proj.weight
    assert w0.data_ptr() != w1.data_ptr() and not torch.equal(w0, w1)
    assert encoder.cross_attention(2).attention.q_proj.weight is w1
    # parameter count: 2 cross-attention layers and 2 blocks, whatever the number of repeats
    shared = PerceiverEncoder(encoder_config(num_cross_attention_layers=3, num_self_attention_blocks=4,
                                             first_cross_attention_layer_shared=True,
                                             first_self_attention_block_shared=True))
    assert shared.cross_attention(0) is shared.cross_attention(2)
    assert shared.self_attention(0) is shared.self_attention(3)
    one_ca = sum(p.numel() for p in shared.cross_attention_1.parameters())
    one_block = sum(p.numel() for p in shared.self_attention_1.parameters())
    latents = shared.latent_provider.query.numel()
    assert sum(p.numel() for p in shared.parameters()) == latents + one_ca + one_block
    assert sum(p.numel() for p in encoder.parameters()) == latents + 2 * one_ca + 2 * one_block


def test_shared_layers_receive_gradient_from_every_use():
    torch.manual_seed(0)
    encoder = PerceiverEncoder(encoder_config(num_cross_attention_layers=2, num_self_attention_blocks=2,
                                              first_cross_attention_layer_shared=True))
    calls = []
    handle = encoder.cross_attention_1.register_forward_hook(lambda *args: calls.append(1))
    encoder(torch.randn(2, 6, 12)).sum().backward()
    handle.remove()
    assert len(calls) == 2 and encoder.cross_attention_1.attention.k_proj.weight.grad.abs().sum() > 0


def test_encoder_config_errors():
    with pytest.raises(ValueError, match="must not exceed"):
        PerceiverEncoder(encoder_config(num_cross_attention_layers=2, num_self_attention_blocks=1))
    with pytest.raises(ValueError, match="divisible"):
        PerceiverEncoder(encoder_config(num_cross_attention_qk_channels=15))
    with pytest.raises(ValueError, match=r"shape \(batch, positions, 12\)"):
        PerceiverEncoder(encoder_config())(torch.randn(2, 5, 11))


@pytest.mark.parametrize("num_queries", [1, 7, 20])
def test_decoder_query_count_sets_output_length(num_queries):
    decoder = PerceiverDecoder(PerceiverDecoderConfig(num_latent_channels=16, num_query_channels=8, num_heads=2),
                               TrainableQueryProvider(num_queries, 8))
    assert decoder(torch.randn(3, 5, 16)).shape == (3, num_queries, 8)


def test_position_queries_follow_the_input_or_the_requested_positions():
    provider = PositionQueryProvider(10, 8)
    decoder = PerceiverDecoder(PerceiverDecoderConfig(16, 8, num_heads=2, query_residual=False), provider)
    latents = torch.randn(2, 5, 16)
    full = decoder(latents, torch.randn(2, 6, 4))
    assert full.shape == (2, 6, 8)
    positions = torch.tensor([[5, 0], [2, 3]])
    picked = decoder(latents, None, positions)
    assert picked.shape == (2, 2, 8)
    assert torch.allclose(picked[0, 0], full[0, 5], atol=1e-6) and torch.allclose(picked[1, 1], full[1, 3], atol=1e-6)
    with pytest.raises(ValueError, match="longer than the 10 output queries"):
        decoder(latents, torch.randn(2, 11, 4))


def test_fourier_query_provider_gives_one_query_per_grid_point():
    provider = FourierQueryProvider((3, 4), num_bands=2)
    assert provider().shape == (1, 12, 2 * (2 * 2 + 1)) and provider.num_query_channels == 10
    with pytest.raises(ValueError, match="gives 10 channels"):
        PerceiverDecoder(PerceiverDecoderConfig(16, 8), provider)


def test_fourier_features_layout_coordinates_then_sines_then_cosines():
    features = fourier_features((4, 5), num_bands=3, max_resolution=(8, 10))
    assert features.shape == (20, 2 + 2 * 2 * 3)
    y, x = features[:, 0], features[:, 1]
    assert torch.allclose(y.view(4, 5)[:, 0], torch.linspace(-1, 1, 4))
    assert torch.allclose(x.view(4, 5)[0], torch.linspace(-1, 1, 5))
    freqs_y, freqs_x = torch.linspace(1, 4, 3), torch.linspace(1, 5, 3)
    assert torch.allclose(features[:, 2:5], torch.sin(math.pi * y[:, None] * freqs_y), atol=1e-6)
    assert torch.allclose(features[:, 5:8], torch.sin(math.pi * x[:, None] * freqs_x), atol=1e-6)
    assert torch.allclose(features[:, 8:11], torch.cos(math.pi * y[:, None] * freqs_y), atol=1e-6)
    assert torch.allclose(features[:, 11:14], torch.cos(math.pi * x[:, None] * freqs_x), atol=1e-6)


def text_perceiver_io(num_queries=None, attention_dropout=0.0):
    adapter = TextBytesAdapter(TextAdapterConfig(vocab_size=262, max_seq_len=16, num_channels=12, num_heads=2,
                                                 rotary_fraction=0.0))
    encoder = PerceiverEncoder(encoder_config(attention_dropout=attention_dropout))
    provider = PositionQueryProvider(16, 12) if num_queries is None else TrainableQueryProvider(num_queries, 12)
    decoder = PerceiverDecoder(PerceiverDecoderConfig(16, 12, num_heads=2, attention_dropout=attention_dropout,
                                                      query_residual=False), provider)
    return PerceiverIO(adapter, encoder, decoder, output_adapter=lambda hidden: adapter.logits(hidden))


def test_perceiver_io_composes_adapter_encoder_decoder():
    torch.manual_seed(0)
    model = text_perceiver_io().eval()
    ids = torch.randint(6, 262, (2, 9))
    assert model(ids).shape == (2, 9, 262)
    assert text_perceiver_io(num_queries=3)(ids).shape == (2, 3, 262)
    # the same text, right- or left-padded, gives the same logits at its own positions
    left = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids[:1]], dim=1)
    right = torch.cat([ids[:1], torch.zeros(1, 3, dtype=torch.long)], dim=1)
    pad = torch.zeros(1, 12, dtype=torch.bool)
    out_left = model(left, pad.index_fill(1, torch.arange(3), True))
    out_right = model(right, pad.index_fill(1, torch.arange(9, 12), True))
    assert torch.allclose(out_left[0, :9], out_right[0, :9], atol=1e-5)  # queries are positions, latents equal


def test_perceiver_io_checks_channel_counts():
    adapter = TextBytesAdapter(TextAdapterConfig(vocab_size=262, max_seq_len=8, num_channels=10, num_heads=2))
    decoder = PerceiverDecoder(PerceiverDecoderConfig(16, 12), TrainableQueryProvider(1, 12))
    with pytest.raises(ValueError, match="produces 10 channels"):
        PerceiverIO(adapter, PerceiverEncoder(encoder_config()), decoder)


def _grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_row_sparse_decoder_backward_matches_dense_backward():
    torch.manual_seed(0)
    model = text_perceiver_io().double().train()
    ids = torch.randint(6, 262, (3, 14))
    labels = ids.masked_fill(torch.rand(3, 14) > 0.3, -100)
    labels[2] = -100  # a row without any loss

    def loss_of(logits):
        return torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100)

    dense = model(ids)
    loss_of(dense).backward()
    expected = _grads(model)
    model.zero_grad()
    latents, x, _ = model.encode(ids)
    sparse = decode_row_sparse(model.decoder, latents, x, model.output_adapter, list(model.parameters()))
    loss_of(sparse).backward()
    got = _grads(model)
    assert torch.allclose(dense, sparse, atol=1e-10)
    assert set(got) == set(expected)
    for name in expected:
        assert torch.allclose(got[name], expected[name], atol=1e-10), name


def test_row_sparse_backward_keeps_the_forward_dropout_masks():
    torch.manual_seed(0)
    model = text_perceiver_io(attention_dropout=0.5).double().train()
    ids = torch.randint(6, 262, (2, 10))
    weights = torch.randn(2, 10, 262, dtype=torch.double) * (torch.rand(2, 10, 1) < 0.4)
    latents, x, _ = model.encode(ids)
    latents = latents.detach().requires_grad_(True)
    import perceiver.core.attention_dropout as dropout_module

    captured = {}
    original = dropout_module.attention_with_kept_dropout

    def spy(q, k, v, attend_mask, p, kept):
        if kept.drop is None:  # the forward pass draws the mask
            captured["kept"] = kept
        return original(q, k, v, attend_mask, p, kept)

    dropout_module.attention_with_kept_dropout = spy
    try:
        out = decode_row_sparse(model.decoder, latents, x, model.output_adapter, list(model.decoder.parameters()))
    finally:
        dropout_module.attention_with_kept_dropout = original
    (out * weights).sum().backward()
    # reference: the dense computation of the decoder's layer with the same dropout mask
    reference_latents = latents.detach().requires_grad_(True)
    queries = model.decoder.query_provider(x)
    hidden = model.decoder.cross_attention._forward(queries, reference_latents, kept_dropout=captured["kept"])
    reference = model.output_adapter(hidden)
    assert torch.allclose(out, reference, atol=1e-10)
    (reference * weights).sum().backward()
    assert torch.allclose(latents.grad, reference_latents.grad, atol=1e-10)
    assert captured["kept"].drop.float().mean().item() == pytest.approx(0.5, abs=0.1)
