"""transformers configs for this project's models, one per ``model_type`` that ``AutoConfig`` dispatches on.

An export of this project declares ``perceiver-<task>`` (:func:`perceiver.checkpoint.model_type`); a directory saved
by krasserm's perceiver-io declares one of krasserm's model types. A config holds every key of the ``config.json``
it was read from as an attribute (an export's ``format``, ``task`` and ``config``; krasserm's ``model_config``) and
names the project task it stands for (``perceiver_task``). The model itself is built by
:func:`perceiver.checkpoint.load_model`, which reads the same file.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from transformers import PreTrainedConfig

from perceiver.checkpoint import model_type


class PerceiverTaskConfig(PreTrainedConfig):
    """Base of the configs below: a ``config.json`` of a model :func:`perceiver.checkpoint.load_model` loads."""

    model_type = "perceiver-task"
    perceiver_task: str = ""
    """The project task (``clm``, ``mlm``, ``clf``) of the models of this config."""

    def __post_init__(self, **kwargs: Any):
        labels = class_labels(kwargs) if self.id2label is None else None
        if labels:
            self.id2label = dict(enumerate(labels))
            self.label2id = {label: index for index, label in enumerate(labels)}
        super().__post_init__(**kwargs)


def class_labels(values: Dict[str, Any]) -> Optional[List[str]]:
    """The class names of an export's classifier config (``class_names``, else ``"0"``, ``"1"``, ...), or None."""
    config = values.get("config")
    if not isinstance(config, dict):
        return None
    if config.get("class_names"):
        return [str(name) for name in config["class_names"]]
    if isinstance(config.get("num_classes"), int):
        return [str(i) for i in range(config["num_classes"])]
    return None


class PerceiverCausalLMConfig(PerceiverTaskConfig):
    model_type = model_type("clm")
    perceiver_task = "clm"


class PerceiverMaskedLMConfig(PerceiverTaskConfig):
    model_type = model_type("mlm")
    perceiver_task = "mlm"


class PerceiverClassifierConfig(PerceiverTaskConfig):
    model_type = model_type("clf")
    perceiver_task = "clf"


class KrassermCausalLMConfig(PerceiverTaskConfig):
    model_type = "perceiver-ar-causal-language-model"
    perceiver_task = "clm"


class KrassermMaskedLMConfig(PerceiverTaskConfig):
    model_type = "perceiver-io-masked-language-model"
    perceiver_task = "mlm"


class KrassermTextClassifierConfig(PerceiverTaskConfig):
    model_type = "perceiver-io-text-classifier"
    perceiver_task = "clf"


class KrassermImageClassifierConfig(PerceiverTaskConfig):
    model_type = "perceiver-io-image-classifier"
    perceiver_task = "clf"


CONFIGS = (
    PerceiverCausalLMConfig, PerceiverMaskedLMConfig, PerceiverClassifierConfig, KrassermCausalLMConfig,
    KrassermMaskedLMConfig, KrassermTextClassifierConfig, KrassermImageClassifierConfig,
)
"""Every config class, each registered with ``AutoConfig`` under its ``model_type``."""
