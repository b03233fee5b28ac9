"""Saving and loading trained models: ``config.json`` + ``model.safetensors`` in a directory.

``config.json`` holds ``{"format": "perceiver", "task": <task name>, "config": {...}}``; the task name is the
registry key that rebuilds the model. Its ``model_type`` (``perceiver-<task>``) is what transformers' ``AutoConfig``
dispatches on (:mod:`perceiver.hf.auto`). Lightning checkpoints (``.ckpt``) load too, with
``torch.load(weights_only=True)``. Nothing here unpickles arbitrary objects.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from perceiver import registry
from perceiver.config_fields import field_default, field_types, parse_value

FORMAT = "perceiver"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"


class ModelLoadError(ValueError):
    """A path that does not hold a model this project can load, with the reason."""


EXPORT_FILES = (CONFIG_FILE, WEIGHTS_FILE)
"""The files an export consists of; other files in an export directory are the user's and are kept."""
PIPELINE_FILES = ("preprocessor_config.json",)
"""Files beside an export for transformers' pipelines (besides tokenizer files), written with ``pipeline_files``."""


def model_type(task: str) -> str:
    """The ``model_type`` an export of ``task`` declares in its ``config.json`` (for transformers' Auto classes)."""
    return f"perceiver-{task}"


def is_export(directory: Union[str, Path]) -> bool:
    """True when ``directory`` holds a model exported by this project (its ``config.json`` says so)."""
    try:
        meta = json.loads((Path(directory) / CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def save_model(model: nn.Module, directory: Union[str, Path], task: str = None, overwrite: bool = False,
               tokenizer: Any = None, card: Optional[str] = None, pipeline_files: bool = False) -> Path:
    """Export ``model`` (which has ``config`` and ``task``) to ``directory`` as ``config.json`` +
    ``model.safetensors``, and the files of its ``tokenizer`` unless that reads bytes
    (:func:`perceiver.tokenizers.save_tokenizer`). ``pipeline_files``: also what transformers' pipelines read beside
    the model (the byte tokenizer's ``tokenizer_config.json``, an image classifier's ``preprocessor_config.json``;
    :func:`perceiver.hf.auto.save_pipeline_files`).

    ``card``: the text of a model card ``README.md`` (:func:`perceiver.model_card.model_card`). It is written unless
    ``directory`` holds a ``README.md`` this project did not write, which is kept as it is.

    The files are written into a new directory beside ``directory``, which then takes its place in one step: an
    interrupted export leaves the previous one intact. ``directory`` must be new or empty; replacing an earlier
    export needs ``overwrite=True``, and so does adding an export to a directory with other content. Files this
    project did not write are never replaced or deleted (:class:`perceiver.files.TargetError` says so).
    """
    from safetensors.torch import save_file

    from perceiver.files import follow_umask, replace_directory

    directory = Path(directory)
    task = task or model.task
    meta = {"format": FORMAT, "format_version": 1, "model_type": model_type(task), "task": task,
            "config": asdict(model.config)}
    state = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}

    def write(tmp: Path) -> None:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        follow_umask(tmp / WEIGHTS_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if tokenizer is not None:
            from perceiver.tokenizers import save_tokenizer

            save_tokenizer(tokenizer, tmp)
        if write_card:
            (tmp / CARD_FILE).write_text(card, encoding="utf-8")
        if pipeline_files:
            from perceiver.hf.auto import save_pipeline_files

            save_pipeline_files(tmp, model)

    own = export_files(directory)
    write_card = card is not None and (CARD_FILE in own or not (directory / CARD_FILE).exists())
    return replace_directory(directory, write, own=own, overwrite=overwrite)


def export_files(directory: Union[str, Path]) -> list:
    """The files of an earlier export in ``directory`` (none unless it is an export): its config, weights, tokenizer
    and pipeline files, and its model card if this project wrote it."""
    from perceiver.model_card import is_own_card
    from perceiver.tokenizers import TOKENIZER_FILES

    directory = Path(directory)
    if not is_export(directory):
        return []
    names = [name for name in EXPORT_FILES + TOKENIZER_FILES + PIPELINE_FILES if (directory / name).exists()]
    return names + [CARD_FILE] if is_own_card(directory / CARD_FILE) else names


def check_export_target(directory: Union[str, Path], overwrite: bool = False) -> None:
    """Raise :class:`perceiver.files.TargetError` now if :func:`save_model` would refuse ``directory``."""
    from perceiver.files import check_directory_target

    check_directory_target(directory, own=export_files(directory), overwrite=overwrite, writes=EXPORT_FILES)


def _read_json(path: Path) -> Dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"cannot read {path}: {error}") from error


def resolve_model_path(path: Union[str, Path]) -> Path:
    """Accept a model directory, a training output directory (``<dir>/model``), a ``.ckpt`` file, one of the files of
    an export (which stands for its directory) or a Hugging Face Hub repo id ``org/name[@revision]`` (downloaded into
    the Hub cache, see :mod:`perceiver.hub`)."""
    from perceiver import hub

    if hub.is_repo_id(path):
        return resolve_model_path(hub.download(str(path)))
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model path {str(path)!r} does not exist")
    if path.is_dir():
        adapter = "adapter_config.json"  # a LoRA run's export (perceiver.training.lora)
        if (path / CONFIG_FILE).exists() or (path / adapter).exists():
            return path
        if (path / "model" / CONFIG_FILE).exists() or (path / "model" / adapter).exists():
            return path / "model"
        last = path / "checkpoints" / "last.ckpt"
        if last.exists():
            return last
        raise ModelLoadError(f"{str(path)!r} holds no {CONFIG_FILE}, model/{CONFIG_FILE} or checkpoints/last.ckpt")
    if path.name in EXPORT_FILES and (path.parent / CONFIG_FILE).exists():
        return path.parent
    return path


def _typed_values(config_class: type, values: Dict[str, Any], where: str) -> Dict[str, Any]:
    """``values`` converted to the types of ``config_class``'s fields, as ``--set`` values are (unknown keys are
    left for the config to refuse)."""
    types = field_types(config_class)
    return {key: parse_value(f"{where}{key}", value, types[key]) if key in types else value
            for key, value in values.items()}


def _build(task: str, config_values: Any, source: Path, expected_task: str = None, empty: bool = False) -> nn.Module:
    """The task's model from saved config values, each checked against the type of its config field (and
    ``adapter_options`` against the adapter's config); every misfit is a :class:`ModelLoadError`. With ``empty`` its
    parameters are on the meta device, waiting for :func:`perceiver.empty_model.assign_weights`."""
    if expected_task is not None and task != expected_task:
        raise ModelLoadError(f"{source} is a {task!r} model, expected a {expected_task!r} model")
    if not isinstance(config_values, dict):
        raise ModelLoadError(f"{source}: the model config is a {type(config_values).__name__}, not a mapping")
    try:
        entry = registry.get("task", task)
        values = _typed_values(entry.config_class(), config_values, "")
        adapter_options = values.get("adapter_options")
        adapter_name = values.get("adapter") or field_default(entry.config_class(), "adapter")
        if isinstance(adapter_options, dict) and isinstance(adapter_name, str) and adapter_name:
            adapter_class = registry.get("adapter", adapter_name).config_class()
            if adapter_class is not None:
                values["adapter_options"] = _typed_values(adapter_class, adapter_options, "adapter_options.")
        config = entry.build_config(**values)
        model_class = entry.load()
        if not empty:
            return model_class(config)
        from perceiver.empty_model import parameters_on_meta

        with parameters_on_meta():
            return model_class(config)
    except registry.RegistryError as error:
        raise ModelLoadError(f"{source}: {error}") from error
    except (TypeError, ValueError) as error:
        raise ModelLoadError(f"{source}: config does not fit task {task!r}: {error}") from error


def non_finite(state: Dict[str, torch.Tensor]) -> List[str]:
    """Names of the floating-point tensors in ``state`` with a NaN or infinite element.

    A tensor's sum is finite unless an element is not (or the sum overflows), so the exact element-wise check runs
    only where the sum is not finite: a sum is far cheaper on CPU than ``isfinite(t).all()``, which allocates a
    boolean tensor.
    """
    return [
        key for key, value in state.items()
        if value.is_floating_point()
        and not torch.isfinite(value.sum(dtype=torch.float32))
        and not torch.isfinite(value).all()
    ]


def _load_state(model: nn.Module, state: Dict[str, torch.Tensor], source: Path) -> None:
    from perceiver.adapters.base import rename_legacy_keys

    rename_legacy_keys(state, getattr(model, "LEGACY_KEYS", {}))
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{key} {tuple(state[key].shape)} vs config {tuple(own[key].shape)}"
        for key in own
        if key in state and state[key].shape != own[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
    if mismatched:
        problems.append(f"shape mismatch {', '.join(mismatched[:3])}{' ...' if len(mismatched) > 3 else ''}")
    if problems:
        raise ModelLoadError(f"weights in {source} do not match its config: {'; '.join(problems)}")
    broken = non_finite(state)  # a NaN or infinite weight makes outputs NaN: say so now, not at the first sample
    if broken:
        names = f"{', '.join(broken[:3])}{' ...' if len(broken) > 3 else ''}"
        raise ModelLoadError(
            f"weights in {source} hold NaN or infinite values ({names}): the file is damaged or training diverged"
        )
    from perceiver.empty_model import assign_weights

    assign_weights(model, state)


TORCH_FILE_MAGIC = (b"PK\x03\x04", b"\x80")
"""How a file written by ``torch.save`` starts: a zip archive (the default format) or a pickle (the legacy one)."""


def _load_ckpt(path: Path) -> Tuple[str, Dict[str, Any], Dict[str, torch.Tensor]]:
    """(task, config values, model weights) of a Lightning checkpoint written by perceiver training."""
    try:
        with open(path, "rb") as file:
            head = file.read(4)
    except OSError as error:
        raise ModelLoadError(f"cannot read checkpoint {path}: {error.strerror or error}") from error
    if not head.startswith(TORCH_FILE_MAGIC):
        raise ModelLoadError(
            f"cannot read checkpoint {path}: not a torch file; a model is a directory with {CONFIG_FILE} and "
            f"{WEIGHTS_FILE}, a training output directory or a Lightning .ckpt file"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt, truncated, or a torch file with pickled objects
        lines = str(error).strip().splitlines()
        reason = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
        raise ModelLoadError(f"cannot read checkpoint {path}: {reason}") from error
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hparams, dict) or "config" not in hparams or not isinstance(checkpoint.get("state_dict"), dict):
        raise ModelLoadError(f"{path} is not a checkpoint written by perceiver training")
    task = checkpoint.get("perceiver_task") or hparams.get("task")
    if not isinstance(task, str) or not task:
        raise ModelLoadError(
            f"{path} does not name its task (no 'perceiver_task' entry): it was not written by perceiver training"
        )
    state = {k[len("model."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    state = {k.replace("_orig_mod.", ""): v for k, v in state.items()}
    return task, hparams["config"], state


def _load_krasserm(path: Path, meta: Dict[str, Any], task: str = None) -> nn.Module:
    from perceiver.hf.krasserm import krasserm_task, load_krasserm

    if task is not None and krasserm_task(meta) != task:
        raise ModelLoadError(f"{path} is a {krasserm_task(meta)!r} model (krasserm's), expected a {task!r} model")
    return load_krasserm(path, meta)


def load_model(source: Union[str, Path], task: str = None, map_location: str = None, dtype=None,
               device: str = None) -> nn.Module:
    """Load a model in eval mode from an export directory, a training output directory, a ``.ckpt`` file, a Hub repo
    id ``org/name[@revision]`` or a directory saved by krasserm's perceiver-io (see :mod:`perceiver.hf.krasserm`).

    The model is built without weights (:mod:`perceiver.empty_model`) and takes the tensors read from the file as its
    parameters, so that loading holds the weights once, not twice.

    :param task: if given, the model must be of this task (e.g. ``"clm"``)
    :param dtype: ``"float32"``, ``"bfloat16"``, ``"float16"`` (or the torch dtype): store the weights, and so the
        decoding cache, in it (:func:`perceiver.inference.cast`)
    :param device: where the weights go (``"cpu"``, the default, ``"cuda"``, ``"cuda:1"``, ...)
    :param map_location: the former name of ``device``
    """
    from perceiver.inference import cast

    if map_location is not None and device is not None and str(map_location) != str(device):
        raise ValueError(f"load_model: device={device!r} and map_location={map_location!r} differ; pass device only")
    device = device or map_location or "cpu"
    path = resolve_model_path(source)
    if path.is_dir() and not (path / CONFIG_FILE).exists():  # a LoRA run's adapter: merged into its base
        from perceiver.training.lora import load_lora

        return cast(load_lora(path, task).to(device).eval(), dtype, device)
    if path.is_dir():
        meta = _read_json(path / CONFIG_FILE)
        from perceiver.hf.krasserm import is_krasserm_config

        if is_krasserm_config(meta):  # a model saved by krasserm's perceiver-io
            return cast(_load_krasserm(path, meta, task).to(device).eval(), dtype, device)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or "task" not in meta or "config" not in meta:
            raise ModelLoadError(f"{path / CONFIG_FILE} is not a perceiver model config")
        model = _build(meta["task"], meta["config"], path, task, empty=True)
        weights = path / WEIGHTS_FILE
        if not weights.exists():
            raise ModelLoadError(f"{path} has no {WEIGHTS_FILE}")
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(weights), device=str(device))
        except (SafetensorError, OSError) as error:
            raise ModelLoadError(f"cannot read {weights}: corrupt or not a safetensors file ({error})") from error
    else:
        model_task, config_values, state = _load_ckpt(path)
        model = _build(model_task, config_values, path, task, empty=True)
    _load_state(model, state, path)
    del state
    return cast(model.to(device).eval(), dtype, device)
