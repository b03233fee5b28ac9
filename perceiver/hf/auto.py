"""transformers' Auto classes and pipelines for this project's models: ``import perceiver.hf.auto`` registers them.

After the import, ``AutoConfig``, ``AutoModelForCausalLM``, ``AutoModelForMaskedLM``,
``AutoModelForSequenceClassification``, ``AutoModelForImageClassification`` and ``AutoImageProcessor`` read an export
of this project and a directory saved by krasserm's perceiver-io (their ``config.json``'s ``model_type``), and
``pipeline("text-generation" | "fill-mask" | "text-classification" | "image-classification", model=DIR)`` runs on
them. The models are the thin wrappers of :mod:`perceiver.hf.models`.

A pipeline also needs the model's tokenizer or image processor beside it: :func:`save_pipeline_files` writes them
(``perceiver export --pipeline-files`` writes an export with them).

Registration is not done by ``import perceiver``, which must not import transformers' model code (seconds); nor by
``import perceiver.hf``, which loading a krasserm directory imports.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Union

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from perceiver.hf import configs, models
from perceiver.hf.image_processor import PerceiverImageClassifierInputProcessor, PerceiverImageProcessor
from perceiver.hf.tokenizer import PerceiverBytesTokenizer

AUTO_MODELS = {
    AutoModelForCausalLM: (models.PerceiverForCausalLM, models.KrassermForCausalLM),
    AutoModelForMaskedLM: (models.PerceiverForMaskedLM, models.KrassermForMaskedLM),
    AutoModelForSequenceClassification: (
        models.PerceiverForSequenceClassification, models.KrassermForSequenceClassification,
    ),
    AutoModelForImageClassification: (models.PerceiverForImageClassification, models.KrassermForImageClassification),
}
"""Auto class -> the wrappers it loads (each with its ``config_class``)."""


def register() -> None:
    """Register the configs, wrappers, image processors and the byte tokenizer with transformers' Auto classes
    (again is harmless). A model directory without tokenizer files gets
    :class:`~perceiver.hf.tokenizer.PerceiverBytesTokenizer` from ``AutoTokenizer``; a ``tokenizer_config.json``
    (or krasserm's ``tokenizer_class``) says otherwise."""
    for config in configs.CONFIGS:
        AutoConfig.register(config.model_type, config, exist_ok=True)
        AutoTokenizer.register(config, tokenizer_class=PerceiverBytesTokenizer, exist_ok=True)
    for auto, wrappers in AUTO_MODELS.items():
        for wrapper in wrappers:
            auto.register(wrapper.config_class, wrapper, exist_ok=True)
    AutoImageProcessor.register(configs.PerceiverClassifierConfig, slow_image_processor_class=PerceiverImageProcessor,
                                exist_ok=True)
    AutoImageProcessor.register(configs.KrassermImageClassifierConfig,
                                slow_image_processor_class=PerceiverImageClassifierInputProcessor, exist_ok=True)


def save_pipeline_files(directory: Union[str, Path], model=None) -> List[str]:
    """Write beside the model in ``directory`` what transformers' pipelines read with it, unless it is there: the
    byte tokenizer (``PerceiverTokenizer``) for a text model without a saved tokenizer, the image processor
    (:class:`~perceiver.hf.image_processor.PerceiverImageProcessor`) for an image classifier. Returns the names of
    the files written. ``model``: the model in ``directory`` (loaded when not given).

    ``perceiver export --pipeline-files`` (``save_model(pipeline_files=True)``) writes an export with them."""
    from perceiver.checkpoint import load_model
    from perceiver.data.tokenizer import VOCAB_SIZE
    from perceiver.hf.image_processor import image_processor_for
    from perceiver.tokenizers import has_tokenizer, tokenizer_files

    directory = Path(directory)
    model = model if model is not None else load_model(directory)
    if getattr(model, "reads_text", True) is False:
        if (directory / "preprocessor_config.json").exists():
            return []
        image_processor_for(model).save_pretrained(str(directory))
        return ["preprocessor_config.json"]
    if has_tokenizer(directory):
        return []
    if model.config.vocab_size != VOCAB_SIZE:
        raise ValueError(f"{directory} holds a {model.config.vocab_size}-token model without its tokenizer; only byte "
                         f"models ({VOCAB_SIZE} tokens) read the byte tokenizer")
    from transformers import PerceiverTokenizer

    special = getattr(model.config, "special_tokens", False)
    tokenizer_class = PerceiverTokenizer if special else PerceiverBytesTokenizer
    before = set(tokenizer_files(directory))
    padding_side = "left" if model.task == "clm" else "right"  # as perceiver generate / predict pad a batch
    tokenizer = tokenizer_class(model_max_length=model.config.max_seq_len, padding_side=padding_side)
    tokenizer.save_pretrained(str(directory))
    return sorted(set(tokenizer_files(directory)) - before)


register()
