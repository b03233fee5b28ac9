"""Every built-in config dataclass checks its options in ``__post_init__``: one line naming the option and its range."""

from __future__ import annotations

import pytest

from perceiver.adapters.image import ImageAdapterConfig
from perceiver.adapters.text import TextAdapterConfig
from perceiver.config_checks import check_ranges
from perceiver.core.attention import AttentionConfig
from perceiver.core.decoder import PerceiverDecoderConfig
from perceiver.core.encoder import PerceiverEncoderConfig
from perceiver.core.perceiver_ar import PerceiverARConfig
from perceiver.data.image import ImageDataConfig
from perceiver.data.text import TextDataConfig
from perceiver.data.textclf import TextClassificationDataConfig
from perceiver.tasks.clf import ClassifierConfig
from perceiver.tasks.clm import CausalLanguageModelConfig
from perceiver.tasks.mlm import MaskedLanguageModelConfig
from perceiver.training.config import OptimizerConfig, TrainerConfig

CASES = [
    (TextAdapterConfig, {"rotary_fraction": 2.5}, "rotary_fraction must be in [0, 1], got 2.5"),
    (TextAdapterConfig, {"init_scale": 0.0}, "init_scale must be > 0, got 0.0"),
    (ImageAdapterConfig, {"image_shape": [8, 8, 1], "num_frequency_bands": 0}, "num_frequency_bands must be >= 1"),
    (ImageAdapterConfig, {"image_shape": [8, 8, 1], "max_resolution": [8, 0]}, "max_resolution must be (height,"),
    (AttentionConfig, {"num_heads": 2, "num_q_input_channels": 4, "num_kv_input_channels": 4, "dropout": 1.0},
     "dropout must be in [0, 1), got 1.0"),
    (PerceiverARConfig, {"num_heads": 0}, "num_heads must be >= 1, got 0"),
    (PerceiverARConfig, {"post_attention_dropout": -0.1}, "post_attention_dropout must be in [0, 1)"),
    (PerceiverEncoderConfig, {"num_input_channels": 4, "num_self_attention_qk_channels": 0},
     "num_self_attention_qk_channels must be >= 1, got 0"),
    (PerceiverEncoderConfig, {"num_input_channels": 4, "init_scale": -1.0}, "init_scale must be > 0"),
    (PerceiverDecoderConfig, {"num_latent_channels": 4, "num_query_channels": 4, "widening_factor": 0},
     "widening_factor must be >= 1, got 0"),
    (CausalLanguageModelConfig, {"num_heads": 0}, "num_heads must be >= 1, got 0"),
    (CausalLanguageModelConfig, {"self_attention_widening_factor": 0}, "self_attention_widening_factor must be >= 1"),
    (CausalLanguageModelConfig, {"attention_dropout": 1.5}, "attention_dropout must be in [0, 1), got 1.5"),
    (MaskedLanguageModelConfig, {"num_decoder_qk_channels": 0}, "num_decoder_qk_channels must be >= 1, got 0"),
    (MaskedLanguageModelConfig, {"num_decoder_heads": 3, "num_decoder_v_channels": 8},
     "num_decoder_v_channels (8) must be divisible by num_decoder_heads (3)"),
    (MaskedLanguageModelConfig, {"residual_dropout": 1.0}, "residual_dropout must be in [0, 1), got 1.0"),
    (ClassifierConfig, {"num_classes": 2, "image_shape": [28, 0, 1]}, "image_shape must be (height, width, channels)"),
    (ClassifierConfig, {"num_classes": 2, "vocab_size": 1}, "vocab_size must be >= 2, got 1"),
    (TextDataConfig, {"min_seq_len": 0}, "min_seq_len must be >= 1, got 0"),
    (TextDataConfig, {"num_workers": -1}, "num_workers must be >= 0, got -1"),
    (TextClassificationDataConfig, {"seed": -1}, "seed must be >= 0, got -1"),
    (ImageDataConfig, {"num_workers": -2}, "num_workers must be >= 0, got -2"),
    (OptimizerConfig, {"weight_decay": -0.1}, "weight_decay must be >= 0, got -0.1"),
    (OptimizerConfig, {"beta1": 1.0}, "beta1 must be in [0, 1), got 1.0"),
    (OptimizerConfig, {"min_lr_ratio": 2.0}, "min_lr_ratio must be in [0, 1], got 2.0"),
    (TrainerConfig, {"gradient_clip": -1.0}, "gradient_clip must be >= 0, got -1.0"),
    (TrainerConfig, {"log_every_n_steps": 0}, "log_every_n_steps must be >= 1, got 0"),
    (TrainerConfig, {"seed": 2**32}, "seed must be in [0, 4294967295], got 4294967296"),
]


@pytest.mark.parametrize("config_class, values, message", CASES, ids=lambda v: getattr(v, "__name__", None))
def test_out_of_range_options_are_one_line_naming_the_option(config_class, values, message):
    with pytest.raises(ValueError) as error:
        config_class(**values)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_defaults_are_in_range():
    for config_class in (TextAdapterConfig, PerceiverARConfig, CausalLanguageModelConfig, MaskedLanguageModelConfig,
                         TextDataConfig, TextClassificationDataConfig, ImageDataConfig, OptimizerConfig, TrainerConfig):
        config_class()


@pytest.mark.parametrize(
    "valid, inside, outside",
    [(">= 1", [1, 2.5], [0, 0.99]), ("> 0", [1e-9], [0, -1]), ("[0, 1)", [0, 0.5], [1, -0.1]),
     ("(0, 1]", [1, 0.5], [0, 1.1]), ("< 2", [1.9], [2])],
)
def test_check_ranges_reads_bounds_and_brackets(valid, inside, outside):
    class Config:
        pass

    config = Config()
    for value in inside:
        config.x = value
        check_ranges(config, {"x": valid})
    for value in outside:
        config.x = value
        with pytest.raises(ValueError, match=r"^x must be"):
            check_ranges(config, {"x": valid})
