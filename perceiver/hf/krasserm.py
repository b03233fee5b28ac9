"""Load models saved by krasserm's ``perceiver-io`` 0.11 (``save_pretrained`` of its transformers wrappers, e.g. the
Hub's ``krasserm/perceiver-ar-clm-base``, ``krasserm/perceiver-io-mlm``, ``krasserm/perceiver-io-txt-clf-imdb``,
``krasserm/perceiver-io-img-clf-mnist``) into this project's models. Neither krasserm's package nor transformers is
needed: the directory's ``config.json`` and weights are read directly.

==========================================  ===================================================================
krasserm ``model_type``                     this project
==========================================  ===================================================================
``perceiver-ar-causal-language-model``      ``clm`` :class:`~perceiver.tasks.clm.CausalLanguageModel`
``perceiver-io-masked-language-model``      ``mlm`` :class:`~perceiver.tasks.mlm.MaskedLanguageModel`
``perceiver-io-text-classifier``            ``clf`` :class:`~perceiver.tasks.clf.Classifier` (``text-bytes``)
``perceiver-io-image-classifier``           ``clf`` :class:`~perceiver.tasks.clf.Classifier` (``image``)
==========================================  ===================================================================

Every krasserm config field is either mapped to an option of the project's model, checked to have a value the
project can express, or known to affect training only (dropout is mapped; ``activation_offloading``, ``freeze``,
``params``, ``max_heads_parallel`` are ignored). Anything else is refused with a :class:`KrassermError` naming it.
Every weight is assigned to exactly one parameter (a weight left over or missing is an error).

Weights come from ``model.safetensors`` or ``pytorch_model.bin``; a ``.bin`` is read with
``torch.load(weights_only=True)`` and must hold tensors only, so loading never runs code from the file.

Two layouts differ and are converted exactly: krasserm's rotary embedding rotates interleaved channel pairs
``(2i, 2i + 1)`` of a head, this project's pairs ``(i, i + R/2)``; the query and key projection rows of rotary layers
are permuted so that both compute the same attention scores. Images: the classifier's input normalisation is the
identity unless the directory's ``preprocessor_config.json`` normalises (then its mean and std are used, and the
model reads pixels as the image processor's rescaling gives them, uint8 or floats in [0, 1]).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from perceiver.checkpoint import ModelLoadError

MODEL_TYPES = {
    "perceiver-ar-causal-language-model": "clm",
    "perceiver-io-masked-language-model": "mlm",
    "perceiver-io-text-classifier": "clf",
    "perceiver-io-image-classifier": "clf",
}
"""krasserm's ``model_type`` -> this project's task."""

SAFETENSORS_FILE = "model.safetensors"
BIN_FILE = "pytorch_model.bin"
PREPROCESSOR_FILE = "preprocessor_config.json"
PREFIX = "backend_model."

# config fields that only matter in training (or to how a result is computed, not to what it is)
_IGNORED = {"activation_offloading", "max_heads_parallel", "freeze", "params"}

# krasserm 0.11's defaults, which its config classes give fields a saved config lacks (e.g. one saved by an older
# version): CausalLanguageModelConfig, EncoderConfig (+ TextEncoderConfig, ImageEncoderConfig), DecoderConfig
# (+ TextDecoderConfig, ClassificationDecoderConfig)
CLM_DEFAULTS = dict(
    vocab_size=262, max_seq_len=4096, max_latents=512, num_channels=512, num_heads=8, num_self_attention_layers=8,
    num_self_attention_rotary_layers=1, self_attention_widening_factor=4, cross_attention_widening_factor=4,
    cross_attention_dropout=0.5, post_attention_dropout=0.0, residual_dropout=0.0, activation_checkpointing=False,
    output_norm=False, output_bias=True, abs_pos_emb=True, init_scale=0.02,
)
ENCODER_DEFAULTS = dict(
    num_cross_attention_heads=8, num_cross_attention_qk_channels=None, num_cross_attention_v_channels=None,
    num_cross_attention_layers=1, first_cross_attention_layer_shared=False, cross_attention_widening_factor=1,
    num_self_attention_heads=8, num_self_attention_qk_channels=None, num_self_attention_v_channels=None,
    num_self_attention_layers_per_block=8, num_self_attention_blocks=1, first_self_attention_block_shared=True,
    self_attention_widening_factor=1, dropout=0.0, init_scale=0.02,
)
TEXT_ENCODER_DEFAULTS = dict(ENCODER_DEFAULTS, vocab_size=10003, max_seq_len=256, num_input_channels=64)
IMAGE_ENCODER_DEFAULTS = dict(ENCODER_DEFAULTS, image_shape=[224, 224, 3], num_frequency_bands=32)
DECODER_DEFAULTS = dict(
    num_cross_attention_heads=8, num_cross_attention_qk_channels=None, num_cross_attention_v_channels=None,
    cross_attention_widening_factor=1, cross_attention_residual=True, dropout=0.0, init_scale=0.02,
)
TEXT_DECODER_DEFAULTS = dict(DECODER_DEFAULTS, num_output_query_channels=None, vocab_size=10003, max_seq_len=512)
CLASSIFICATION_DECODER_DEFAULTS = dict(DECODER_DEFAULTS, num_output_queries=1, num_output_query_channels=256,
                                       num_classes=100)
IO_DEFAULTS = dict(activation_checkpointing=False)


def _with_defaults(model_config: Mapping[str, Any], encoder_defaults, decoder_defaults) -> Dict[str, Any]:
    """A krasserm Perceiver IO ``model_config`` with krasserm's defaults for the fields it lacks."""
    values = dict(IO_DEFAULTS, **model_config)
    for key in ("num_latents", "num_latent_channels"):
        if key not in values:
            raise KrassermError(f"the krasserm config lacks {key}")
    values["encoder"] = dict(encoder_defaults, **(model_config.get("encoder") or {}))
    values["decoder"] = dict(decoder_defaults, **(model_config.get("decoder") or {}))
    return values


class KrassermError(ModelLoadError):
    """A krasserm model that cannot be loaded, with the reason (one line)."""


def is_krasserm_config(config: Any) -> bool:
    """True when a parsed ``config.json`` is one of krasserm's perceiver-io models (by its ``model_type``)."""
    return isinstance(config, dict) and config.get("model_type") in MODEL_TYPES and "model_config" in config


def krasserm_task(config: Mapping[str, Any]) -> str:
    """This project's task name for a krasserm ``config.json``."""
    return MODEL_TYPES[config["model_type"]]


# -------------------------------------------------------------------------------------------------------------
#  Reading
# -------------------------------------------------------------------------------------------------------------


def read_weights(directory: Union[str, Path]) -> Dict[str, Tensor]:
    """The state dict in ``directory``: ``model.safetensors``, else ``pytorch_model.bin`` (tensors only)."""
    directory = Path(directory)
    safetensors_path, bin_path = directory / SAFETENSORS_FILE, directory / BIN_FILE
    if safetensors_path.exists():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(safetensors_path))
        except (SafetensorError, OSError) as error:
            raise KrassermError(f"cannot read {safetensors_path}: {error}") from error
    if bin_path.exists():
        return read_bin(bin_path)
    if (directory / f"{SAFETENSORS_FILE}.index.json").exists() or (directory / f"{BIN_FILE}.index.json").exists():
        raise KrassermError(f"{directory} holds sharded weights, which are not supported; save them unsharded")
    raise KrassermError(f"{directory} has neither {SAFETENSORS_FILE} nor {BIN_FILE}")


def read_bin(path: Union[str, Path]) -> Dict[str, Tensor]:
    """A ``pytorch_model.bin`` state dict, read with ``torch.load(weights_only=True)``: a file that holds anything
    but tensors (for instance a pickle that would run code) is refused, never executed."""
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # weights_only refuses objects other than tensors
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise KrassermError(f"refusing {path}: not a plain file of tensors ({reason})") from None
    except Exception as error:  # corrupt or truncated
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise KrassermError(
            f"cannot read {path}: the file is corrupted or truncated (download it again) ({reason})"
        ) from None
    if not isinstance(state, dict) or not all(
        isinstance(key, str) and isinstance(value, Tensor) for key, value in state.items()
    ):
        raise KrassermError(f"refusing {path}: it holds {type(state).__name__}, not a state dict of tensors")
    return state


def load_krasserm(directory: Union[str, Path], config: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """The project model (eval mode) for krasserm's model in ``directory`` (``config`` = its parsed config.json)."""
    directory = Path(directory)
    if config is None:
        try:
            config = json.loads((directory / "config.json").read_text())
        except (OSError, ValueError) as error:
            raise KrassermError(f"cannot read {directory / 'config.json'}: {error}") from error
    if not is_krasserm_config(config):
        raise KrassermError(f"{directory / 'config.json'} is not a krasserm perceiver-io model config")
    state = read_weights(directory)
    if any(not key.startswith(PREFIX) for key in state):
        odd = next(key for key in state if not key.startswith(PREFIX))
        raise KrassermError(f"{directory}: weight {odd!r} is not under {PREFIX!r}")
    state = {key[len(PREFIX):]: value for key, value in state.items()}
    converter = {
        "perceiver-ar-causal-language-model": convert_causal_lm,
        "perceiver-io-masked-language-model": convert_masked_lm,
        "perceiver-io-text-classifier": convert_text_classifier,
        "perceiver-io-image-classifier": convert_image_classifier,
    }[config["model_type"]]
    from perceiver.empty_model import parameters_on_meta

    try:
        with parameters_on_meta():  # the model takes the file's tensors as its parameters: one copy of the weights
            return converter(config, state, directory).eval()
    except KrassermError as error:
        raise KrassermError(f"{directory}: {error}") from None


# -------------------------------------------------------------------------------------------------------------
#  Config checks
# -------------------------------------------------------------------------------------------------------------


def _check_fields(values: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    unknown = sorted(set(values) - set(known) - _IGNORED)
    if unknown:
        raise KrassermError(f"krasserm option {where}{unknown[0]} is not supported by this project")


def _refuse(option: str, value: Any, reason: str) -> KrassermError:
    return KrassermError(f"krasserm option {option}={value!r} cannot be expressed: {reason}")


# -------------------------------------------------------------------------------------------------------------
#  Weight maps
# -------------------------------------------------------------------------------------------------------------


def _attention_layer_map(source: str, target: str, cross: bool, residual: bool = True) -> Dict[str, str]:
    """krasserm ``CrossAttentionLayer`` / ``SelfAttentionLayer`` (an ``nn.Sequential`` of [Residual(]attention[)]
    and Residual(MLP)) -> this project's layer: source parameter name -> target parameter name."""
    attention = f"{source}.0.module" if residual else f"{source}.0"
    names = {f"{attention}.attention.{p}": f"{target}.attention.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj")}
    if cross:
        names.update({f"{attention}.q_norm": f"{target}.q_norm", f"{attention}.kv_norm": f"{target}.kv_norm"})
    else:
        names[f"{attention}.norm"] = f"{target}.norm"
    names.update({f"{source}.1.module.{i}": f"{target}.mlp.{name}" for i, name in (("0", "norm"), ("1", "fc1"),
                                                                                  ("3", "fc2"))})
    return names


def _expand(names: Mapping[str, str], state: Mapping[str, Tensor]) -> Dict[str, str]:
    """Module-name map -> parameter-name map, for the parameters (weight, bias) the source has."""
    mapping = {}
    for source, target in names.items():
        for param in ("weight", "bias"):
            if f"{source}.{param}" in state:
                mapping[f"{source}.{param}"] = f"{target}.{param}"
    return mapping


def interleaved_to_halves(weight: Tensor, num_heads: int, num_rotary: int) -> Tensor:
    """Reorder the output rows (B... = heads x head channels) of a query or key projection from krasserm's rotary
    layout, pairs (2i, 2i+1), to this project's, pairs (i, i + R/2), in the first ``num_rotary`` channels of each
    head. Applied to queries and keys alike it leaves every attention score unchanged."""
    head_dim = weight.shape[0] // num_heads
    order = torch.arange(head_dim)
    order[: num_rotary // 2] = torch.arange(0, num_rotary, 2)
    order[num_rotary // 2: num_rotary] = torch.arange(1, num_rotary, 2)
    index = (torch.arange(num_heads)[:, None] * head_dim + order).reshape(-1)
    return weight[index]


def _assign(model: nn.Module, state: Dict[str, Tensor], mapping: Dict[str, str],
            transforms: Optional[Dict[str, Callable[[Tensor], Tensor]]] = None) -> None:
    from perceiver.hf.convert import ConversionError
    from perceiver.hf.convert import _assign as assign

    absent = sorted(source for source in mapping if source not in state)
    if absent:
        raise KrassermError(f"missing weights: {', '.join(absent[:3])}{' ...' if len(absent) > 3 else ''}")
    try:
        assign(model, state, mapping, transforms)
    except ConversionError as error:
        raise KrassermError(str(error)) from None


# -------------------------------------------------------------------------------------------------------------
#  Perceiver AR (clm)
# -------------------------------------------------------------------------------------------------------------

_CLM_FIELDS = (
    "vocab_size", "max_seq_len", "max_latents", "num_channels", "num_heads", "num_self_attention_layers",
    "num_self_attention_rotary_layers", "self_attention_widening_factor", "cross_attention_widening_factor",
    "cross_attention_dropout", "post_attention_dropout", "residual_dropout", "activation_checkpointing",
    "output_norm", "output_bias", "abs_pos_emb", "init_scale",
)


def causal_lm_config(model_config: Mapping[str, Any]):
    """krasserm ``CausalLanguageModelConfig`` values -> :class:`~perceiver.tasks.clm.CausalLanguageModelConfig`."""
    from perceiver.tasks.clm import CausalLanguageModelConfig

    c = dict(CLM_DEFAULTS, **model_config)
    _check_fields(c, _CLM_FIELDS, "")
    head_dim = c["num_channels"] // c["num_heads"]
    num_rotary = head_dim // 2 if c["abs_pos_emb"] else head_dim
    if num_rotary % 2:
        raise _refuse("num_channels", c["num_channels"], f"{num_rotary} rotary channels per head is odd")
    rotary_layers = c["num_self_attention_rotary_layers"]
    if rotary_layers < -1:
        raise _refuse("num_self_attention_rotary_layers", rotary_layers, "must be -1 (all) or >= 0")
    return CausalLanguageModelConfig(
        vocab_size=c["vocab_size"],
        max_seq_len=c["max_seq_len"],
        max_latents=c["max_latents"],
        num_channels=c["num_channels"],
        num_heads=c["num_heads"],
        num_self_attention_layers=c["num_self_attention_layers"],
        cross_attention_widening_factor=c["cross_attention_widening_factor"],
        self_attention_widening_factor=c["self_attention_widening_factor"],
        cross_attention_dropout=c["cross_attention_dropout"],
        attention_dropout=c["post_attention_dropout"],  # krasserm: dropout of the attention probabilities
        post_attention_dropout=c["residual_dropout"],  # krasserm: dropout before the residual sum
        init_scale=c["init_scale"],
        activation_checkpointing=c["activation_checkpointing"],
        adapter="text-bytes",
        adapter_options=dict(
            abs_pos_emb=c["abs_pos_emb"], rotary_fraction=num_rotary / head_dim, output_bias=c["output_bias"]
        ),
        output_norm=c["output_norm"],
        num_rotary_layers=None if rotary_layers == -1 else rotary_layers,
        # fixed in krasserm's PerceiverAR
        qkv_bias=False,
        cross_attention_out_bias=True,
        self_attention_out_bias=False,
        mlp_bias=False,
        latent_kv_query_norm=True,
    )


def convert_causal_lm(config: Mapping[str, Any], state: Dict[str, Tensor], directory: Path) -> nn.Module:
    from perceiver.tasks.clm import CausalLanguageModel

    model = CausalLanguageModel(causal_lm_config(config["model_config"]))
    adapter = model.input_adapter
    num_rotary, num_heads = adapter.num_rotary_channels, model.config.num_heads
    names = {
        "input_adapter.txt_embedding": "input_adapter.token_embedding",
        "input_adapter.pos_embedding": "input_adapter.position_embedding",
        "out_norm": "out_norm",
    }
    names.update(_attention_layer_map("cross_attention", "perceiver_ar.cross_attention", cross=True))
    for i in range(model.config.num_self_attention_layers):
        names.update(_attention_layer_map(f"self_attention.{i}", f"perceiver_ar.self_attention.layers.{i}",
                                          cross=False))
    mapping = _expand(names, state)
    if "output_adapter.bias" in state:
        mapping["output_adapter.bias"] = "input_adapter.output_bias"

    inv_freq = state.pop("input_adapter.frq_pos_encoding.inv_freq", None)  # a buffer: check it, do not load it
    if inv_freq is not None and (adapter.rotary_embedding is None or not torch.allclose(
            inv_freq.float(), adapter.rotary_embedding.inv_freq, rtol=1e-5)):
        raise KrassermError("the rotary frequencies in the weights do not match the config")

    rotated = ["perceiver_ar.cross_attention"] + [
        f"perceiver_ar.self_attention.layers.{i}"
        for i in range(model.perceiver_ar.self_attention.num_rotary_layers)
        if i < model.config.num_self_attention_layers
    ]
    targets = {f"{layer}.attention.{proj}.{param}" for layer in rotated for proj in ("q_proj", "k_proj")
               for param in ("weight", "bias")}
    transforms = {
        source: (lambda w: interleaved_to_halves(w, num_heads, num_rotary))
        for source, target in mapping.items() if target in targets
    }
    _assign(model, state, mapping, transforms)
    return model


# -------------------------------------------------------------------------------------------------------------
#  Perceiver IO (mlm, clf)
# -------------------------------------------------------------------------------------------------------------

_ENCODER_FIELDS = (
    "num_cross_attention_heads", "num_cross_attention_qk_channels", "num_cross_attention_v_channels",
    "num_cross_attention_layers", "first_cross_attention_layer_shared", "cross_attention_widening_factor",
    "num_self_attention_heads", "num_self_attention_qk_channels", "num_self_attention_v_channels",
    "num_self_attention_layers_per_block", "num_self_attention_blocks", "first_self_attention_block_shared",
    "self_attention_widening_factor", "dropout", "init_scale",
)
_DECODER_FIELDS = (
    "num_cross_attention_heads", "num_cross_attention_qk_channels", "num_cross_attention_v_channels",
    "cross_attention_widening_factor", "cross_attention_residual", "dropout", "init_scale",
)
_IO_FIELDS = ("encoder", "decoder", "num_latents", "num_latent_channels", "activation_checkpointing")


def _io_options(model_config: Mapping[str, Any], state: Mapping[str, Tensor], encoder_fields, decoder_fields):
    """Encoder and decoder options of the project's Perceiver IO tasks; qk and v channels are read from the weights
    (krasserm's defaults for them differ between its models)."""
    _check_fields(model_config, _IO_FIELDS, "")
    enc, dec = model_config["encoder"], model_config["decoder"]
    _check_fields(enc, _ENCODER_FIELDS + tuple(encoder_fields), "encoder.")
    _check_fields(dec, _DECODER_FIELDS + tuple(decoder_fields), "decoder.")

    def channels(layer: str):
        return state[f"{layer}.0.module.attention.q_proj.weight"].shape[0], \
            state[f"{layer}.0.module.attention.v_proj.weight"].shape[0]

    ca_qk, ca_v = channels("0.cross_attn_1")
    sa_qk, sa_v = channels("0.self_attn_1.0") if enc["num_self_attention_layers_per_block"] > 0 else (None, None)
    decoder_attention = "1.cross_attn.0.module" if dec["cross_attention_residual"] else "1.cross_attn.0"
    dec_qk = state[f"{decoder_attention}.attention.q_proj.weight"].shape[0]
    dec_v = state[f"{decoder_attention}.attention.v_proj.weight"].shape[0]
    return dict(
        num_latents=model_config["num_latents"],
        num_latent_channels=model_config["num_latent_channels"],
        num_cross_attention_heads=enc["num_cross_attention_heads"],
        num_cross_attention_qk_channels=ca_qk,
        num_cross_attention_v_channels=ca_v,
        num_cross_attention_layers=enc["num_cross_attention_layers"],
        first_cross_attention_layer_shared=enc["first_cross_attention_layer_shared"],
        cross_attention_widening_factor=enc["cross_attention_widening_factor"],
        num_self_attention_heads=enc["num_self_attention_heads"],
        num_self_attention_qk_channels=sa_qk,
        num_self_attention_v_channels=sa_v,
        num_self_attention_layers_per_block=enc["num_self_attention_layers_per_block"],
        num_self_attention_blocks=enc["num_self_attention_blocks"],
        first_self_attention_block_shared=enc["first_self_attention_block_shared"],
        self_attention_widening_factor=enc["self_attention_widening_factor"],
        num_decoder_heads=dec["num_cross_attention_heads"],
        num_decoder_qk_channels=dec_qk,
        num_decoder_v_channels=dec_v,
        decoder_widening_factor=dec["cross_attention_widening_factor"],
        decoder_query_residual=dec["cross_attention_residual"],
        attention_dropout=enc["dropout"],  # krasserm: dropout of the attention probabilities (the decoder's own
        residual_dropout=0.0,  # value only matters in training); its Perceiver IO has no residual dropout
        init_scale=enc["init_scale"],
        activation_checkpointing=model_config["activation_checkpointing"],
    )


def _encoder_map(model_config: Mapping[str, Any], state: Mapping[str, Tensor]) -> Dict[str, str]:
    enc = model_config["encoder"]
    names = _attention_layer_map("0.cross_attn_1", "encoder.cross_attention_1", cross=True)
    if enc["num_cross_attention_layers"] > 1 and not enc["first_cross_attention_layer_shared"]:
        names.update(_attention_layer_map("0.cross_attn_n", "encoder.cross_attention_n", cross=True))
    blocks = ["1"]
    if enc["num_self_attention_blocks"] > 1 and not enc["first_self_attention_block_shared"]:
        blocks.append("n")
    for block in blocks:
        for i in range(enc["num_self_attention_layers_per_block"]):
            names.update(_attention_layer_map(f"0.self_attn_{block}.{i}", f"encoder.self_attention_{block}.layers.{i}",
                                              cross=False))
    mapping = _expand(names, state)
    mapping["0.latent_provider._query"] = "encoder.latent_provider.query"
    return mapping


def _decoder_map(model_config: Mapping[str, Any], state: Mapping[str, Tensor]) -> Dict[str, str]:
    residual = model_config["decoder"]["cross_attention_residual"]
    mapping = _expand(_attention_layer_map("1.cross_attn", "decoder.cross_attention", cross=True, residual=residual),
                      state)
    mapping["1.output_query_provider._query"] = "decoder.query_provider.query"
    return mapping


def _text_encoder_options(enc: Mapping[str, Any]) -> Dict[str, Any]:
    return dict(vocab_size=enc["vocab_size"], max_seq_len=enc["max_seq_len"],
                num_input_channels=enc["num_input_channels"])


def _text_embedding_map() -> Dict[str, str]:
    return {
        "0.input_adapter.txt_embedding.weight": "input_adapter.token_embedding.weight",
        "0.input_adapter.pos_embedding.weight": "input_adapter.position_embedding.weight",
    }


def convert_masked_lm(config: Mapping[str, Any], state: Dict[str, Tensor], directory: Path) -> nn.Module:
    from perceiver.tasks.mlm import MaskedLanguageModel, MaskedLanguageModelConfig

    mc = _with_defaults(config["model_config"], TEXT_ENCODER_DEFAULTS, TEXT_DECODER_DEFAULTS)
    enc, dec = mc["encoder"], mc["decoder"]
    options = _io_options(mc, state, ("vocab_size", "max_seq_len", "num_input_channels"),
                          ("num_output_query_channels", "vocab_size", "max_seq_len"))
    if dec["num_output_query_channels"] is not None:
        raise _refuse("decoder.num_output_query_channels", dec["num_output_query_channels"],
                      "only logits tied to the input embedding are supported")
    for key in ("vocab_size", "max_seq_len"):
        if dec[key] != enc[key]:
            raise _refuse(f"decoder.{key}", dec[key], f"must equal encoder.{key} ({enc[key]})")
    model = MaskedLanguageModel(MaskedLanguageModelConfig(
        **_text_encoder_options(enc),
        special_tokens=config.get("tokenizer_class") == "PerceiverTokenizer",  # [CLS] ... [SEP], as DeepMind's
        **options,
    ))
    mapping = {**_text_embedding_map(), **_encoder_map(mc, state), **_decoder_map(mc, state),
               "1.output_adapter.bias": "input_adapter.output_bias"}
    _assign(model, state, mapping)
    return model


def _class_names(config: Mapping[str, Any], num_classes: int) -> Optional[List[str]]:
    id2label = config.get("id2label") or {}
    try:
        names = [str(id2label.get(str(i), id2label.get(i))) for i in range(num_classes)]
    except AttributeError:
        return None
    if len(id2label) != num_classes or len(set(names)) != num_classes:
        return None
    return names


def _classifier_options(config: Mapping[str, Any], mc: Mapping[str, Any], state: Mapping[str, Tensor],
                        encoder_fields) -> Dict[str, Any]:
    dec = mc["decoder"]
    options = _io_options(mc, state, encoder_fields, ("num_output_queries", "num_output_query_channels",
                                                       "num_classes"))
    if dec["num_output_queries"] != 1:
        raise _refuse("decoder.num_output_queries", dec["num_output_queries"], "a classifier has one output query")
    return dict(
        options,
        num_classes=dec["num_classes"],
        class_names=_class_names(config, dec["num_classes"]),
        num_output_query_channels=dec["num_output_query_channels"],
    )


def _classifier_map(mc: Mapping[str, Any], state: Mapping[str, Tensor]) -> Dict[str, str]:
    mapping = {**_encoder_map(mc, state), **_decoder_map(mc, state)}
    mapping.update({f"1.output_adapter.linear.{p}": f"output_adapter.linear.{p}" for p in ("weight", "bias")})
    return mapping


def convert_text_classifier(config: Mapping[str, Any], state: Dict[str, Tensor], directory: Path) -> nn.Module:
    from perceiver.tasks.clf import Classifier, ClassifierConfig

    mc = _with_defaults(config["model_config"], TEXT_ENCODER_DEFAULTS, CLASSIFICATION_DECODER_DEFAULTS)
    options = _classifier_options(config, mc, state, ("vocab_size", "max_seq_len", "num_input_channels"))
    model = Classifier(ClassifierConfig(adapter="text-bytes", **_text_encoder_options(mc["encoder"]), **options))
    _assign(model, state, {**_text_embedding_map(), **_classifier_map(mc, state)})
    return model


def image_normalisation(directory: Path, num_channels: int) -> Dict[str, List[float]]:
    """Mean and std of the image adapter: those of ``preprocessor_config.json`` if it normalises, else the
    identity (mean 0, std 1), so that the model reads what krasserm's model reads."""
    identity = dict(mean=[0.0] * num_channels, std=[1.0] * num_channels)
    path = directory / PREPROCESSOR_FILE
    if not path.exists():
        return identity
    try:
        processor = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise KrassermError(f"cannot read {path}: {error}") from error
    if not processor.get("do_normalize", False):
        return identity

    def per_channel(key: str) -> List[float]:
        value = processor.get(key)
        values = [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)] * num_channels
        if len(values) != num_channels:
            raise KrassermError(f"{path}: {key} has {len(values)} values for {num_channels} image channels")
        return values

    return dict(mean=per_channel("image_mean"), std=per_channel("image_std"))


def convert_image_classifier(config: Mapping[str, Any], state: Dict[str, Tensor], directory: Path) -> nn.Module:
    from perceiver.tasks.clf import Classifier, ClassifierConfig

    mc = _with_defaults(config["model_config"], IMAGE_ENCODER_DEFAULTS, CLASSIFICATION_DECODER_DEFAULTS)
    enc = mc["encoder"]
    image_shape = [int(v) for v in enc["image_shape"]]
    if len(image_shape) != 3:
        raise _refuse("encoder.image_shape", enc["image_shape"], "only (height, width, channels) images")
    options = _classifier_options(config, mc, state, ("image_shape", "num_frequency_bands"))
    model = Classifier(ClassifierConfig(
        adapter="image",
        adapter_options=dict(num_frequency_bands=enc["num_frequency_bands"],
                             **image_normalisation(directory, image_shape[2])),
        image_shape=image_shape,
        **options,
    ))
    features = state.pop("0.input_adapter.position_encoding.position_encoding", None)  # a buffer: check it
    if features is not None and (features.shape != model.input_adapter.position_features.shape or not torch.allclose(
            features.float(), model.input_adapter.position_features, rtol=1e-5, atol=1e-6)):
        raise KrassermError("the Fourier position features in the weights do not match the config")
    _assign(model, state, _classifier_map(mc, state))
    return model


__all__ = [
    "KrassermError", "MODEL_TYPES", "causal_lm_config", "interleaved_to_halves", "is_krasserm_config",
    "krasserm_task", "load_krasserm", "read_bin", "read_weights",
]
