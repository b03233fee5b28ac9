"""Help and inspection: ``train <task> --help`` at 80 columns, ``perceiver show``, documented config fields."""

from __future__ import annotations

import dataclasses

import pytest
import typer

from perceiver import registry
from perceiver.cli import create_app, main
from perceiver.config_fields import field_default, field_docs, field_types
from perceiver.training.plan import ADAPTER_SHARED

TASKS = [entry.name for entry in registry.list("task")]


@pytest.fixture
def run(capsys, monkeypatch):
    def run(*args: str, columns: int = 80):
        """Run the CLI in-process in a terminal ``columns`` wide; return (exit code, stdout, stderr)."""
        monkeypatch.setenv("COLUMNS", str(columns))
        monkeypatch.setenv("NO_COLOR", "1")
        try:
            main(list(args))
            code = 0
        except SystemExit as exit:
            code = exit.code or 0
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err

    return run


def train_command(task: str):
    group = typer.main.get_command(create_app(["train", task]))
    return group.commands["train"].commands[task]


def config_classes():
    from perceiver.training.config import OptimizerConfig, TrainerConfig

    classes = [registry.get("task", task).config_class() for task in TASKS] + [OptimizerConfig, TrainerConfig]
    for kind in ("dataset", "adapter"):
        classes += [entry.config_class() for entry in registry.list(kind) if entry.config is not None]
    return sorted(set(classes), key=lambda cls: cls.__qualname__)


@pytest.mark.parametrize("config_class", config_classes(), ids=lambda cls: cls.__name__)
def test_every_config_field_has_a_docstring(config_class):
    """The CLI's help and ``perceiver show`` are generated from these docstrings."""
    missing = sorted(set(field_types(config_class)) - set(field_docs(config_class)))
    assert not missing, f"{config_class.__name__}: fields without a docstring: {', '.join(missing)}"


@pytest.mark.parametrize("task", TASKS)
def test_train_help_at_80_columns_shows_every_option_whole_with_a_description(run, task):
    from perceiver.commands.helptext import option_label

    code, out, err = run("train", task, "--help", columns=80)
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "…" not in out and "<bool>" not in out
    options = [p for p in train_command(task).params if p.param_type_name == "option"]
    assert len(options) > 30
    text = " ".join(out.replace("│", " ").split())
    for param in options:
        assert param.help, f"{param.opts[0]} has no description"
        label = option_label(param)
        assert f"│ {label} " in out, f"{label!r} is not shown whole"
        assert " ".join(param.help.split("[dim]")[0].split()[:4]).replace("\\[", "[") in text
    # booleans are flags, with their negative form, and take no value
    assert "│ --[no-]compile " in out and "│ --resume " in out and "│ --[no-]activation-checkpointing " in out


def test_train_help_puts_descriptions_under_the_names_in_a_narrow_terminal(run):
    code, out, _ = run("train", "clm", "--help", columns=50)
    assert code == 0 and max(len(line) for line in out.splitlines()) <= 50
    assert "│ --cross-attention-widening-factor INT" in out and "…" not in out
    lines = out.splitlines()
    row = next(i for i, line in enumerate(lines) if "--max-latents INT" in line)
    assert lines[row + 1].startswith("│     Number of latent positions")


def test_flags_parse_without_a_value():
    from perceiver.training.plan import plan_training

    command = train_command("clm")
    ctx = command.make_context("clm", ["--compile", "--no-progress", "--activation-checkpointing"])
    assert ctx.params["trainer__compile"] is True and ctx.params["trainer__progress"] is False
    assert ctx.params["model__activation_checkpointing"] is True
    options = {"trainer": {"compile": True, "progress": False}}
    plan = plan_training("clm", "text", options=options, sets=["data.data_path=x"])
    assert plan.trainer_config.compile is True and plan.trainer_config.progress is False


def test_a_stand_in_train_command_runs_the_real_one():
    """``perceiver train --help`` lists the tasks through stand-ins; reached anyway, one runs the full command."""
    from typer.testing import CliRunner

    from perceiver.commands import train

    app = typer.Typer()

    @app.callback()
    def root() -> None:
        pass

    train.register(app, build_tasks=True, argv=["train"])  # no task named: every task gets a stand-in
    runner = CliRunner()
    result = runner.invoke(app, ["train", "clm", "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0 and "--max-latents INT" in result.output and "--lr FLOAT" in result.output
    result = runner.invoke(app, ["train", "clm", "--data", "text", "--max-latents", "abc"])
    assert result.exit_code != 0 and "expected int" in str(result.exception)


# ---------------------------------------------------------------------------------------------------------------
#  perceiver show
# ---------------------------------------------------------------------------------------------------------------


def test_show_model_gives_the_presets_values_over_the_task_defaults(run):
    code, out, err = run("show", "model", "clm-small", columns=120)
    assert code == 0, err
    preset = registry.get("model", "clm-small").load()
    config_class = registry.get("task", "clm").config_class()
    assert "model preset clm-small for task clm" in out
    for name in field_types(config_class):
        if name in preset:
            default = field_default(config_class, name)
            assert f"│ model.{name} = {preset[name]} " in out and f"(preset; default {default})" in out
        else:
            assert f"│ model.{name} " in out and f"= {field_default(config_class, name)}" in out
    assert "│ model.max_latents = 256 " in out and "│ model.vocab_size INT = 262 " in out


@pytest.mark.parametrize(
    "kind, name, section, shown, hidden",
    [
        ("dataset", "text", "data", "data.batch_size INT = 16", ()),
        ("adapter", "text-bytes", "adapter", "adapter.rotary_fraction FLOAT = 0.5", ADAPTER_SHARED),
        ("task", "clm", "model", "model.max_latents INT = 512", ()),
        ("task", "clf", "model", "model.num_classes INT OR NONE = None", ()),
    ],
)
def test_show_lists_the_set_keys_with_type_default_and_description(run, kind, name, section, shown, hidden):
    code, out, err = run("show", kind, name, columns=80)
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= 80 and "…" not in out
    assert f"│ {shown} " in out and f"--set {section}.KEY=VALUE" in out
    entry = registry.get(kind, name)
    docs = field_docs(entry.config_class())
    text = " ".join(out.replace("│", " ").split())
    for field in dataclasses.fields(entry.config_class()):
        if field.name in hidden:
            assert f"{section}.{field.name}" not in out  # set by the task, not a --set key
            continue
        assert f"│ {section}.{field.name} " in out
        assert " ".join(docs[field.name].split()[:4]) in text.replace("``", "")


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["show", "model", "clm-smal"], 1, "did you mean 'clm-small'"),
        (["show", "adapter", "nope"], 1, "unknown adapter 'nope'"),
        (["show", "widget", "x"], 2, "'widget' is not one of"),
    ],
)
def test_show_bad_names(run, args, code, message):
    got, _, err = run(*args)
    assert got == code and message in err


def test_show_an_adapter_without_options(run):
    code, out, _ = run("show", "adapter", "token-logits")
    assert code == 0 and "adapter token-logits has no options" in out
