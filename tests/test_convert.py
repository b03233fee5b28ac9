"""Converters from Hugging Face transformers' Perceiver models: small random models built offline, converted, and
compared logit by logit (which also shows that our encoder and decoder are the paper's architecture)."""

import pytest
import torch

pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    PerceiverConfig,
    PerceiverForImageClassificationFourier,
    PerceiverForMaskedLM,
    PerceiverForSequenceClassification,
)

from perceiver.checkpoint import load_model  # noqa: E402
from perceiver.cli import main  # noqa: E402
from perceiver.hf.convert import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    ConversionError,
    convert,
    convert_image_classifier,
    convert_masked_lm,
)


def randomise(model, std=0.3):
    """Replace the tiny default initialisation so that every weight visibly matters."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "layernorm" in name and name.endswith("weight"):
                parameter.copy_(1 + 0.2 * torch.randn_like(parameter))
            else:
                parameter.copy_(std * torch.randn_like(parameter))
    return model.eval()


def hf_masked_lm(**overrides):
    values = dict(num_latents=6, d_latents=32, d_model=24, num_blocks=2, num_self_attends_per_block=2,
                  num_self_attention_heads=4, num_cross_attention_heads=2, qk_channels=16, v_channels=32,
                  vocab_size=262, max_position_embeddings=40)
    values.update(overrides)
    return randomise(PerceiverForMaskedLM(PerceiverConfig(**values)))


def hf_image_classifier():
    config = PerceiverConfig(num_latents=8, d_latents=32, num_blocks=2, num_self_attends_per_block=2,
                             num_self_attention_heads=4, num_cross_attention_heads=1, num_labels=5,
                             id2label={i: f"class {i}" for i in range(5)}, label2id={f"class {i}": i for i in range(5)})
    return randomise(PerceiverForImageClassificationFourier(config), std=0.1)


def test_masked_lm_logits_match_with_padding():
    hf = hf_masked_lm()
    ours = convert_masked_lm(hf)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in hf.parameters())
    ids = torch.randint(0, 262, (3, 30))
    attention_mask = torch.ones(3, 30, dtype=torch.long)
    attention_mask[1, 22:] = 0
    with torch.no_grad():
        expected = hf(inputs=ids, attention_mask=attention_mask).logits[:, :30]  # HF always decodes 40 positions
        got = ours(ids, attention_mask == 0)
        # in float64 rounding cannot hide a difference: the two compute the same function
        expected_64 = hf.double()(inputs=ids, attention_mask=attention_mask).logits[:, :30]
        got_64 = ours.double()(ids, attention_mask == 0)
    assert expected.abs().max() > 1.0
    # fp32 logits reach ~18 here: summation order (BLAS kernels differ by CPU) moves them by up to ~1e-5 (measured
    # 8.6e-6 to 1.05e-5 on an AMD EPYC), so fp32 gets 1e-5 relative; float64 below is the exact check
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.allclose(got_64, expected_64, atol=1e-10, rtol=0)


def test_image_classifier_logits_match_on_raw_pixels():
    hf = hf_image_classifier()
    ours = convert_image_classifier(hf, image_size=(12, 16))
    assert ours.config.class_names == [f"class {i}" for i in range(5)]
    images = torch.rand(2, 12, 16, 3)
    normalised = (images - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    with torch.no_grad():
        expected = hf(inputs=normalised.permute(0, 3, 1, 2)).logits
        got = ours(images)
    assert expected.abs().max() > 0.1
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)


def test_converted_models_save_load_and_run_through_the_cli(tmp_path, capsys):
    hf_dir = tmp_path / "hf-mlm"
    hf_masked_lm().save_pretrained(hf_dir)
    out = tmp_path / "ours"
    main(["convert", str(hf_dir), "--output", str(out)])
    model = load_model(out, task="mlm")
    ids = torch.randint(6, 262, (1, 12))
    with torch.no_grad():
        assert torch.allclose(model(ids), convert(hf_masked_lm())(ids), atol=1e-6)
    main(["fill-mask", "--model", str(out), "ab[MASK]", "-k", "2"])
    assert "1. ab" in capsys.readouterr().out


def cli_error(capsys, *args):
    with pytest.raises(SystemExit) as exit:
        main(list(args))
    err = capsys.readouterr().err
    assert exit.value.code == 1 and "Traceback" not in err
    return err


def test_converter_rejects_other_models(tmp_path, capsys):
    config = PerceiverConfig(num_latents=4, d_latents=16, d_model=8, num_self_attends_per_block=1,
                             num_self_attention_heads=2, num_cross_attention_heads=2, max_position_embeddings=8)
    other = PerceiverForSequenceClassification(config)
    with pytest.raises(ConversionError, match="cannot convert a PerceiverForSequenceClassification"):
        convert(other)
    with pytest.raises(ConversionError, match="expected a PerceiverForMaskedLM"):
        convert_masked_lm(hf_image_classifier())
    other.save_pretrained(tmp_path / "seq")
    err = cli_error(capsys, "convert", str(tmp_path / "seq"), "--output", str(tmp_path / "x"))
    assert "is a PerceiverForSequenceClassification; only PerceiverForMaskedLM and" in err
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert", "architectures": ["BertForMaskedLM"]}')
    assert "holds a 'bert' model, not a Perceiver" in cli_error(capsys, "convert", str(tmp_path / "bert"), "-o", "x")
    err = cli_error(capsys, "convert", str(tmp_path / "nothing"), "-o", "x")
    assert "cannot read a Hugging Face model config" in err


def test_unsupported_activation_is_refused():
    with pytest.raises(ConversionError, match="hidden_act"):
        convert_masked_lm(hf_masked_lm(hidden_act="relu"))
