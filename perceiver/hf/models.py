"""Thin transformers ``PreTrainedModel`` wrappers around this project's models, for the Auto classes and pipelines.

Each wrapper holds the project's model as its submodule ``model`` and only translates inputs and outputs (``forward``
takes no ``labels``: the wrappers are for inference; ``return_dict`` is accepted, outputs are always objects):
transformers' ``attention_mask`` (1 = token) becomes the project's ``pad_mask`` (True = padding), logits come back
in transformers' output classes. ``from_pretrained`` loads with :func:`perceiver.checkpoint.load_model` (an export,
a krasserm directory, a training run, a Hub repo id) and ``save_pretrained`` writes an export
(:func:`perceiver.checkpoint.save_model`), so weights are never renamed or re-read by transformers' loader.

Text models read what the tokenizer saved beside them gives (for byte models
:class:`~perceiver.hf.tokenizer.PerceiverBytesTokenizer`, which adds no ``[CLS]``/``[SEP]``, as the project's commands
feed them).

Generation: :class:`PerceiverForCausalLM` is a ``GenerationMixin`` model whose ``forward`` computes the next-token
logits from the whole (windowed) sequence, in the layout ``perceiver generate`` uses: the last
``min(length, max_latents)`` positions are latents, the last ``max_seq_len`` tokens are read. transformers'
``generate`` then runs its own decoding strategies (greedy, sampling, beam search, logits processors, stopping
criteria) on these logits, recomputing every step (no key/value cache).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import (
    CausalLMOutput,
    ImageClassifierOutput,
    MaskedLMOutput,
    SequenceClassifierOutput,
)

from perceiver.data.tokenizer import PAD_ID
from perceiver.hf import configs
from perceiver.hf.configs import PerceiverTaskConfig

IGNORED_KWARGS = {
    "cache_dir", "force_download", "local_files_only", "token", "proxies", "trust_remote_code", "use_safetensors",
    "_from_auto", "_from_pipeline", "_commit_hash", "code_revision", "attn_implementation", "low_cpu_mem_usage",
    "adapter_kwargs",
}
"""``from_pretrained`` keywords that transformers' Auto classes and pipelines pass and that change nothing here (the
Hub cache and offline mode are the project's, :mod:`perceiver.hub`). Others are refused unless empty (e.g. the
``subfolder=""`` and ``adapter_kwargs={}`` the Auto classes pass)."""


class PerceiverPreTrainedModel(PreTrainedModel):
    """Base of the wrappers: a project model of task ``perceiver_task`` as ``self.model``."""

    config_class = PerceiverTaskConfig
    base_model_prefix = "model"
    perceiver_task = ""

    def __init__(self, config: PerceiverTaskConfig, model: Optional[nn.Module] = None):
        super().__init__(config)
        self.model = model if model is not None else build_model(config)
        self.check_model(self.model)

    @classmethod
    def check_model(cls, model: nn.Module) -> None:
        """Raise ``ValueError`` if ``model`` is not of the kind this wrapper translates for."""
        if getattr(model, "task", None) != cls.perceiver_task:
            raise ValueError(f"{cls.__name__} wraps {cls.perceiver_task!r} models, not {getattr(model, 'task', '?')!r}")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, Path], *model_args,
                        config: Optional[PerceiverTaskConfig] = None, dtype: Any = None, torch_dtype: Any = None,
                        device_map: Any = None, revision: Optional[str] = None, **kwargs):
        """The model ``perceiver.load_model(pretrained_model_name_or_path)`` loads, wrapped (in eval mode).

        :param dtype: ``"auto"``/None (as saved), a torch dtype or ``"float32"``, ``"bfloat16"``, ``"float16"``
        :param device_map: None or one device (``"cpu"``, ``"cuda:0"``)
        :param revision: a Hub revision (the same as ``org/name@revision``)
        """
        from perceiver import hub
        from perceiver.checkpoint import load_model

        unknown = sorted(key for key, value in kwargs.items()
                         if key not in IGNORED_KWARGS and value not in (None, "", {}))
        if model_args or unknown:
            raise TypeError(f"{cls.__name__}.from_pretrained does not take {', '.join(unknown) or 'positional args'}")
        source = str(pretrained_model_name_or_path)
        if revision not in (None, "main") and hub.is_repo_id(source) and "@" not in source:
            source = f"{source}@{revision}"
        dtype = dtype if dtype is not None else torch_dtype
        if isinstance(device_map, dict) or (device_map is not None and not isinstance(device_map, (str, torch.device))):
            raise ValueError(f"device_map must be one device for {cls.__name__}, got {device_map!r}")
        model = load_model(source, task=cls.perceiver_task, map_location=str(device_map or "cpu"),
                           dtype=None if dtype == "auto" else dtype)
        if config is None:
            config = config_of(source, model)
        return cls(config, model).eval()

    def save_pretrained(self, save_directory: Union[str, Path], overwrite: bool = False, **kwargs) -> None:
        """Write the wrapped model as an export of this project (:func:`perceiver.checkpoint.save_model`)."""
        from perceiver.checkpoint import save_model

        if kwargs:
            raise TypeError(f"save_pretrained does not take {', '.join(sorted(kwargs))}")
        save_model(self.model, save_directory, overwrite=overwrite)


def build_model(config: PerceiverTaskConfig) -> nn.Module:
    """A new (randomly initialised) project model from an export's config (``from_config``)."""
    from perceiver.checkpoint import FORMAT, _build

    if getattr(config, "format", None) != FORMAT:
        raise ValueError(f"a {config.model_type} model is built by from_pretrained (its weights must be converted)")
    return _build(config.task, config.config, Path(config.name_or_path or "config"))


def config_of(source: str, model: nn.Module) -> PerceiverTaskConfig:
    """The transformers config of a loaded model: its directory's ``config.json`` when that names a ``model_type``
    (an export or a krasserm directory), else (a ``.ckpt``, a LoRA run, an export older than ``model_type``) the
    config an export of it would have."""
    import json
    from dataclasses import asdict

    from transformers import AutoConfig

    from perceiver.checkpoint import CONFIG_FILE, FORMAT, model_type, resolve_model_path

    path = resolve_model_path(source)
    config_file = path / CONFIG_FILE
    if path.is_dir() and config_file.is_file() and "model_type" in json.loads(config_file.read_text()):
        return AutoConfig.from_pretrained(str(path))
    values = {"format": FORMAT, "task": model.task, "config": asdict(model.config)}
    return AutoConfig.for_model(model_type(model.task), **values)


# -------------------------------------------------------------------------------------------------------------
#  Text
# -------------------------------------------------------------------------------------------------------------


def pad_mask_of(input_ids: Tensor, attention_mask: Optional[Tensor]) -> Optional[Tensor]:
    """transformers' ``attention_mask`` (B, N), 1 at tokens, -> the project's ``pad_mask`` (B, N), True at padding."""
    return None if attention_mask is None else attention_mask == 0


class PerceiverForMaskedLM(PerceiverPreTrainedModel):
    """``forward(input_ids (B, N), attention_mask (B, N)) -> MaskedLMOutput(logits (B, N, V))``."""

    config_class = configs.PerceiverMaskedLMConfig
    perceiver_task = "mlm"

    def forward(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None, return_dict: bool = True
                ) -> MaskedLMOutput:
        return MaskedLMOutput(logits=self.model(input_ids, pad_mask_of(input_ids, attention_mask)))


class PerceiverForSequenceClassification(PerceiverPreTrainedModel):
    """``forward(input_ids (B, N), attention_mask (B, N)) -> SequenceClassifierOutput(logits (B, num_classes))``;
    like ``perceiver predict``, a text is cut to the model's ``max_seq_len`` tokens."""

    config_class = configs.PerceiverClassifierConfig
    perceiver_task = "clf"

    @classmethod
    def check_model(cls, model: nn.Module) -> None:
        super().check_model(model)
        if not model.reads_text:
            raise ValueError("this classifier reads images: load it with AutoModelForImageClassification")

    def forward(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None, return_dict: bool = True
                ) -> SequenceClassifierOutput:
        pad_mask = pad_mask_of(input_ids, attention_mask)
        limit = self.model.config.max_seq_len
        return SequenceClassifierOutput(
            logits=self.model(input_ids[:, :limit], None if pad_mask is None else pad_mask[:, :limit])
        )


class PerceiverForImageClassification(PerceiverPreTrainedModel):
    """``forward(pixel_values (B, C, H, W) in [0, 1]) -> ImageClassifierOutput(logits (B, num_classes))``; the
    model reads them channels-last and normalises them itself."""

    config_class = configs.PerceiverClassifierConfig
    perceiver_task = "clf"
    main_input_name = "pixel_values"

    @classmethod
    def check_model(cls, model: nn.Module) -> None:
        super().check_model(model)
        if model.reads_text:
            raise ValueError("this classifier reads text: load it with AutoModelForSequenceClassification")

    def forward(self, pixel_values: Tensor, return_dict: bool = True) -> ImageClassifierOutput:
        return ImageClassifierOutput(logits=self.model(pixel_values.permute(0, 2, 3, 1)))


# -------------------------------------------------------------------------------------------------------------
#  Generation
# -------------------------------------------------------------------------------------------------------------


class PerceiverForCausalLM(PerceiverPreTrainedModel, GenerationMixin):
    """``forward(input_ids (B, N), attention_mask (B, N), logits_to_keep) -> CausalLMOutput(logits (B, K, V))``:
    the logits of the last ``K = logits_to_keep`` positions (0 = every latent position, ``min(N, max_latents)``).
    A longer input than ``max_seq_len`` is read from its last ``max_seq_len`` tokens (the sliding window of
    ``perceiver generate``)."""

    config_class = configs.PerceiverCausalLMConfig
    perceiver_task = "clm"

    def __init__(self, config: PerceiverTaskConfig, model: Optional[nn.Module] = None):
        super().__init__(config, model)
        self.generation_config.use_cache = False  # every step recomputes from the tokens
        self.generation_config.pad_token_id = PAD_ID

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False

    def forward(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None, logits_to_keep: int = 0,
                return_dict: bool = True) -> CausalLMOutput:
        config = self.model.config
        window = min(input_ids.shape[1], config.max_seq_len)
        input_ids = input_ids[:, -window:]
        pad_mask = pad_mask_of(input_ids, None if attention_mask is None else attention_mask[:, -window:])
        num_latents = min(window, config.max_latents)
        logits = self.model(input_ids, window - num_latents, pad_mask, logits_to_keep=min(logits_to_keep, num_latents))
        return CausalLMOutput(logits=logits)

    def prepare_inputs_for_generation(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None,
                                      logits_to_keep: int = 0, **kwargs) -> dict:
        return {"input_ids": input_ids, "attention_mask": attention_mask, "logits_to_keep": logits_to_keep}


# -------------------------------------------------------------------------------------------------------------
#  krasserm's directories: the same wrappers (transformers pairs a model class with one config class)
# -------------------------------------------------------------------------------------------------------------


class KrassermForCausalLM(PerceiverForCausalLM):
    config_class = configs.KrassermCausalLMConfig


class KrassermForMaskedLM(PerceiverForMaskedLM):
    config_class = configs.KrassermMaskedLMConfig


class KrassermForSequenceClassification(PerceiverForSequenceClassification):
    config_class = configs.KrassermTextClassifierConfig


class KrassermForImageClassification(PerceiverForImageClassification):
    config_class = configs.KrassermImageClassifierConfig
