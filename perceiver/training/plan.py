"""From names and overrides to complete configs: what ``perceiver train <task> --data <dataset>`` will run.

Precedence, lowest first: config defaults < model preset (``--model``) < ``--config FILE.yaml`` < command-line
options < ``--set key=value``. Overrides whose value is None never replace anything.

YAML layout (every section optional)::

    task: clm
    data: {name: wikipedia-offline, batch_size: 16}
    model: {preset: clm-small, max_latents: 128}
    adapter: {name: text-bytes, rotary_fraction: 0.5}
    optimizer: {lr: 1.0e-3}
    trainer: {max_steps: 100, output_dir: runs/demo}

``--set`` keys are ``section.key`` or a bare ``key`` that exactly one section has.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from perceiver import registry
from perceiver.compatibility import check_fit
from perceiver.options import OptionError, field_types, parse_value
from perceiver.training.config import OptimizerConfig, TrainerConfig

SECTIONS = ("model", "adapter", "data", "optimizer", "trainer")
ADAPTER_SHARED = ("vocab_size", "max_seq_len", "num_channels", "num_heads")
"""Adapter config fields that the task sets from its own config."""


class PlanError(ValueError):
    """Components that do not fit together, or a config file that cannot be used."""


@dataclass
class TrainPlan:
    task: str
    dataset: str
    adapter: str
    model_config: Any
    data_config: Any
    optimizer_config: OptimizerConfig
    trainer_config: TrainerConfig
    resume: bool = False
    sources: Dict[str, str] = field(default_factory=dict)


def section_classes(task: str, dataset: str, adapter: str) -> Dict[str, Optional[type]]:
    return {
        "model": registry.get("task", task).config_class(),
        "adapter": registry.get("adapter", adapter).config_class(),
        "data": registry.get("dataset", dataset).config_class(),
        "optimizer": OptimizerConfig,
        "trainer": TrainerConfig,
    }


def load_yaml(path: str) -> Dict[str, Any]:
    import yaml

    file = Path(path)
    if not file.is_file():
        raise PlanError(f"config file {path!r} does not exist")
    try:
        content = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise PlanError(f"config file {path} is not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    if not isinstance(content, dict):
        raise PlanError(f"config file {path} must hold a mapping of sections, got {type(content).__name__}")
    unknown = sorted(set(content) - set(SECTIONS) - {"task"})
    if unknown:
        raise PlanError(
            f"config file {path}: unknown section(s) {', '.join(unknown)}; sections are task, {', '.join(SECTIONS)}"
        )
    return content


def _name_and_options(value: Any, section: str, path: str) -> Tuple[Optional[str], Dict[str, Any]]:
    if value is None:
        return None, {}
    if isinstance(value, str):
        return value, {}
    if not isinstance(value, dict):
        raise PlanError(f"config file {path}: section {section!r} must be a mapping")
    options = dict(value)
    return options.pop("name", None), options


def parse_sets(sets: List[str]) -> List[Tuple[Optional[str], str, str]]:
    parsed = []
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise OptionError(f"--set expects key=value, got {item!r}")
        key = key.strip()
        section, dot, name = key.partition(".")
        parsed.append((section, name, value) if dot else (None, key, value))
    return parsed


def _check_keys(section: str, config_class: Optional[type], values: Dict[str, Any], skip=()) -> Dict[str, Any]:
    if config_class is None:
        if values:
            raise OptionError(f"{section} takes no options, got {', '.join(sorted(values))}")
        return {}
    types = {k: v for k, v in field_types(config_class).items() if k not in skip}
    out = {}
    for key, value in values.items():
        if key not in types:
            close = difflib.get_close_matches(key, types, n=1)
            hint = f" (did you mean {section}.{close[0]}?)" if close else ""
            raise OptionError(f"unknown option {section}.{key}{hint}")
        out[key] = parse_value(f"{section}.{key}", value, types[key]) if value is not None else None
    return out


def plan_training(
    task: str,
    data: Optional[str] = None,
    adapter: Optional[str] = None,
    preset: Optional[str] = None,
    config_file: Optional[str] = None,
    options: Optional[Dict[str, Dict[str, Any]]] = None,
    sets: Optional[List[str]] = None,
    resume: bool = False,
) -> TrainPlan:
    """Resolve names and merge overrides into a :class:`TrainPlan`; every misfit is a one-line error."""
    task_entry = registry.get("task", task)
    layers: List[Dict[str, Dict[str, Any]]] = []  # lowest precedence first

    file_values: Dict[str, Any] = load_yaml(config_file) if config_file else {}
    if file_values.get("task") not in (None, task):
        raise PlanError(f"config file {config_file} is for task {file_values['task']!r}, not {task!r}")
    file_data, file_data_opts = _name_and_options(file_values.get("data"), "data", config_file)
    file_adapter, file_adapter_opts = _name_and_options(file_values.get("adapter"), "adapter", config_file)
    file_model = dict(file_values.get("model") or {})
    preset = preset or file_model.pop("preset", None)
    file_model.pop("preset", None)

    if preset:
        preset_entry = registry.get("model", preset)
        if preset_entry.metadata.get("task") != task:
            raise PlanError(f"model preset {preset!r} is for task {preset_entry.metadata.get('task')!r}, not {task!r}")
        layers.append({"model": dict(preset_entry.load())})
    layers.append(
        {
            "model": file_model,
            "adapter": file_adapter_opts,
            "data": file_data_opts,
            "optimizer": dict(file_values.get("optimizer") or {}),
            "trainer": dict(file_values.get("trainer") or {}),
        }
    )
    layers.append({section: dict(values) for section, values in (options or {}).items()})

    dataset = data or file_data
    if not dataset:
        raise PlanError("no data set given: use --data NAME (see `perceiver list datasets`)")
    dataset_entry = registry.get("dataset", dataset)
    set_adapters = [v for section, key, v in parse_sets(sets or []) if key == "adapter" and section in (None, "model")]
    candidates = (  # highest precedence first; the data set's adapter is only the default
        set_adapters[-1] if set_adapters else None, adapter, file_adapter, file_model.get("adapter"),
        layers[0]["model"].get("adapter") if preset else None, dataset_entry.metadata.get("adapter"),
    )
    adapter = next((name for name in candidates if name), None)
    if not adapter:
        raise PlanError(f"data set {dataset!r} names no default adapter: use --adapter NAME")
    adapter_entry = registry.get("adapter", adapter)
    check_fit(task_entry, dataset_entry, adapter_entry)

    classes = section_classes(task, dataset, adapter)
    sets_layer: Dict[str, Dict[str, Any]] = {s: {} for s in SECTIONS}
    for section, key, value in parse_sets(sets or []):
        if section is None:
            owners = [s for s in SECTIONS if classes[s] is not None and key in field_types(classes[s])]
            owners = [s for s in owners if not (s == "adapter" and key in ADAPTER_SHARED)]
            if not owners:
                every = {k for s in SECTIONS if classes[s] for k in field_types(classes[s])}
                close = difflib.get_close_matches(key, every, n=1)
                raise OptionError(f"unknown option {key!r}" + (f" (did you mean {close[0]}?)" if close else ""))
            if len(owners) > 1 and "model" not in owners:
                raise OptionError(
                    f"option {key!r} is ambiguous: write one of {', '.join(f'{o}.{key}' for o in owners)}"
                )
            section = "model" if "model" in owners else owners[0]
        if section not in SECTIONS:
            raise OptionError(f"unknown section {section!r} in --set; sections are {', '.join(SECTIONS)}")
        sets_layer[section][key] = value
    layers.append(sets_layer)

    merged: Dict[str, Dict[str, Any]] = {s: {} for s in SECTIONS}
    for layer in layers:
        for section, values in layer.items():
            skip = ADAPTER_SHARED if section == "adapter" else ()
            checked = _check_keys(section, classes[section], values, skip)
            merged[section].update({k: v for k, v in checked.items() if v is not None})

    model_values = dict(merged["model"])
    model_values["adapter"] = adapter
    adapter_options = dict(model_values.get("adapter_options") or {})
    adapter_options.update(merged["adapter"])
    model_values["adapter_options"] = adapter_options
    model_values = with_model_facts(model_values, classes["model"], dataset_entry, merged["data"])
    model_config = task_entry.build_config(**model_values)
    trainer_config = TrainerConfig(**merged["trainer"])
    optimizer_config = OptimizerConfig(**merged["optimizer"])

    data_values = dict(merged["data"])
    data_fields = field_types(classes["data"]) if classes["data"] else {}
    model_fields = {f.name: getattr(model_config, f.name) for f in dataclasses.fields(model_config)}
    for key in data_fields:  # the model decides shared sizes (e.g. max_seq_len); the trainer decides the seed
        if key in model_fields and key not in data_values:
            data_values[key] = model_fields[key]
    if "seed" in data_fields and "seed" not in data_values:
        data_values["seed"] = trainer_config.seed
    data_config = dataset_entry.build_config(**data_values)
    return TrainPlan(task, dataset, adapter, model_config, data_config, optimizer_config, trainer_config, resume)


def with_model_facts(model_values: Dict[str, Any], model_class: type, dataset_entry, data_values: Dict[str, Any]):
    """Fill model options the user did not set with facts decided elsewhere (data -> model).

    Two generic sources, both optional classmethods returning ``{model option: value}``:

    * the task's config class: ``model_facts(model_values)``, e.g. the encoder sizes of the model named by
      ``encoder_from``;
    * the data set's module class: ``model_facts(data_config)``, e.g. ``num_classes``, ``class_names`` and
      ``image_shape`` of a labelled data set.

    Only fields of the model config are filled, and only where the value is unset (None); dict values (e.g.
    ``adapter_options``) are merged under the user's entries.
    """
    fields = field_types(model_class)
    out = dict(model_values)

    def fill(facts: Dict[str, Any]) -> None:
        for key, value in (facts or {}).items():
            if key not in fields:
                continue
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = {**value, **out[key]}
            elif out.get(key) is None:
                out[key] = value

    config_facts = getattr(model_class, "model_facts", None)
    if callable(config_facts):
        fill(config_facts(out))
    try:
        data_module = dataset_entry.load()
    except registry.RegistryError:  # reported where the data module is built
        data_module = None
    data_facts = getattr(data_module, "model_facts", None)
    if callable(data_facts):
        data_fields = field_types(dataset_entry.config_class()) if dataset_entry.config else {}
        values = {k: v for k, v in data_values.items() if k in data_fields}
        values.update({k: v for k, v in model_values.items() if k in data_fields and k not in values and v is not None})
        fill(data_facts(dataset_entry.build_config(**values)))
    return out
