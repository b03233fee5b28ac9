"""Converters from Hugging Face transformers' Perceiver models to this project's models.

* ``PerceiverForMaskedLM`` (e.g. ``deepmind/language-perceiver``) -> ``mlm`` :class:`MaskedLanguageModel`
* ``PerceiverForImageClassificationFourier`` (e.g. ``deepmind/vision-perceiver-fourier``) -> ``clf``
  :class:`Classifier` with the ``image`` adapter (ImageNet normalisation included, so it reads raw pixels)

The mapping is explicit: every parameter of the source is assigned to exactly one parameter of the target, and a
source that has parameters left over (or lacks one) is an error. Converted models give the same logits as the source
(checked to 1e-5 in the tests), which also shows that the encoder and decoder here are the paper's architecture.

    >>> from perceiver.hf.convert import convert
    >>> model = convert("path/to/language-perceiver")          # doctest: +SKIP
    >>> from perceiver.checkpoint import save_model
    >>> save_model(model, "models/language-perceiver")        # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple, Union

import torch
from torch import nn

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
SUPPORTED = ("PerceiverForMaskedLM", "PerceiverForImageClassificationFourier")


class ConversionError(ValueError):
    """A source model that cannot be converted, with the reason."""


# -------------------------------------------------------------------------------------------------------------
#  Loading
# -------------------------------------------------------------------------------------------------------------


def load_hf_model(source: Union[str, Path]) -> nn.Module:
    """A transformers Perceiver model from a local directory (or a hub id already in the local cache)."""
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(str(source), local_files_only=True)
    except Exception as error:  # missing directory, no config.json, not cached
        reason = str(error).splitlines()[0]
        raise ConversionError(f"cannot read a Hugging Face model config at {source}: {reason}") from None
    if config.model_type != "perceiver":
        raise ConversionError(f"{source} holds a {config.model_type!r} model, not a Perceiver")
    architectures = list(getattr(config, "architectures", None) or [])
    name = next((a for a in architectures if a in SUPPORTED), None)
    if name is None:
        raise ConversionError(
            f"{source} is a {', '.join(architectures) or 'Perceiver model of unknown type'}; "
            f"only {' and '.join(SUPPORTED)} can be converted"
        )
    try:
        return getattr(transformers, name).from_pretrained(str(source), local_files_only=True).eval()
    except Exception as error:
        raise ConversionError(f"cannot load {name} weights from {source}: {str(error).splitlines()[0]}") from None


def convert(source: Union[str, Path, nn.Module]) -> nn.Module:
    """Convert a transformers Perceiver model (object, local directory or cached hub id) to this project's model."""
    model = source if isinstance(source, nn.Module) else load_hf_model(source)
    kind = type(model).__name__
    if kind == "PerceiverForMaskedLM":
        return convert_masked_lm(model)
    if kind == "PerceiverForImageClassificationFourier":
        return convert_image_classifier(model)
    raise ConversionError(f"cannot convert a {kind}; only {' and '.join(SUPPORTED)} can be converted")


# -------------------------------------------------------------------------------------------------------------
#  Parameter maps
# -------------------------------------------------------------------------------------------------------------


def _layer_map(source: str, target: str, cross: bool) -> Dict[str, str]:
    """HF ``PerceiverLayer`` -> our ``CrossAttentionLayer`` / ``SelfAttentionLayer`` parameter names."""
    names = {
        "attention.self.query": "attention.q_proj",
        "attention.self.key": "attention.k_proj",
        "attention.self.value": "attention.v_proj",
        "attention.output.dense": "attention.o_proj",
        "attention.self.layernorm1": "q_norm" if cross else "norm",
        "layernorm": "mlp.norm",
        "mlp.dense1": "mlp.fc1",
        "mlp.dense2": "mlp.fc2",
    }
    if cross:
        names["attention.self.layernorm2"] = "kv_norm"
    return {f"{source}.{s}.{p}": f"{target}.{t}.{p}" for s, t in names.items() for p in ("weight", "bias")}


def _encoder_map(prefix: str, num_layers: int) -> Dict[str, str]:
    mapping = {f"{prefix}.embeddings.latents": "encoder.latent_provider.query"}
    mapping.update(_layer_map(f"{prefix}.encoder.cross_attention", "encoder.cross_attention_1", cross=True))
    for i in range(num_layers):
        source, target = f"{prefix}.encoder.self_attends.{i}", f"encoder.self_attention_1.layers.{i}"
        mapping.update(_layer_map(source, target, cross=False))
    return mapping


def _channels(state: Dict[str, torch.Tensor], layer: str) -> Tuple[int, int]:
    """(qk, v) channels of an HF attention layer, read from its weights."""
    query, value = state[f"{layer}.attention.self.query.weight"], state[f"{layer}.attention.self.value.weight"]
    return query.shape[0], value.shape[0]


def _check_config(config: Any) -> None:
    if config.hidden_act != "gelu":
        raise ConversionError(f"hidden_act {config.hidden_act!r} is not supported (only gelu)")
    if not config.use_query_residual:
        raise ConversionError("use_query_residual=False in the encoder is not supported")
    if getattr(config, "chunk_size_feed_forward", 0):
        pass  # chunking only changes how the MLP is computed, not what


def _encoder_options(config: Any, state: Dict[str, torch.Tensor], prefix: str) -> Dict[str, Any]:
    ca_qk, ca_v = _channels(state, f"{prefix}.encoder.cross_attention")
    sa_qk, sa_v = _channels(state, f"{prefix}.encoder.self_attends.0")
    return dict(
        num_latents=config.num_latents,
        num_latent_channels=config.d_latents,
        num_cross_attention_heads=config.num_cross_attention_heads,
        num_cross_attention_qk_channels=ca_qk,
        num_cross_attention_v_channels=ca_v,
        num_cross_attention_layers=1,
        cross_attention_widening_factor=config.cross_attention_widening_factor,
        num_self_attention_heads=config.num_self_attention_heads,
        num_self_attention_qk_channels=sa_qk,
        num_self_attention_v_channels=sa_v,
        num_self_attention_layers_per_block=config.num_self_attends_per_block,
        num_self_attention_blocks=config.num_blocks,
        first_self_attention_block_shared=True,  # HF applies its one block num_blocks times
        self_attention_widening_factor=config.self_attention_widening_factor,
        attention_dropout=config.attention_probs_dropout_prob,
    )


def _assign(target: nn.Module, state: Dict[str, torch.Tensor], mapping: Dict[str, str], transforms=None) -> None:
    own = target.state_dict()
    unmapped = sorted(set(state) - set(mapping))
    if unmapped:
        raise ConversionError(f"source parameters without a target: {', '.join(unmapped[:3])}")
    missing = sorted(set(own) - set(mapping.values()))
    if missing:
        raise ConversionError(f"target parameters without a source: {', '.join(missing[:3])}")
    from perceiver.empty_model import assign_weights, has_meta_parameters

    empty = has_meta_parameters(target)  # built without weights: the source tensors become its parameters
    new_state = {}
    for source_name, target_name in mapping.items():
        value = state[source_name]
        if transforms and source_name in transforms:
            value = transforms[source_name](value)
        if value.shape != own[target_name].shape:
            raise ConversionError(
                f"{source_name} {tuple(value.shape)} does not fit {target_name} {tuple(own[target_name].shape)}"
            )
        value = value.detach()
        new_state[target_name] = value if empty else value.clone().to(own[target_name].dtype)
    assign_weights(target, new_state)


# -------------------------------------------------------------------------------------------------------------
#  Converters
# -------------------------------------------------------------------------------------------------------------


def convert_masked_lm(hf_model: nn.Module):
    """``transformers.PerceiverForMaskedLM`` -> :class:`perceiver.tasks.mlm.MaskedLanguageModel` (eval mode)."""
    from perceiver.tasks.mlm import MaskedLanguageModel, MaskedLanguageModelConfig

    if type(hf_model).__name__ != "PerceiverForMaskedLM":
        raise ConversionError(f"expected a PerceiverForMaskedLM, got a {type(hf_model).__name__}")
    config = hf_model.config
    _check_config(config)
    state = hf_model.state_dict()
    decoder = "perceiver.decoder.decoding_cross_attention"
    dec_qk, dec_v = _channels(state, decoder)
    ours = MaskedLanguageModel(
        MaskedLanguageModelConfig(
            vocab_size=config.vocab_size,
            max_seq_len=config.max_position_embeddings,
            num_input_channels=config.d_model,
            num_decoder_heads=8,  # fixed by PerceiverForMaskedLM
            num_decoder_qk_channels=dec_qk,
            num_decoder_v_channels=dec_v,
            decoder_widening_factor=1,
            special_tokens=True,  # PerceiverTokenizer adds [CLS] ... [SEP]
            **_encoder_options(config, state, "perceiver"),
        )
    )
    mapping = {
        "perceiver.input_preprocessor.embeddings.weight": "input_adapter.token_embedding.weight",
        "perceiver.input_preprocessor.position_embeddings.weight": "input_adapter.position_embedding.weight",
        "embedding_decoder.bias": "input_adapter.output_bias",
        "perceiver.decoder.output_position_encodings.position_embeddings": "decoder.query_provider.query",
    }
    mapping.update(_encoder_map("perceiver", config.num_self_attends_per_block))
    mapping.update(_layer_map(decoder, "decoder.cross_attention", cross=True))
    _assign(ours, state, mapping)
    return ours.eval()


def convert_image_classifier(hf_model: nn.Module, image_size: Union[int, Tuple[int, int]] = 224):
    """``transformers.PerceiverForImageClassificationFourier`` -> :class:`perceiver.tasks.clf.Classifier` with the
    ``image`` adapter (eval mode). The converted model reads raw RGB pixels ``(B, height, width, 3)`` (uint8 or float
    in [0, 1]; ``image_size`` = height and width, default 224 as DeepMind's) and applies the ImageNet normalisation
    of the Hugging Face image processor itself."""
    from perceiver.tasks.clf import Classifier, ClassifierConfig

    if type(hf_model).__name__ != "PerceiverForImageClassificationFourier":
        raise ConversionError(f"expected a PerceiverForImageClassificationFourier, got a {type(hf_model).__name__}")
    config = hf_model.config
    _check_config(config)
    preprocessor = hf_model.perceiver.input_preprocessor
    encoding = preprocessor.position_embeddings
    if preprocessor.prep_type != "pixels" or preprocessor.spatial_downsample != 1 or encoding.sine_only \
            or not encoding.concat_pos or preprocessor.concat_or_add_pos != "concat":
        raise ConversionError("only pixel input with concatenated sine/cosine Fourier features is supported")
    state = hf_model.state_dict()
    decoder = "perceiver.decoder.decoder"
    dec_qk, dec_v = _channels(state, f"{decoder}.decoding_cross_attention")
    labels = [config.id2label[i] for i in range(config.num_labels)]
    if len(set(labels)) != len(labels):
        labels = [f"{i}: {label}" for i, label in enumerate(labels)]
    ours = Classifier(
        ClassifierConfig(
            adapter="image",
            adapter_options=dict(
                num_frequency_bands=encoding.num_bands,
                max_resolution=list(encoding.max_resolution),
                mean=IMAGENET_MEAN,
                std=IMAGENET_STD,
            ),
            image_shape=[*_pair(image_size), preprocessor.in_channels],
            num_classes=config.num_labels,
            class_names=labels,
            num_decoder_heads=1,  # PerceiverClassificationDecoder's default
            num_decoder_qk_channels=dec_qk,
            num_decoder_v_channels=dec_v,
            decoder_widening_factor=1,
            **_encoder_options(config, state, "perceiver"),
        )
    )
    mapping = {f"{decoder}.output_position_encodings.position_embeddings": "decoder.query_provider.query"}
    mapping.update({f"{decoder}.final_layer.{p}": f"output_adapter.linear.{p}" for p in ("weight", "bias")})
    mapping.update(_encoder_map("perceiver", config.num_self_attends_per_block))
    mapping.update(_layer_map(f"{decoder}.decoding_cross_attention", "decoder.cross_attention", cross=True))
    _assign(ours, state, mapping)
    return ours.eval()


def _pair(size: Union[int, Tuple[int, int]]) -> Tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


__all__ = ["ConversionError", "convert", "convert_image_classifier", "convert_masked_lm", "load_hf_model"]
