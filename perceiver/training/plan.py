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

A run stores its resolved plan in ``output_dir/run.yaml`` (the same layout, every value explicit) when training
starts. :func:`plan_resume` continues it: the stored values are the lowest layer, options given again may change only
what :func:`may_change_on_resume` allows (steps, validation cadence, devices, precision, logging, ...), and anything
else (model, data, optimizer, schedule) only when the user names it with ``--allow-change``.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from perceiver import registry
from perceiver.compatibility import check_fit
from perceiver.config_fields import OptionError, field_default, field_types, parse_value
from perceiver.tokenizers import is_bytes
from perceiver.training.config import OptimizerConfig, TrainerConfig
from perceiver.training.init_from import InitFromError, check_same_tokenizer, check_weights_fit, read_initial_model
from perceiver.training.lora import LoraError, check_lora

SECTIONS = ("model", "adapter", "data", "optimizer", "trainer")
ADAPTER_SHARED = ("vocab_size", "max_seq_len", "num_channels", "num_heads")
"""Adapter config fields that the task sets from its own config."""
SHARED_WITH_ADAPTER = ADAPTER_SHARED + ("image_shape",)
"""Model config fields whose values the task passes to its adapter under the same name."""


RUN_FILE = "run.yaml"
"""The resolved plan of a run, in ``output_dir``; also a valid ``--config`` file."""
MAY_CHANGE_ON_RESUME = ("model.activation_checkpointing", "data.num_workers", "data.cache_dir")
"""Options outside the trainer section that a resumed run may change: they change speed or memory, not results."""
FIXED_ON_RESUME = ("trainer.seed", "trainer.accumulate_grad_batches", "trainer.gradient_clip", "trainer.output_dir",
                   "trainer.init_from", "trainer.lora_r", "trainer.lora_alpha", "trainer.lora_targets")
"""Trainer options that a resumed run keeps: they change which data is read or how the optimizer steps."""


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
    changes: Dict[str, Tuple[Any, Any]] = field(default_factory=dict)
    """On resume: ``section.key`` -> (stored value, new value) of every option that differs from the stored run."""
    notes: List[str] = field(default_factory=list)
    """Warnings about the plan, one line each (e.g. a warm-up longer than the run)."""


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
    base: Optional[Dict[str, Any]] = None,
) -> TrainPlan:
    """Resolve names and merge overrides into a :class:`TrainPlan`; every misfit is a one-line error.

    ``base``: a stored run (:func:`run_record`), the lowest layer, below even the config defaults.
    """
    task_entry = registry.get("task", task)
    if "metrics" not in task_entry.metadata:
        raise PlanError(f"task {task!r} registers no metrics function (metadata 'metrics'): it cannot be trained")
    layers: List[Dict[str, Dict[str, Any]]] = []  # lowest precedence first
    base = base or {}
    base_data, base_data_opts = _name_and_options(base.get("data"), "data", RUN_FILE)
    base_adapter, base_adapter_opts = _name_and_options(base.get("adapter"), "adapter", RUN_FILE)
    if base:
        layers.append(
            {
                "model": dict(base.get("model") or {}),
                "adapter": base_adapter_opts,
                "data": base_data_opts,
                "optimizer": dict(base.get("optimizer") or {}),
                "trainer": dict(base.get("trainer") or {}),
            }
        )

    file_values: Dict[str, Any] = load_yaml(config_file) if config_file else {}
    if file_values.get("task") not in (None, task):
        raise PlanError(f"config file {config_file} is for task {file_values['task']!r}, not {task!r}")
    file_data, file_data_opts = _name_and_options(file_values.get("data"), "data", config_file)
    file_adapter, file_adapter_opts = _name_and_options(file_values.get("adapter"), "adapter", config_file)
    file_model = dict(file_values.get("model") or {})
    preset = preset or file_model.pop("preset", None)
    file_model.pop("preset", None)

    initial = _initial_model(task, options, sets, file_values, base) if not resume else None
    if initial is not None and preset:
        raise PlanError(f"--init-from {initial.source} keeps that model's architecture: leave out --model {preset}")
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

    dataset = data or file_data or base_data
    if not dataset:
        raise PlanError("no data set given: use --data NAME (see `perceiver list datasets`)")
    dataset_entry = registry.get("dataset", dataset)
    set_adapters = [v for section, key, v in parse_sets(sets or []) if key == "adapter" and section in (None, "model")]
    candidates = (  # highest precedence first; the data set's adapter is only the default
        set_adapters[-1] if set_adapters else None, adapter, file_adapter, file_model.get("adapter"),
        layers[1 if base else 0]["model"].get("adapter") if preset else None, base_adapter,
        initial.adapter if initial else None, dataset_entry.metadata.get("adapter"),
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
    given_data: Dict[str, Any] = {}  # data options the user gave (not the stored run's)
    for index, layer in enumerate(layers):
        for section, values in layer.items():
            skip = ADAPTER_SHARED if section == "adapter" else ()
            checked = _check_keys(section, classes[section], values, skip)
            stored = base and index == 0  # a stored None is a value (e.g. no gradient clipping), not "unset"
            merged[section].update({k: v for k, v in checked.items() if v is not None or stored})
            if section == "data" and not stored:
                given_data.update({k: v for k, v in checked.items() if v is not None})
    _check_data_options(dataset_entry, given_data)

    model_values = {k: v for k, v in merged["model"].items() if v is not None}
    if initial is not None:  # the source's architecture, below what the user gives explicitly
        model_values = {**initial.model_values, **model_values}
    model_values["adapter"] = adapter
    adapter_options = dict(initial.adapter_options if initial and adapter == initial.adapter else {})
    adapter_options.update(model_values.get("adapter_options") or {})
    adapter_options.update(merged["adapter"])
    model_values["adapter_options"] = adapter_options
    model_values = with_model_facts(model_values, classes["model"], dataset_entry, merged["data"])
    model_config = _configured("model", classes["model"], lambda: task_entry.build_config(**model_values))
    _check_adapter_options(adapter_entry, classes["adapter"], model_config)
    if initial is not None:
        given = {k: v for k, v in merged["model"].items() if v is not None}
        _planned(lambda: check_weights_fit(initial, task, model_config, given))
    trainer_config = _configured("trainer", TrainerConfig, lambda: TrainerConfig(**merged["trainer"]))
    optimizer_config = _configured("optimizer", OptimizerConfig, lambda: OptimizerConfig(**merged["optimizer"]))
    if trainer_config.lora_r:
        _planned(lambda: check_lora(task, model_config, trainer_config))
    _check_logger(trainer_config)

    data_values = {k: v for k, v in merged["data"].items() if v is not None}
    data_fields = field_types(classes["data"]) if classes["data"] else {}
    model_fields = {f.name: getattr(model_config, f.name) for f in dataclasses.fields(model_config)}
    for key in data_fields:  # the model decides shared sizes (e.g. max_seq_len); the trainer decides the seed
        if key in model_fields and key not in data_values:
            data_values[key] = model_fields[key]
    if "seed" in data_fields and "seed" not in data_values:
        data_values["seed"] = trainer_config.seed
    if initial is not None and not is_bytes(initial.tokenizer):  # the source's tokenizer reads the data
        if "tokenizer" not in data_fields:
            raise PlanError(f"--init-from {initial.source} has a subword tokenizer, but data set {dataset!r} reads "
                            "bytes only")
        data_values.setdefault("tokenizer", initial.source)
    data_config = _configured("data", classes["data"], lambda: dataset_entry.build_config(**data_values))
    if initial is not None:
        _planned(lambda: check_same_tokenizer(initial, getattr(data_config, "tokenizer", None)))
    if getattr(data_config, "tokenizer", None) and not task_entry.metadata.get("subword_tokens"):
        raise PlanError(f"task {task!r} reads bytes: --tokenizer (data.tokenizer) is for tasks that read subword "
                        "tokens (clm)")
    _check_vocab_size(dataset_entry, model_config, data_config)
    plan = TrainPlan(task, dataset, adapter, model_config, data_config, optimizer_config, trainer_config, resume)
    if optimizer_config.warmup_steps >= trainer_config.max_steps:
        plan.notes.append(
            f"--warmup-steps {optimizer_config.warmup_steps} >= --max-steps {trainer_config.max_steps}: "
            "the learning rate never leaves warm-up"
        )
    return plan


def _initial_model(task: str, options, sets, file_values: Dict[str, Any], base: Dict[str, Any]):
    """The ``--init-from`` source of the run (``trainer.init_from`` from any layer), read; None without one."""
    candidates = [value for section, key, value in parse_sets(sets or [])
                  if key == "init_from" and section in (None, "trainer")]
    candidates += [(options or {}).get("trainer", {}).get("init_from"),
                   (file_values.get("trainer") or {}).get("init_from"), (base.get("trainer") or {}).get("init_from")]
    source = next((value for value in candidates if value), None)
    return _planned(lambda: read_initial_model(str(source), task)) if source else None


def _planned(step: Callable[[], Any]) -> Any:
    """``step()``, an :class:`~perceiver.training.init_from.InitFromError` told as a plan error."""
    try:
        return step()
    except (InitFromError, LoraError) as error:
        raise PlanError(str(error)) from None


def _configured(section: str, config_class: Optional[type], build: Callable[[], Any]) -> Any:
    """``build()``, with a config's own range error told as ``section.option must be ...``."""
    try:
        return build()
    except (PlanError, OptionError, registry.RegistryError):
        raise
    except ValueError as error:
        message = str(error)
        first = message.split(" ", 1)[0]
        if config_class is not None and first in field_types(config_class):
            message = f"{section}.{message}"
        raise PlanError(message) from None


def _check_data_options(dataset_entry, given: Dict[str, Any]) -> None:
    """Refuse options of a shared data config that the chosen data set does not read (``unused_options``), unless
    given at their default (as in a stored ``run.yaml`` used as ``--config``)."""
    try:
        module = dataset_entry.load()
    except registry.RegistryError:  # reported where the data module is built
        return
    config_class = dataset_entry.config_class() if dataset_entry.config else None
    for key in getattr(module, "unused_options", ()):
        if key in given and (config_class is None or given[key] != field_default(config_class, key)):
            flag = DATA_FLAGS.get(key, f"--set data.{key}")
            raise PlanError(f"data set {dataset_entry.name!r} does not take {flag} (data.{key}); leave it out")


DATA_FLAGS = {"data_path": "--data-path", "batch_size": "--batch-size", "num_workers": "--num-workers"}
"""Data options that have a flag of their own in ``perceiver train``."""


def _check_adapter_options(adapter_entry, adapter_class: Optional[type], model_config: Any) -> None:
    """Build the adapter config from the user's adapter options and the sizes the model shares with it, so that an
    option out of range is a planning error, not a failure inside the model."""
    options = dict(getattr(model_config, "adapter_options", None) or {})
    if adapter_class is None or not options:
        return
    fields = field_types(adapter_class)
    shared = {f.name: getattr(model_config, f.name) for f in dataclasses.fields(model_config)}
    values = {k: v for k, v in shared.items() if k in fields and k in SHARED_WITH_ADAPTER and v is not None}
    values.update(options)
    try:
        _configured("adapter", adapter_class, lambda: adapter_entry.build_config(**values))
    except TypeError:  # a field the task sets from elsewhere: checked when the model is built
        pass


def _check_vocab_size(dataset_entry, model_config: Any, data_config: Any = None) -> None:
    """A token data set's ids must fit the model's vocabulary: ``vocab_size`` of the data module's
    ``model_facts(data_config)`` (e.g. its tokenizer's), else of the data module class, if it has one."""
    try:
        module = dataset_entry.load()
    except registry.RegistryError:
        return
    needed = getattr(module, "vocab_size", None)
    facts = getattr(module, "model_facts", None)
    if callable(facts) and data_config is not None:
        needed = facts(data_config).get("vocab_size", needed)
    have = getattr(model_config, "vocab_size", None)
    if isinstance(needed, int) and isinstance(have, int) and have < needed:
        raise PlanError(
            f"model.vocab_size must be >= {needed}, the token ids of data set {dataset_entry.name!r}; got {have}"
        )


def _check_logger(trainer_config: TrainerConfig) -> None:
    if trainer_config.logger == "tensorboard" and not any(
        importlib.util.find_spec(name) for name in ("tensorboard", "tensorboardX")
    ):
        raise PlanError("--logger tensorboard needs TensorBoard: pip install 'perceiver[tensorboard]'")


# -------------------------------------------------------------------------------------------------------------------
#  The stored run and resuming it
# -------------------------------------------------------------------------------------------------------------------


def run_record(plan: TrainPlan) -> Dict[str, Any]:
    """The plan as ``--config`` sections with every value explicit (JSON types only)."""
    model = dataclasses.asdict(plan.model_config)
    adapter_options = model.pop("adapter_options", None) or {}
    model.pop("adapter", None)
    data = dataclasses.asdict(plan.data_config) if plan.data_config is not None else {}
    record = {
        "task": plan.task,
        "data": {"name": plan.dataset, **data},
        "adapter": {"name": plan.adapter, **adapter_options},
        "model": model,
        "optimizer": dataclasses.asdict(plan.optimizer_config),
        "trainer": dataclasses.asdict(plan.trainer_config),
    }
    return json.loads(json.dumps(record, default=str))


def write_run_file(plan: TrainPlan) -> Path:
    """Write ``output_dir/run.yaml`` atomically (a temporary file renamed into place)."""
    import yaml

    from perceiver.files import atomic_write_file

    text = (
        "# The resolved plan of this run, written when training starts.\n"
        "# `perceiver train --resume RUN` continues it; `--config` reads it as a config file.\n"
        + yaml.safe_dump(run_record(plan), sort_keys=False)
    )
    return atomic_write_file(Path(plan.trainer_config.output_dir) / RUN_FILE, lambda tmp: tmp.write_text(text))


def read_run_file(run_dir: str) -> Optional[Dict[str, Any]]:
    """The stored plan of the run in ``run_dir``, or None if it has none."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return None
    record = load_yaml(str(path))
    if not record.get("task"):
        raise PlanError(f"{path} names no task")
    return record


def task_of_run(run_dir: str) -> Optional[str]:
    record = read_run_file(run_dir)
    return record["task"] if record else None


def may_change_on_resume(key: str) -> bool:
    """Whether option ``section.key`` may change when a run is resumed, without ``--allow-change``."""
    return key in MAY_CHANGE_ON_RESUME or (key.startswith("trainer.") and key not in FIXED_ON_RESUME)


def plan_resume(
    run_dir: str,
    task: Optional[str] = None,
    data: Optional[str] = None,
    adapter: Optional[str] = None,
    preset: Optional[str] = None,
    config_file: Optional[str] = None,
    options: Optional[Dict[str, Dict[str, Any]]] = None,
    sets: Optional[List[str]] = None,
    allow_changes: Iterable[str] = (),
    flags: Optional[Dict[str, str]] = None,
) -> TrainPlan:
    """The plan that continues the run in ``run_dir``: its stored plan with the options given again on top.

    Options that :func:`may_change_on_resume` allows, or that ``allow_changes`` names (``section.key`` or a whole
    section), are taken and listed in ``plan.changes``; any other difference is a one-line error naming the option
    (``flags``: ``section.key`` -> the command-line flag the user gave for it).
    """
    options = {section: dict(values) for section, values in (options or {}).items()}
    options.setdefault("trainer", {})["output_dir"] = str(run_dir)
    stored = read_run_file(run_dir)
    if stored is None:  # a run of an older perceiver: the options must be given again; the model config is checked
        if not (Path(run_dir) / "checkpoints" / "last.ckpt").exists():
            raise PlanError(f"nothing to resume: {run_dir} holds no run ({RUN_FILE} and checkpoints/last.ckpt)")
        if not task:
            raise PlanError(
                f"{run_dir} holds no {RUN_FILE} (a run of an older perceiver): name the task and give its options "
                f"again, e.g. perceiver train clm --output-dir {run_dir} --resume ..."
            )
        if list(allow_changes):
            raise PlanError(f"--allow-change needs the stored plan of the run, and {run_dir} holds no {RUN_FILE}")
        return plan_training(task, data, adapter, preset, config_file, options, sets, resume=True)
    if task and task != stored["task"]:
        raise PlanError(f"{run_dir} is a {stored['task']!r} run, not {task!r}: resume it with perceiver train "
                        f"{stored['task']} --resume {run_dir} (or perceiver train --resume {run_dir})")
    plan = plan_training(stored["task"], data, adapter, preset, config_file, options, sets, resume=True, base=stored)
    allowed = _allowed_changes(allow_changes, plan)
    before, after = _flatten(stored), _flatten(run_record(plan))
    for key, new in after.items():
        if key not in before or before[key] == new or key == "trainer.output_dir":
            continue
        section = key.split(".", 1)[0]
        if not (may_change_on_resume(key) or key in allowed or section in allowed):
            given = (flags or {}).get(key, key)
            raise PlanError(
                f"cannot resume {run_dir} with {given}: it changes {key} from {before[key]!r} to {new!r} "
                f"(a resumed run keeps its model, data, optimizer and schedule; --allow-change {key} lets it change)"
            )
        plan.changes[key] = (before[key], new)
    return plan


def changed_model_fields(plan: TrainPlan) -> set:
    """Fields of the model config that ``plan.changes`` changes (the adapter's options are ``adapter_options``)."""
    fields = set()
    for key in plan.changes:
        section, _, name = key.partition(".")
        if section == "model":
            fields.add(name)
        elif section == "adapter":
            fields.add("adapter_options" if name else "adapter")
    return fields


def _flatten(record: Dict[str, Any]) -> Dict[str, Any]:
    """``{"data": name, "data.batch_size": 16, "adapter": name, "model.max_latents": 512, ...}``."""
    flat: Dict[str, Any] = {}
    for section in ("data", "adapter") + tuple(s for s in SECTIONS if s not in ("data", "adapter")):
        values = dict(record.get(section) or {})
        if section in ("data", "adapter"):
            flat[section] = values.pop("name", None)
        flat.update({f"{section}.{key}": value for key, value in values.items()})
    return flat


def _allowed_changes(keys: Iterable[str], plan: TrainPlan) -> set:
    """Check the keys of ``--allow-change``: a section, or ``section.key`` of an option the run has."""
    known = set(_flatten(run_record(plan)))
    classes = section_classes(plan.task, plan.dataset, plan.adapter)
    known |= {f"adapter.{key}" for key in (field_types(classes["adapter"]) if classes["adapter"] else {})}
    out = set()
    for key in keys:
        if key not in known and key not in SECTIONS:
            close = difflib.get_close_matches(key, sorted(known | set(SECTIONS)), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise OptionError(f"--allow-change {key}: no such option{hint}; write section.key, e.g. optimizer.lr")
        out.add(key)
    return out


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
        try:
            data_config = dataset_entry.build_config(**values)
        except (TypeError, ValueError):  # reported, naming the option, where the data config is built
            return out
        fill(data_facts(data_config))
    return out
