"""``perceiver train TASK --init-from SOURCE``: a run that starts from a loaded model's weights.

The source (anything :func:`perceiver.checkpoint.load_model` reads) decides the architecture: its config values are
the model options of the run, below only what the user gives explicitly (e.g. a dropout), and its input adapter is
the default. Its tokenizer becomes the data's tokenizer. Before anything is written, the planned model is built on
the meta device and its parameter shapes are compared with the source's, so an option that changes the architecture
is one line; the weights are loaded into the new model when training starts (:func:`load_initial_weights`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

from torch import nn

NOT_INHERITED = ("encoder_from", "freeze_encoder")
"""Config fields that say how the source was trained, not what it is: a run that starts from it does not repeat them
(a classifier fine-tuned from an mlm's encoder is itself the starting point)."""


class InitFromError(ValueError):
    """A source that cannot start this run, with the reason."""


@dataclass
class InitialModel:
    """What a run takes from its ``--init-from`` source."""

    source: str
    model_values: Dict[str, Any]
    """The source's config values (without ``adapter`` and ``adapter_options``)."""
    adapter: Optional[str]
    adapter_options: Dict[str, Any]
    tokenizer: Any
    """The source's tokenizer (:mod:`perceiver.tokenizers`); the byte tokenizer when it saved none."""
    shapes: Dict[str, tuple]
    """Parameter and buffer name -> shape of the source's weights."""


def read_initial_model(source: str, task: str) -> InitialModel:
    """Load ``source`` (it must be a model of ``task``) and keep what the plan needs; every misfit is a
    :class:`InitFromError`."""
    from perceiver.checkpoint import ModelLoadError, load_model
    from perceiver.tokenizers import TokenizerError, load_tokenizer

    try:
        model = load_model(source)
    except (ModelLoadError, ValueError) as error:
        raise InitFromError(f"--init-from: {error}") from None
    if model.task != task:
        raise InitFromError(
            f"--init-from {source} is a {model.task!r} model; `perceiver train {task}` starts from a {task!r} model "
            f"(use `perceiver train {model.task} --init-from {source}`)"
        )
    try:
        tokenizer = load_tokenizer(source)
    except TokenizerError as error:
        raise InitFromError(f"--init-from: {error}") from None
    values = asdict(model.config)
    adapter = values.pop("adapter", None)
    adapter_options = dict(values.pop("adapter_options", None) or {})
    for key in NOT_INHERITED:
        values.pop(key, None)
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    return InitialModel(source, values, adapter, adapter_options, tokenizer, shapes)


def check_weights_fit(initial: InitialModel, task: str, model_config: Any, given: Dict[str, Any]) -> None:
    """The model planned from ``model_config`` must have the source's parameters, shape for shape (built on the
    meta device: no memory, no initialisation work); ``given``: the model options the user gave, named when they
    do not fit."""
    import torch

    from perceiver import registry

    with torch.device("meta"):
        planned = registry.get("task", task).load()(model_config)
    shapes = {name: tuple(tensor.shape) for name, tensor in planned.state_dict().items()}
    missing = sorted(set(shapes) - set(initial.shapes))
    unexpected = sorted(set(initial.shapes) - set(shapes))
    changed = sorted(name for name in set(shapes) & set(initial.shapes) if shapes[name] != initial.shapes[name])
    if missing or unexpected or changed:
        name = (changed or missing or unexpected)[0]
        detail = (f"{name} is {list(initial.shapes[name])} there, {list(shapes[name])} here" if changed
                  else f"{name} is {'missing there' if missing else 'not in the planned model'}")
        changes = [f"{key}={value} (it has {initial.model_values[key]})" for key, value in given.items()
                   if key in initial.model_values and initial.model_values[key] != value]
        options = f"the options {', '.join(changes)} change" if changes else "the options given change"
        raise InitFromError(
            f"--init-from {initial.source}: {options} its architecture ({detail}); --init-from keeps the source's "
            "architecture, so give only options that do not change it"
        )


def load_initial_weights(model: nn.Module, source: str) -> None:
    """Copy the weights of ``source`` into ``model`` (same architecture, checked when the run was planned)."""
    from perceiver.checkpoint import load_model

    model.load_state_dict(load_model(source).state_dict())


def check_same_tokenizer(initial: InitialModel, data_tokenizer: Optional[str]) -> None:
    """The data must be tokenized as the source was trained: a ``--tokenizer`` of another vocabulary, or one given
    for a byte model, is refused."""
    from perceiver.tokenizers import is_bytes, open_tokenizer

    if not data_tokenizer:
        if not is_bytes(initial.tokenizer):
            raise InitFromError(f"--init-from {initial.source} has a subword tokenizer; the data set reads bytes")
        return
    if data_tokenizer == initial.source:
        return
    given = open_tokenizer(data_tokenizer)
    if is_bytes(initial.tokenizer) != is_bytes(given) or (
            not is_bytes(given) and given.fingerprint() != initial.tokenizer.fingerprint()):
        what = "reads bytes" if is_bytes(initial.tokenizer) else "has another tokenizer"
        raise InitFromError(f"--init-from {initial.source} {what}, not --tokenizer {data_tokenizer}: the model keeps "
                            "its tokenizer, so leave out --tokenizer")
