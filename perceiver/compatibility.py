"""Whether a task, an input adapter and a data set (or a command's input) fit together, from registry metadata:
a task's ``inputs`` and ``batches``, an adapter's ``input`` and ``modality``, a data set's ``modality`` and
``batch``.

``perceiver train`` checks the components it assembles; ``eval``, ``generate``, ``fill-mask`` and ``predict`` check
the trained model they load against the data set or the input they are given. No torch import.
"""

from __future__ import annotations

from typing import Any, Sequence

from perceiver import registry

BATCHES = {"windows": "windows of a sequence (next-token labels)", "labelled": "labelled examples"}
"""What the batch layouts named by data sets (``batch``) and tasks (``batches``) are."""


class MisfitError(ValueError):
    """Components, or a model and its input, that do not fit together."""


def check_fit(task_entry: registry.Entry, dataset_entry: registry.Entry, adapter_entry: registry.Entry,
              adapter_label: str = "adapter") -> None:
    """The adapter must produce an input the task accepts and read the data set's modality, and the data set's
    batches must be of a layout the task reads (when both say).

    :param adapter_label: how the adapter is named in the error ("adapter", "the model's adapter")
    """
    accepted = tuple(task_entry.metadata.get("inputs", ()))
    adapter_input = adapter_entry.metadata.get("input")
    if accepted and adapter_input not in accepted:
        raise MisfitError(
            f"task {task_entry.name!r} accepts {', '.join(accepted)} input, "
            f"but {adapter_label} {adapter_entry.name!r} produces {adapter_input or 'unknown'} input"
        )
    data_modality, adapter_modality = dataset_entry.metadata.get("modality"), adapter_entry.metadata.get("modality")
    if data_modality and adapter_modality and data_modality != adapter_modality:
        raise MisfitError(
            f"data set {dataset_entry.name!r} holds {data_modality} data, "
            f"but {adapter_label} {adapter_entry.name!r} reads {adapter_modality}"
        )
    batches, batch = tuple(task_entry.metadata.get("batches", ())), dataset_entry.metadata.get("batch")
    if batches and batch and batch not in batches:
        wanted = " or ".join(BATCHES.get(b, b) for b in batches)
        raise MisfitError(
            f"task {task_entry.name!r} cannot use data set {dataset_entry.name!r}: "
            f"it gives {BATCHES.get(batch, batch)}, the task reads {wanted}"
        )


def model_adapter(model: Any) -> registry.Entry:
    """The registry entry of the input adapter a loaded model was built with (``model.config.adapter``)."""
    return registry.get("adapter", model.config.adapter)


def check_model_fits_data(model: Any, dataset_entry: registry.Entry) -> None:
    """A trained model (``task`` and ``config.adapter``) must fit the data set it is evaluated on."""
    check_fit(registry.get("task", model.task), dataset_entry, model_adapter(model), "the model's adapter")


def check_model_reads(model: Any, modalities: Sequence[str], command: str) -> str:
    """The model's adapter must read one of ``modalities`` (what ``command`` can give it); returns its modality."""
    adapter = model_adapter(model)
    modality = adapter.metadata.get("modality")
    if modality not in modalities:
        raise MisfitError(
            f"{command} gives the model {' or '.join(modalities)} input, but its adapter {adapter.name!r} reads "
            f"{modality or 'an unknown modality'}"
        )
    return modality
