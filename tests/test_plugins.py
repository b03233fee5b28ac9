"""Plugins: every hook exercised by a throwaway plugin, broken plugins isolated, loading gated and lazy.

Throwaway plugins are registered in-process (``add_plugin`` fixture) or served as fake entry points of the group
``perceiver`` (``entry_points`` fixture), so nothing is installed.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import List, Optional

import pytest
import typer
from cli_runner import cli

from perceiver import hookimpl, hookspecs, plugins, registry
from perceiver.plugins import PluginWarning

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "perceiver_spec"))


# ---------------------------------------------------------------------------------------------------------------
#  Meta-tests: every hook has a test and a section in the docs (as datasette does)
# ---------------------------------------------------------------------------------------------------------------


def test_hookspecs_are_the_plugin_managers_hooks():
    hooks = vars(plugins.pm.hook).items()
    specified = [name for name, caller in hooks if not name.startswith("_") and caller.has_spec()]
    assert HOOKS == sorted(specified)
    assert HOOKS == ["register_adapters", "register_commands", "register_datasets", "register_models", "register_tasks"]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    assert f"test_hook_{hook}" in globals(), f"hook {hook} needs a test called test_hook_{hook} in this file"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook):
    docs = (ROOT / "docs" / "plugins.md").read_text()
    assert f"### `{hook}(" in docs, f"hook {hook} needs a '### `{hook}(...)`' section in docs/plugins.md"


def test_plugins_and_registry_import_each_other_in_one_direction_only():
    """The registry loads plugins; the plugin loader is handed the registry and never imports it."""
    import subprocess

    code = "import sys, perceiver.plugins; assert 'perceiver.registry' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    import ast

    tree = ast.parse((ROOT / "perceiver" / "plugins.py").read_text())
    type_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                 and getattr(block.test, "id", "") == "TYPE_CHECKING" for node in ast.walk(block)}
    imported = set()  # every module imported at run time, at the top or inside a function
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and id(node) not in type_only:
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and id(node) not in type_only:
            imported |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    assert "perceiver.hookspecs" in imported and "perceiver.registry" not in imported


def test_builtins_register_through_the_same_hooks():
    registry.list("task")
    builtin = plugins.list_plugins()[0]
    assert (builtin.name, builtin.package) == ("perceiver", "perceiver")
    assert builtin.hooks == ["register_adapters", "register_datasets", "register_models", "register_tasks"]
    assert plugins.pm.get_plugin("perceiver") is sys.modules["perceiver.builtins"]


# ---------------------------------------------------------------------------------------------------------------
#  One test per hook: a throwaway plugin registered in-process
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ToyAdapterConfig:
    vocab_size: int = 262
    max_seq_len: int = 64
    num_channels: int = 16
    num_heads: int = 2
    scale: float = 1.0
    """Multiplies the embeddings."""


def build_toy_adapter(config: ToyAdapterConfig):
    import torch
    from torch import nn

    from perceiver.adapters.base import TokenInputAdapter

    class ToyAdapter(TokenInputAdapter):
        def __init__(self):
            super().__init__()
            self.vocab_size = config.vocab_size
            self.num_input_channels = config.num_channels
            self.embedding = nn.Embedding(config.vocab_size, config.num_channels)
            self.position = nn.Embedding(config.max_seq_len, config.num_channels)

        def embed(self, input_ids, positions):
            return (self.embedding(input_ids) + self.position(positions)) * config.scale

        def logits(self, hidden):
            return hidden @ self.embedding.weight.T

    torch.manual_seed(0)
    return ToyAdapter()


class AdapterPlugin:
    @hookimpl
    def register_adapters(self, register):
        register("toy-tokens", build_toy_adapter, config=ToyAdapterConfig, description="toy token adapter",
                 modality="text", input="tokens")


def test_hook_register_adapters(add_plugin, capsys, cli_width):
    import torch

    from perceiver.training.plan import plan_training

    add_plugin(AdapterPlugin(), package="perceiver-toy-adapters")
    entry = registry.get("adapter", "toy-tokens")
    assert (entry.package, entry.metadata) == ("perceiver-toy-adapters", {"modality": "text", "input": "tokens"})
    model = registry.create("task", "clm", max_seq_len=16, max_latents=4, num_channels=16, num_heads=2,
                            num_self_attention_layers=1, adapter="toy-tokens", adapter_options={"scale": 0.5})
    assert model.input_adapter.num_input_channels == 16
    assert model(torch.randint(6, 262, (2, 16)), prefix_len=12).shape == (2, 4, 262)

    plan = plan_training("clm", "text", adapter="toy-tokens", sets=["adapter.scale=2"])
    assert plan.model_config.adapter == "toy-tokens" and plan.model_config.adapter_options == {"scale": 2.0}
    code, out, _ = cli(capsys, "list", "adapters")
    assert code == 0 and "toy-tokens" in out and "perceiver-toy-adapters" in out


@dataclass
class ToyTaskConfig:
    hidden: int = 8
    """Width of the toy model's only layer."""
    fancy: bool = False


class TaskPlugin:
    @hookimpl
    def register_tasks(self, register):
        register("toy-task", "torch.nn:Identity", config=ToyTaskConfig, description="A toy task",
                 metrics="torch.nn.functional:mse_loss", inputs=("tokens",))


def test_hook_register_tasks(add_plugin, capsys, cli_width):
    add_plugin(TaskPlugin(), package="perceiver-toy-tasks")
    assert registry.get("task", "toy-task").config_class() is ToyTaskConfig
    code, out, _ = cli(capsys, "list", "tasks")
    assert code == 0 and "toy-task" in out and "perceiver-toy-tasks" in out
    code, out, err = cli(capsys, "train", "toy-task", "--help")  # the CLI is assembled from the registry
    assert code == 0, err
    assert "--hidden" in out and "Width of the toy model's only layer" in out and "--[no-]fancy" in out
    code, _, err = cli(capsys, "train", "toy-task", "--data", "text", "--hidden", "wide")
    assert code == 1 and "invalid value 'wide' for model.hidden: expected int" in err


@dataclass
class ToyDataConfig:
    max_seq_len: int = 128
    size: int = 10


class DatasetPlugin:
    @hookimpl
    def register_datasets(self, register):
        register("toy-data", "torch.utils.data:TensorDataset", config=ToyDataConfig, description="toy data",
                 modality="text", input="tokens", adapter="text-bytes")


def test_hook_register_datasets(add_plugin, capsys, cli_width):
    from perceiver.training.plan import plan_training

    add_plugin(DatasetPlugin(), package="perceiver-toy-data")
    plan = plan_training("clm", "toy-data", preset="clm-tiny", sets=["size=3"])
    assert (plan.dataset, plan.adapter) == ("toy-data", "text-bytes")
    assert plan.data_config == ToyDataConfig(max_seq_len=64, size=3)  # max_seq_len follows the model
    code, out, _ = cli(capsys, "list", "datasets")
    assert code == 0 and "toy-data" in out and "perceiver-toy-data" in out


class ModelPlugin:
    @hookimpl
    def register_models(self, register):
        register("toy-clm", dict(max_seq_len=48, max_latents=12, num_channels=24, num_heads=3,
                                 num_self_attention_layers=1), task="clm", description="toy preset")


def test_hook_register_models(add_plugin, capsys, cli_width):
    from perceiver.training.plan import plan_training

    add_plugin(ModelPlugin(), package="perceiver-toy-models")
    plan = plan_training("clm", "text", preset="toy-clm", sets=["max_latents=6"])
    config = plan.model_config
    assert (config.max_seq_len, config.max_latents, config.num_channels, config.num_heads) == (48, 6, 24, 3)
    code, out, _ = cli(capsys, "list", "models")
    assert code == 0 and "toy-clm" in out and "perceiver-toy-models" in out


class CommandPlugin:
    @hookimpl
    def register_commands(self, app):
        @app.command("toy-hello", rich_help_panel="Toys")
        def hello(name: str = typer.Option("world", "--name", help="Who to greet.")) -> None:
            """Say hello from a plugin."""
            typer.echo(f"hello {name}")


def test_hook_register_commands(add_plugin, capsys, cli_width):
    add_plugin(CommandPlugin(), package="perceiver-toy-commands")
    code, out, _ = cli(capsys, "--help")
    assert code == 0 and "toy-hello" in out and "Say hello from a plugin" in out
    assert cli(capsys, "toy-hello", "--name", "perceiver")[:2] == (0, "hello perceiver\n")


# ---------------------------------------------------------------------------------------------------------------
#  Discovery through entry points: broken plugins, gating, lazy loading
# ---------------------------------------------------------------------------------------------------------------

GOOD = """
from perceiver import hookimpl

@hookimpl
def register_models(register):
    register("good-tiny", {"max_seq_len": 32, "max_latents": 8, "num_channels": 16, "num_heads": 2},
             task="clm", description="from a good plugin")
"""

FAILS_TO_IMPORT = """
raise ImportError("libfoo is not installed")
"""

RAISES_IN_A_HOOK = """
from perceiver import hookimpl

@hookimpl
def register_models(register):
    raise RuntimeError("boom")

@hookimpl
def register_datasets(register):
    register("half-data", "torch.utils.data:TensorDataset", modality="text", adapter="text-bytes")
"""

DUPLICATE = """
from perceiver import hookimpl

@hookimpl
def register_adapters(register):
    register("text-bytes", "torch.nn:Identity", modality="text", input="tokens")
"""

TYPO_HOOK = """
from perceiver import hookimpl

@hookimpl
def register_adaptors(register):
    register("never", "torch.nn:Identity")
"""

TYPO_ARGUMENT = """
from perceiver import hookimpl

@hookimpl
def register_models(registr):
    registr("never", {}, task="clm")
"""


class FakeEntryPoint:
    """What ``importlib.metadata.entry_points(group="perceiver")`` yields for an installed plugin."""

    def __init__(self, name: str, module: str, package: str, version: str):
        self.name, self.value, self.group = name, module, "perceiver"
        self.dist = SimpleNamespace(name=package, version=version)
        self.loads = 0

    def load(self):
        self.loads += 1
        return importlib.import_module(self.value)


@pytest.fixture
def entry_points(fresh_plugins, monkeypatch, tmp_path):
    """``entry_points(name=source, ...)`` installs plugin modules as fake entry points (package perceiver-<name>);
    third-party plugins are enabled; the plugin state is fresh."""
    monkeypatch.delenv("PERCEIVER_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("PERCEIVER_LOAD_PLUGINS", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    installed: List[FakeEntryPoint] = []
    real = importlib.metadata.entry_points

    def fake(group: Optional[str] = None, **kwargs):
        return list(installed) if group == "perceiver" else real(group=group, **kwargs) if group else real(**kwargs)

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)

    def install(**sources: str) -> List[FakeEntryPoint]:
        for name, source in sources.items():
            module = f"perceiver_fake_{name}_{tmp_path.name}"
            (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
            installed.append(FakeEntryPoint(name, module, f"perceiver-{name}", "1.2.3"))
        importlib.invalidate_caches()
        return installed

    yield install
    for ep in installed:
        sys.modules.pop(ep.value, None)


def plugin_warnings(record) -> List[str]:
    return [str(w.message) for w in record if issubclass(w.category, PluginWarning)]


def test_entry_point_plugin_loads_lazily_and_once(entry_points):
    (good,) = entry_points(good=GOOD)
    assert good.loads == 0 and not plugins._loaded  # importing perceiver loads nothing
    assert registry.get("model", "good-tiny").package == "perceiver-good"
    registry.list("model")
    registry.get("task", "clm")
    assert good.loads == 1
    info = {p.name: p for p in plugins.list_plugins()}["good"]
    assert (info.package, info.version, info.hooks) == ("perceiver-good", "1.2.3", ["register_models"])
    assert info.error is None


def test_building_a_model_from_built_in_components_loads_no_plugin(entry_points):
    from perceiver.tasks.clm import CausalLanguageModel, CausalLanguageModelConfig

    (good,) = entry_points(good=GOOD)
    CausalLanguageModel(CausalLanguageModelConfig(max_seq_len=16, max_latents=4, num_channels=16, num_heads=2,
                                                  num_self_attention_layers=1))
    registry.create("task", "mlm", max_seq_len=16, num_input_channels=16, num_latents=4, num_latent_channels=16,
                    num_cross_attention_heads=2, num_self_attention_heads=2, num_decoder_heads=2,
                    num_self_attention_layers_per_block=1)
    assert good.loads == 0 and registry.contains("adapter", "text-bytes") and good.loads == 0
    assert registry.contains("model", "good-tiny") and good.loads == 1  # a name the built-ins lack loads plugins


def test_plugin_that_fails_to_import_is_one_warning_and_the_others_load(entry_points, capsys, cli_width):
    entry_points(broken=FAILS_TO_IMPORT, good=GOOD)
    with pytest.warns(PluginWarning) as record:
        assert registry.contains("model", "good-tiny") and registry.contains("task", "clm")
    assert plugin_warnings(record) == [
        "plugin 'perceiver-broken' could not be loaded: ImportError: libfoo is not installed"
    ]
    assert {p.name: p.error for p in plugins.list_plugins()}["broken"] == "ImportError: libfoo is not installed"

    plugins._reset_for_tests()
    code, out, err = cli(capsys, "list", "models")
    assert code == 0 and "good-tiny" in out and "clm-tiny" in out
    assert err.strip().splitlines() == [
        "warning: plugin 'perceiver-broken' could not be loaded: ImportError: libfoo is not installed"
    ]


def test_plugin_that_raises_in_a_hook_is_one_warning_and_its_other_hooks_run(entry_points, capsys, cli_width):
    entry_points(raises=RAISES_IN_A_HOOK, good=GOOD)
    with pytest.warns(PluginWarning) as record:
        registry.list("model")
    assert plugin_warnings(record) == ["plugin 'perceiver-raises' failed in register_models: RuntimeError: boom"]
    assert registry.get("dataset", "half-data").package == "perceiver-raises"
    assert registry.contains("model", "good-tiny")

    plugins._reset_for_tests()
    code, out, err = cli(capsys, "list", "datasets")
    assert code == 0 and "half-data" in out and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "perceiver-raises" in err


def test_duplicate_name_from_a_plugin_names_both_packages(entry_points):
    entry_points(dup=DUPLICATE, good=GOOD)
    with pytest.warns(PluginWarning) as record:
        registry.list("adapter")
    assert plugin_warnings(record) == [
        "plugin 'perceiver-dup' failed in register_adapters: RegistryError: adapter 'text-bytes' is registered "
        "twice: by package 'perceiver' and by 'perceiver-dup'"
    ]
    assert registry.get("adapter", "text-bytes").package == "perceiver"
    assert registry.contains("model", "good-tiny")


@pytest.mark.parametrize("source, detail", [
    (TYPO_HOOK, "unknown hook register_adaptors (did you mean register_adapters?)"),
    (TYPO_ARGUMENT, "registr"),
])
def test_hook_with_a_typo_is_one_warning_and_the_plugin_is_skipped(entry_points, capsys, cli_width, source, detail):
    entry_points(typo=source, good=GOOD)
    with pytest.warns(PluginWarning) as record:
        assert registry.contains("model", "good-tiny") and registry.contains("task", "clm")  # the rest loaded
    (message,) = plugin_warnings(record)
    assert message.startswith("plugin 'perceiver-typo' skipped: ") and detail in message and "\n" not in message
    assert not registry.contains("model", "never") and not registry.contains("adapter", "never")
    assert plugins.pm.get_plugin("typo") is None
    assert detail in {p.name: p.error for p in plugins.list_plugins()}["typo"]

    for args in (["--help"], ["list", "models"]):  # the CLI works, and says so once
        plugins._reset_for_tests()
        code, out, err = cli(capsys, *args)
        assert code == 0 and "Traceback" not in out + err
        assert err.strip().splitlines() == [f"warning: {message}"]
    assert "good-tiny" in out and "clm-tiny" in out
    code, out, err = cli(capsys, "plugins")  # the same process: the warning is not repeated, the table says why
    assert code == 0 and err == "" and detail in " ".join(out.split())

    plugins._reset_for_tests()
    code, out, err = cli(capsys, "--no-plugins", "list", "models")
    assert code == 0 and "clm-tiny" in out and err == ""


def test_an_optional_hook_without_a_spec_is_not_an_error(add_plugin):
    from perceiver.hookspecs import hookimpl as impl

    class Future:
        @impl(optionalhook=True)
        def register_samplers(self, register):
            pass

        @impl
        def register_models(self, register):
            register("future-tiny", {"max_seq_len": 32, "max_latents": 8}, task="clm")

    assert add_plugin(Future(), package="perceiver-future") is not None
    assert registry.contains("model", "future-tiny")


def test_the_same_plugin_warning_is_given_once(entry_points, capsys, cli_width):
    entry_points(broken=FAILS_TO_IMPORT)
    entry_points(broken=FAILS_TO_IMPORT)  # e.g. a package found twice on the path
    message = "plugin 'perceiver-broken' could not be loaded: ImportError: libfoo is not installed"
    with pytest.warns(PluginWarning) as record:  # an "always" filter: Python's own once-per-place rule is off
        registry.list("model")
    assert plugin_warnings(record) == [message]

    plugins._reset_for_tests()
    code, out, err = cli(capsys, "list", "models")
    assert code == 0 and err.strip().splitlines() == [f"warning: {message}"]


@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_disable_plugins_env_skips_third_party_plugins_but_not_the_builtins(entry_points, monkeypatch, value):
    (good,) = entry_points(good=GOOD)
    monkeypatch.setenv("PERCEIVER_DISABLE_PLUGINS", value)
    assert registry.contains("task", "clm") and not registry.contains("model", "good-tiny")
    assert good.loads == 0
    assert [p.name for p in plugins.list_plugins()] == ["perceiver"]


@pytest.mark.parametrize("selection, expected", [("good", {"good-tiny"}), ("other, good", {"good-tiny", "other-tiny"}),
                                                 ("", set()), ("nothing-installed", set())])
def test_load_plugins_env_selects_entry_points_by_name(entry_points, monkeypatch, selection, expected):
    entry_points(good=GOOD, other=GOOD.replace("good-tiny", "other-tiny"))
    monkeypatch.setenv("PERCEIVER_LOAD_PLUGINS", selection)
    assert {e.name for e in registry.list("model") if e.package != "perceiver"} == expected


def test_no_plugins_flag_skips_third_party_plugins(entry_points, capsys, cli_width):
    entry_points(good=GOOD)
    code, out, _ = cli(capsys, "--no-plugins", "list", "models")
    assert code == 0 and "clm-tiny" in out and "good-tiny" not in out
    code, out, _ = cli(capsys, "--no-plugins", "plugins")
    assert code == 0 and "perceiver-good" not in out and "disabled" in out

    plugins._reset_for_tests()
    import os

    os.environ.pop("PERCEIVER_DISABLE_PLUGINS", None)  # the flag set it for the rest of that process
    code, out, _ = cli(capsys, "list", "models")
    assert code == 0 and "good-tiny" in out


def test_plugins_command_lists_versions_hooks_and_failures(entry_points, capsys, cli_width):
    entry_points(good=GOOD, broken=FAILS_TO_IMPORT)
    code, out, err = cli(capsys, "plugins")
    assert code == 0, err
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3}
    assert "perceiver-good" in rows["good"] and "1.2.3" in rows["good"] and "register_models" in rows["good"]
    assert "loaded" in rows["good"] and "ImportError: libfoo is not installed" in rows["broken"]
    assert "register_adapters" in rows["perceiver"]


class CommandClashPlugin:
    @hookimpl
    def register_commands(self, app):
        @app.command("list")
        def hijack() -> None:
            typer.echo("hijacked")

        @app.command()
        def toy_extra() -> None:
            typer.echo("extra")


class CommandRaisesPlugin:
    @hookimpl
    def register_commands(self, app):
        raise RuntimeError("no CLI today")


def test_plugin_commands_cannot_replace_existing_ones_and_failures_are_isolated(add_plugin, capsys, cli_width):
    add_plugin(CommandClashPlugin(), package="perceiver-clash")
    add_plugin(CommandRaisesPlugin(), package="perceiver-raises")
    add_plugin(CommandPlugin(), package="perceiver-toy-commands")
    code, out, err = cli(capsys, "list", "tasks")
    assert code == 0 and "hijacked" not in out and "clm" in out
    assert err.strip().splitlines() == [
        "warning: plugin 'perceiver-clash' failed in register_commands: command 'list' already exists",
        "warning: plugin 'perceiver-raises' failed in register_commands: RuntimeError: no CLI today",
    ]
    assert cli(capsys, "toy-extra")[:2] == (0, "extra\n")
    assert cli(capsys, "toy-hello")[:2] == (0, "hello world\n")
