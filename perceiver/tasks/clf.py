"""Task ``clf``: classification of text or images with Perceiver IO.

``Classifier`` = input adapter (``text-bytes`` for token ids, ``image`` for pixels) -> encoder -> decoder with one
learned query -> class logits. The encoder (and the token embedding) can start from a trained ``mlm`` model and be
frozen, the classic fine-tuning recipe (``encoder_from``, ``freeze_encoder``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from perceiver import registry
from perceiver.adapters.base import InputAdapter, TokenInputAdapter, check_adapter_fits, legacy_keys_hook
from perceiver.adapters.output import ClassLogitsAdapter, ClassLogitsConfig
from perceiver.config_checks import ConfigError, check_ranges
from perceiver.core.decoder import TrainableQueryProvider
from perceiver.core.perceiver_io import PerceiverIO
from perceiver.data.tokenizer import PAD_ID, VOCAB_SIZE, ByteTokenizer
from perceiver.publishing import HubMethods
from perceiver.tasks.perceiver_io_options import (
    ENCODER_FIELDS,
    PerceiverIOOptions,
    build_encoder_decoder,
    create_input_adapter,
)


@dataclass
class ClassifierConfig(PerceiverIOOptions):
    num_classes: Optional[int] = None
    """Number of classes (default: the data set's)."""
    class_names: Optional[List[str]] = None
    """Name of each class (default: the data set's)."""
    image_shape: Optional[List[int]] = None
    """(height, width, channels) of image input (default: the data set's)."""
    vocab_size: int = VOCAB_SIZE
    """Token vocabulary (text input)."""
    max_seq_len: int = 512
    """Longest text input in bytes; longer texts are cut (text input)."""
    num_input_channels: int = 256
    """Channels of the token embedding (text input)."""
    num_decoder_heads: int = 1
    """Heads of the decoder's cross-attention from the class query to the latents."""
    num_output_query_channels: Optional[int] = None
    """Channels of the decoder's output query (None: num_latent_channels)."""
    encoder_from: Optional[str] = None
    """Initialise the token embedding and encoder from this trained mlm model (directory or .ckpt)."""
    freeze_encoder: bool = False
    """Train only the decoder (needs encoder_from)."""

    def __post_init__(self):
        if self.class_names is not None:
            self.class_names = [str(name) for name in self.class_names]
            if self.num_classes is None:
                self.num_classes = len(self.class_names)
            if len(self.class_names) != self.num_classes:
                raise ConfigError(f"{len(self.class_names)} class_names for num_classes={self.num_classes}")
            if len(set(self.class_names)) != len(self.class_names):
                raise ConfigError(f"class_names must be distinct, got {self.class_names}")
        if self.num_classes is None:
            raise ConfigError("num_classes is not set: use a data set that declares its classes or --num-classes N")
        if self.num_classes < 2:
            raise ConfigError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.image_shape is not None:
            self.image_shape = [int(v) for v in self.image_shape]
        check_ranges(self, {"vocab_size": ">= 2", "max_seq_len": ">= 1", "num_input_channels": ">= 1"}, ConfigError)
        if self.image_shape is not None and (len(self.image_shape) != 3 or min(self.image_shape) < 1):
            raise ConfigError(f"image_shape must be (height, width, channels) >= 1, got {self.image_shape}")
        if self.freeze_encoder and not self.encoder_from:
            raise ConfigError("freeze_encoder needs encoder_from (a trained mlm model to take the encoder from)")
        self.validate_io()

    def labels(self) -> List[str]:
        return list(self.class_names) if self.class_names else [str(i) for i in range(self.num_classes)]

    @classmethod
    def model_facts(cls, values: Dict[str, Any]) -> Dict[str, Any]:
        """Sizes implied by ``encoder_from`` (used by ``perceiver train`` for options the user did not set)."""
        path = values.get("encoder_from")
        if not path:
            return {}
        adapter = values.get("adapter")
        if adapter and registry.get("adapter", adapter).metadata.get("input") != "tokens":
            raise ConfigError(f"encoder_from needs a text classifier (token input); adapter {adapter!r} is not")
        task, config = read_model_config(path)
        if task != "mlm":
            raise ConfigError(f"encoder_from {path} is a {task!r} model; it must be a trained mlm model")
        keys = ENCODER_FIELDS + ("vocab_size", "max_seq_len", "num_input_channels", "adapter_options")
        facts = {key: config[key] for key in keys if key in config}
        options = dict(facts.get("adapter_options") or {})
        options.pop("output_bias", None)
        facts["adapter_options"] = options
        return facts


def read_model_config(path: Union[str, Path]) -> Tuple[str, Dict[str, Any]]:
    """(task, config values) of a saved model, without building it."""
    from perceiver.checkpoint import CONFIG_FILE, ModelLoadError, _load_ckpt, _read_json, resolve_model_path

    resolved = resolve_model_path(path)
    if resolved.is_dir():
        meta = _read_json(resolved / CONFIG_FILE)
        if meta.get("format") != "perceiver" or "task" not in meta:
            raise ModelLoadError(f"{resolved / CONFIG_FILE} is not a perceiver model config")
        return meta["task"], dict(meta.get("config") or {})
    task, config, _ = _load_ckpt(resolved)
    return task, dict(config)


class Classifier(HubMethods, PerceiverIO):
    """Perceiver IO classifier.

    ``forward(input_ids (B, N), pad_mask (B, N) True at padding) -> logits (B, num_classes)`` for text;
    ``forward(images (B, H, W, C)) -> logits (B, num_classes)`` for images (uint8, or float in [0, 1]).
    """

    task = "clf"
    LEGACY_KEYS = {"input_adapter.adapter.": "input_adapter."}
    """Key prefixes of weights saved before the adapter vocabulary (old: new), renamed on load."""

    def __init__(
        self,
        config: ClassifierConfig,
        input_adapter: Optional[InputAdapter] = None,
        output_adapter: Optional[nn.Module] = None,
    ):
        """``input_adapter`` (an instance) replaces the registered adapter ``config.adapter`` names;
        ``output_adapter`` replaces the default class logits from the decoder's query."""
        if input_adapter is None:
            entry = registry.get("adapter", config.adapter)
            if entry.metadata.get("input") == "image" and config.image_shape is None:
                raise ConfigError("an image classifier needs image_shape (height, width, channels)")
            input_adapter = create_input_adapter(
                config.adapter,
                config.adapter_options,
                rotary_fraction=0.0,
                output_bias=False,
                vocab_size=config.vocab_size,
                max_seq_len=config.max_seq_len,
                num_channels=config.num_input_channels,
                num_heads=config.num_cross_attention_heads,
                image_shape=config.image_shape,
            )
        check_adapter_fits(input_adapter)  # the encoder is built for the adapter's channels
        query_channels = config.num_output_query_channels or config.num_latent_channels
        query_provider = TrainableQueryProvider(1, query_channels, config.init_scale)
        encoder, decoder = build_encoder_decoder(config, input_adapter, query_provider, query_residual=True)
        if output_adapter is None:
            output_adapter = ClassLogitsAdapter(ClassLogitsConfig(query_channels, config.num_classes))
            nn.init.normal_(output_adapter.linear.weight, std=config.init_scale)
            nn.init.zeros_(output_adapter.linear.bias)
        super().__init__(input_adapter, encoder, decoder, output_adapter)
        self.config = config
        self.register_load_state_dict_pre_hook(legacy_keys_hook(self.LEGACY_KEYS))

    @property
    def reads_text(self) -> bool:
        return isinstance(self.input_adapter, TokenInputAdapter)

    def forward(self, inputs: Tensor, pad_mask: Optional[Tensor] = None) -> Tensor:
        if self.reads_text and inputs.shape[1] > self.config.max_seq_len:
            raise ValueError(f"input of {inputs.shape[1]} tokens is longer than max_seq_len {self.config.max_seq_len}")
        return super().forward(inputs, pad_mask)

    def encode_texts(self, texts: Sequence[str]) -> Tuple[Tensor, Tensor]:
        """Texts -> right-padded (input_ids (B, N), pad_mask (B, N)); each text is cut to max_seq_len bytes."""
        tokenizer = ByteTokenizer()
        encoded = []
        for text in texts:
            if not text or not text.strip():
                raise ValueError("the text is empty")
            encoded.append(tokenizer.encode(text)[: self.config.max_seq_len])
        return pad_right(encoded)

    @torch.no_grad()
    def predict_proba(self, inputs: Union[Sequence[str], Tensor]) -> Tensor:
        """Class probabilities (B, num_classes) of texts, or of images (B, H, W, C)."""
        device = next(self.parameters()).device
        if self.reads_text:
            if isinstance(inputs, str):
                inputs = [inputs]
            input_ids, pad_mask = self.encode_texts(inputs)
            logits = self(input_ids.to(device), pad_mask.to(device))
        else:
            logits = self(torch.as_tensor(inputs).to(device))
        return logits.float().softmax(dim=-1)


def pad_right(sequences: Sequence[Sequence[int]]) -> Tuple[Tensor, Tensor]:
    length = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), length), PAD_ID, dtype=torch.long)
    pad_mask = torch.ones(len(sequences), length, dtype=torch.bool)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        pad_mask[row, : len(ids)] = False
    return input_ids, pad_mask


def init_encoder_from(model: Classifier, path: Union[str, Path]) -> None:
    """Copy the token embedding, position embedding and encoder of the mlm model at ``path`` into ``model``.

    Position embeddings may be longer in the mlm model (its first max_seq_len rows are used); every other shape must
    match. Raises a one-line error for a model of another task, an image classifier, or different encoder sizes.
    """
    from perceiver.checkpoint import load_model

    if not model.reads_text:
        raise ConfigError("encoder_from needs a text classifier (token input); this classifier reads images")
    source = load_model(path, task="mlm")
    if not isinstance(source.input_adapter, TokenInputAdapter):
        raise ConfigError(f"the mlm model at {path} does not read tokens")
    _copy_state(source.input_adapter, model.input_adapter, path, "token adapter", optional=("output_bias",))
    _copy_state(source.encoder, model.encoder, path, "encoder")


def _copy_state(source: nn.Module, target: nn.Module, path, what: str, optional: Tuple[str, ...] = ()) -> None:
    src, own = source.state_dict(), target.state_dict()
    missing = sorted(k for k in own if k not in src)
    if missing:
        raise ConfigError(f"{what} of {path} lacks {', '.join(missing[:3])}: it was built with another adapter")
    new_state = {}
    for key, value in own.items():
        theirs = src[key]
        if theirs.shape == value.shape:
            new_state[key] = theirs
        elif key.endswith("position_embedding.weight") and theirs.shape[0] >= value.shape[0] \
                and theirs.shape[1:] == value.shape[1:]:
            new_state[key] = theirs[: value.shape[0]]
        else:
            raise ConfigError(
                f"{what} of {path} does not fit: {key} is {tuple(theirs.shape)} there, {tuple(value.shape)} here "
                "(use the mlm model's sizes)"
            )
    target.load_state_dict(new_state)


def batch_metrics(model: Classifier, batch) -> Dict[str, Tensor]:
    """Loss and accuracy of a batch ``(labels (B,), input_ids (B, N), pad_mask (B, N))`` (text) or
    ``(labels (B,), images (B, H, W, C))`` (images)."""
    labels, *inputs = batch
    logits = model(*inputs)
    loss = F.cross_entropy(logits.float(), labels)
    accuracy = (logits.argmax(dim=-1) == labels).float().mean()
    return {"loss": loss, "accuracy": accuracy, "count": torch.tensor(labels.numel(), device=labels.device)}


def freeze_encoder(model: Classifier) -> None:
    """Stop training the input adapter and the encoder (the classic fine-tuning recipe: train the decoder only)."""
    for module in (model.input_adapter, model.encoder):
        for parameter in module.parameters():
            parameter.requires_grad_(False)


def prepare_training(model: Classifier) -> None:
    """Before training (the task's ``prepare``): the encoder starts from ``encoder_from`` and stays fixed with
    ``freeze_encoder``."""
    if model.config.encoder_from:
        init_encoder_from(model, model.config.encoder_from)
    if model.config.freeze_encoder:
        freeze_encoder(model)


__all__ = [
    "Classifier", "ClassifierConfig", "batch_metrics", "freeze_encoder", "init_encoder_from", "prepare_training",
    "read_model_config",
]
