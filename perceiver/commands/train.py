"""``perceiver train <task>``: one command per registered task, with options generated from its config dataclass
and from the optimizer and trainer configs. Anything else: ``--set section.key=value`` or ``--config FILE.yaml``.

``perceiver train --resume RUN`` (or ``--output-dir RUN --resume``) continues a run with its stored plan; the task
may be left out, :func:`with_resumed_task` reads it from the run."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import typer
from typing_extensions import Annotated

from perceiver.commands.helptext import WideOptionsCommand
from perceiver.config_fields import field_default, field_docs, field_types, type_name, unwrap_optional

SKIPPED_FIELDS = {"adapter", "adapter_options"}
"""Model config fields with their own options (--adapter, --set adapter.key=value)."""
HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}
PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}
"""A stand-in command takes every argument as it is, ``--help`` included, for the command it builds."""


def _fixed_parameters() -> List[inspect.Parameter]:
    def param(name: str, annotation: Any, default: Any = None) -> inspect.Parameter:
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)

    panel = "Components"
    return [
        param(
            "data",
            Annotated[
                Optional[str],
                typer.Option(
                    "--data",
                    "-d",
                    metavar="NAME",
                    help="Registered data set (see `perceiver list datasets`).",
                    rich_help_panel=panel,
                ),
            ],
        ),
        param(
            "adapter",
            Annotated[
                Optional[str],
                typer.Option(
                    "--adapter", metavar="NAME", help="Input adapter (default: the data set's).", rich_help_panel=panel
                ),
            ],
        ),
        param(
            "preset",
            Annotated[
                Optional[str],
                typer.Option(
                    "--model",
                    metavar="PRESET",
                    help="Model preset, e.g. clm-30m (see `perceiver list models`, `perceiver show model NAME`).",
                    rich_help_panel=panel,
                ),
            ],
        ),
        param(
            "config_file",
            Annotated[
                Optional[str],
                typer.Option(
                    "--config",
                    metavar="FILE",
                    help="YAML file with sections model, adapter, data, optimizer, trainer.",
                    rich_help_panel=panel,
                ),
            ],
        ),
        param(
            "sets",
            Annotated[
                List[str],
                typer.Option(
                    "--set",
                    metavar="KEY=VALUE",
                    help="Any option as \\[section.]key=value, e.g. adapter.rotary_fraction=0.25 (repeatable; "
                    "the keys: `perceiver show task|adapter|dataset NAME`).",
                    rich_help_panel=panel,
                ),
            ],
            default=[],
        ),
        param(
            "resume",
            Annotated[
                bool,
                typer.Option(
                    "--resume",
                    help="Continue the run in --output-dir (or write --resume RUN) from its last checkpoint, with its "
                    "stored task, model, data, optimizer and trainer settings; options given again may change "
                    "steps, validation, devices, precision and logging.",
                    rich_help_panel=panel,
                ),
            ],
            default=False,
        ),
        param(
            "allow_change",
            Annotated[
                List[str],
                typer.Option(
                    "--allow-change",
                    metavar="KEY",
                    help="With --resume: let the option KEY (section.key, e.g. optimizer.lr, or a whole section) "
                    "differ from the stored run (repeatable).",
                    rich_help_panel=panel,
                ),
            ],
            default=[],
        ),
        param(
            "data__data_path",
            Annotated[
                Optional[str],
                typer.Option(
                    "--data-path",
                    metavar="PATH",
                    help="File or directory for data sets that read files (data set text).",
                    rich_help_panel="Data",
                ),
            ],
        ),
        param(
            "data__tokenizer",
            Annotated[
                Optional[str],
                typer.Option(
                    "--tokenizer",
                    metavar="NAME_OR_PATH",
                    help="Subword tokenizer for the text (clm): a transformers tokenizer directory, a model that "
                    "saved one, or a Hub repo id (default: UTF-8 bytes).",
                    rich_help_panel="Data",
                ),
            ],
        ),
        param(
            "data__batch_size",
            Annotated[
                Optional[str],
                typer.Option("--batch-size", metavar="INT", help="Batch size per device.", rich_help_panel="Data"),
            ],
        ),
        param(
            "data__num_workers",
            Annotated[
                Optional[str],
                typer.Option(
                    "--num-workers", metavar="INT", help="Data loader worker processes.", rich_help_panel="Data"
                ),
            ],
        ),
    ]


FIXED_FLAGS = {
    "data": "--data", "adapter": "--adapter", "data__data_path": "--data-path", "data__batch_size": "--batch-size",
    "data__num_workers": "--num-workers", "data__tokenizer": "--tokenizer",
}
"""Parameter name -> flag of the fixed options that set a plan value (named in errors on resume)."""


def _flag(param: inspect.Parameter) -> str:
    return param.annotation.__metadata__[0].default.split("/")[0]  # typer.Option's first argument: "--flag[/--no-flag]"


def _generated_parameters(section: str, config_class: type, panel: str, taken: set) -> List[inspect.Parameter]:
    docs = field_docs(config_class)
    params = []
    for name, tp in field_types(config_class).items():
        inner, _ = unwrap_optional(tp)
        if name in SKIPPED_FIELDS or inner not in (int, float, str, bool):
            continue
        flag = "--" + name.replace("_", "-")
        if flag in taken:
            flag = f"--{section}-{name.replace('_', '-')}"
        taken.add(flag)
        default = field_default(config_class, name)
        help_text = f"{docs.get(name, '')} [dim]\\[default: {default}][/]".strip()
        if inner is bool:
            option = typer.Option(f"{flag}/--no-{flag[2:]}", help=help_text, rich_help_panel=panel)
            annotation = Annotated[Optional[bool], option]
        else:
            option = typer.Option(flag, metavar=type_name(tp).upper(), help=help_text, rich_help_panel=panel)
            annotation = Annotated[Optional[str], option]
        params.append(
            inspect.Parameter(f"{section}__{name}", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
        )
    return params


def make_train_command(task: str) -> Callable[..., None]:
    """A function whose signature lists every option of ``perceiver train <task>``."""
    from perceiver import registry
    from perceiver.training.config import OptimizerConfig, TrainerConfig

    entry = registry.get("task", task)
    fixed = _fixed_parameters()
    taken = {
        "--data", "--adapter", "--model", "--config", "--set",
        "--resume", "--allow-change", "--data-path", "--tokenizer", "--batch-size", "--num-workers",
    }
    generated = (
        _generated_parameters("model", entry.config_class(), f"Model ({task})", taken)
        + _generated_parameters("optimizer", OptimizerConfig, "Optimizer", taken)
        + _generated_parameters("trainer", TrainerConfig, "Trainer", taken)
    )

    params = fixed + generated
    flags = {p.name: _flag(p) for p in generated}
    flags.update(FIXED_FLAGS)

    def train(**kwargs: Any) -> None:
        options: Dict[str, Dict[str, Any]] = {}
        given = {k.replace("__", "."): flags[k] for k, value in kwargs.items() if k in flags and value is not None}
        for key in list(kwargs):
            if "__" in key:
                section, name = key.split("__", 1)
                value = kwargs.pop(key)
                if value is not None:
                    options.setdefault(section, {})[name] = value
        run_training(task, options=options, flags=given, **kwargs)

    train.__signature__ = inspect.Signature(params)
    train.__annotations__ = {p.name: p.annotation for p in params}
    train.__doc__ = (
        f"{entry.description}.\n\n"
        f"Example: [bold]perceiver train {task} --data NAME --max-steps 1000 --output-dir runs/{task}[/]"
    )
    return train


def with_resumed_task(argv: List[str]) -> List[str]:
    """Command-line arguments with the resumed run spelled out for the task's command:
    ``train [OPTIONS] --resume RUN`` -> ``train <task of RUN> [OPTIONS] --resume --output-dir RUN``, and
    ``train --output-dir RUN --resume`` -> ``train <task of RUN> --output-dir RUN --resume``."""
    command = next((i for i, arg in enumerate(argv) if not arg.startswith("-")), None)
    if command is None or argv[command] != "train":
        return argv
    head, rest = argv[: command + 1], argv[command + 1 :]
    if not any(arg == "--resume" or arg.startswith("--resume=") for arg in rest):
        return argv
    from perceiver.training.plan import PlanError, task_of_run

    out: List[str] = []
    run_dir = output_dir = None
    index = 0
    while index < len(rest):
        arg = rest[index]
        if arg.startswith("--resume="):
            run_dir = arg.split("=", 1)[1]
            arg = "--resume"
        elif arg == "--resume" and index + 1 < len(rest) and not rest[index + 1].startswith("-"):
            run_dir = rest[index + 1]
            index += 1
        elif arg == "--output-dir" and index + 1 < len(rest):
            output_dir = rest[index + 1]
        elif arg.startswith("--output-dir="):
            output_dir = arg.split("=", 1)[1]
        out.append(arg)
        index += 1
    if run_dir is not None:
        if output_dir is not None and Path(output_dir) != Path(run_dir):
            raise PlanError(f"--resume {run_dir} and --output-dir {output_dir} name different runs")
        if output_dir is None:
            out += ["--output-dir", run_dir]
    run_dir = run_dir or output_dir
    if (out and not out[0].startswith("-")) or any(arg in ("-h", "--help") for arg in out):
        return head + out  # the task is named (or help is asked for)
    if run_dir is None:
        raise PlanError("--resume without a task needs the run: perceiver train --resume RUN")
    task = task_of_run(run_dir)
    if task is None:
        raise PlanError(
            f"{run_dir} holds no stored run (run.yaml): name the task, e.g. perceiver train clm --resume {run_dir} ..."
        )
    return head + [task] + out


def _launched_as_rank_zero() -> bool:
    """False in the extra processes of a distributed run (started by Lightning, torchrun or SLURM)."""
    import os

    return all(int(os.environ.get(name, "0") or 0) == 0 for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def run_training(
    task: str,
    data: Optional[str] = None,
    adapter: Optional[str] = None,
    preset: Optional[str] = None,
    config_file: Optional[str] = None,
    sets: Optional[List[str]] = None,
    resume: bool = False,
    options: Optional[Dict[str, Dict[str, Any]]] = None,
    allow_change: Optional[List[str]] = None,
    flags: Optional[Dict[str, str]] = None,
) -> None:
    from rich.console import Console
    from rich.markup import escape

    from perceiver.training.plan import PlanError, plan_resume, plan_training

    # the other processes of a distributed run execute this command too; only rank 0 reports
    rank_zero = _launched_as_rank_zero()
    console = Console(stderr=True, highlight=False, soft_wrap=True, quiet=not rank_zero)
    sets = list(sets or [])
    if resume:
        run_dir = _run_dir(options, config_file)
        plan = plan_resume(run_dir, task, data, adapter, preset, config_file, options, sets, allow_change or [], flags)
    elif allow_change:
        raise PlanError("--allow-change only applies to a resumed run (--resume)")
    else:
        plan = plan_training(task, data, adapter, preset, config_file, options, sets)
    for note in plan.notes:
        console.print(f"[yellow]warning:[/] {escape(note)}")
    console.print(
        f"[bold]train {plan.task}[/] on [bold]{plan.dataset}[/] with adapter [bold]{plan.adapter}[/] "
        f"-> {plan.trainer_config.output_dir}"
    )
    if resume:
        changes = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in plan.changes.items())
        console.print(f"resuming {plan.trainer_config.output_dir} " + (f"with {escape(changes)}" if changes else
                                                                       "with its stored settings"))
    from perceiver.training.fit import fit
    from perceiver.training.rundir import RecordRun, removed_if_unstarted

    record = RecordRun(plan)
    with removed_if_unstarted(plan.trainer_config.output_dir, record, rank_zero):
        result = fit(plan, callbacks=[record])
    console.quiet = not result.get("is_global_zero", True)
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted(result["metrics"].items()) if k.startswith("val_"))
    console.print(f"[green]done[/] at step {result['step']}: {metrics or 'no validation run'}")
    console.print(f"model exported to [bold]{result['model_dir']}[/]")


def _run_dir(options: Optional[Dict[str, Dict[str, Any]]], config_file: Optional[str]) -> str:
    """The run that ``--resume`` continues: --output-dir, else the config file's, else the default."""
    given = (options or {}).get("trainer", {}).get("output_dir")
    if given:
        return str(given)
    if config_file:
        from perceiver.training.plan import load_yaml

        in_file = (load_yaml(config_file).get("trainer") or {}).get("output_dir")
        if in_file:
            return str(in_file)
    from perceiver.training.config import TrainerConfig

    return TrainerConfig.output_dir


def _summary_command(task: str, description: str) -> Callable[..., Any]:
    """Stands in for a task's command in ``perceiver train --help`` without importing the task's config class.

    ``register`` gives the task named on the command line its full command, so this one only runs if that
    detection missed it; it then builds the full command and runs it with the same arguments."""

    def summary(ctx: typer.Context) -> Any:
        app = typer.Typer(add_completion=False, rich_markup_mode="rich")
        app.command(task, cls=WideOptionsCommand, context_settings=HELP_OPTIONS)(make_train_command(task))
        command = typer.main.get_command(app)
        return command.main(args=list(ctx.args), prog_name=ctx.command_path, standalone_mode=False)

    summary.__doc__ = description
    return summary


def register(app: typer.Typer, build_tasks: bool = True, argv: Optional[List[str]] = None) -> None:
    """Add ``perceiver train <task>``; with ``argv``, only the task named in it gets its full command (the others
    are listed by description), so that one task's imports never slow down or break another's."""
    train_app = typer.Typer(
        help="Train a model: [bold]perceiver train <task> --data <dataset>[/] (tasks: `perceiver list tasks`); "
        "continue a run: [bold]perceiver train --resume <run dir>[/].",
        no_args_is_help=True,
        rich_markup_mode="rich",
    )

    @train_app.callback()
    def _group() -> None:
        """Train a model: perceiver train <task> --data <dataset>."""

    if build_tasks:
        from perceiver import registry

        named = [a for a in argv or [] if registry.contains("task", a)]
        for entry in registry.list("task"):
            if argv is None or entry.name in named:
                train_app.command(entry.name, help=None, no_args_is_help=False, cls=WideOptionsCommand)(
                    make_train_command(entry.name)
                )
            else:
                train_app.command(entry.name, context_settings=PASS_THROUGH)(
                    _summary_command(entry.name, entry.description)
                )
    app.add_typer(train_app, name="train", rich_help_panel="Train")
