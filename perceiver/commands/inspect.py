"""``perceiver list``, ``perceiver show`` and ``perceiver plugins``."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

import typer

KIND_NAMES = {"adapters": "adapter", "tasks": "task", "datasets": "dataset", "models": "model"}


def _table(title: str, *columns: str):
    from rich.table import Table

    table = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def list_components(
    kind: Optional[str] = typer.Argument(None, help="adapters, tasks, datasets or models (all when omitted)."),
    pattern: str = typer.Option("*", "--pattern", "-p", help="Only names matching this glob."),
) -> None:
    """List registered components: name, description and the package that registered them."""
    from rich.console import Console

    from perceiver import registry

    if kind is not None:
        singular = KIND_NAMES.get(kind) or (kind if kind in KIND_NAMES.values() else None)
        if singular is None:
            raise typer.BadParameter(f"{kind!r} is not one of {', '.join(KIND_NAMES)}", param_hint="KIND")
        kinds = [singular]
    else:
        kinds = list(KIND_NAMES.values())
    console = Console()
    for name in kinds:
        extra = {"dataset": "modality", "adapter": "modality", "task": "inputs", "model": "task"}[name]
        table = _table(f"{name}s", "name", extra, "description", "package")
        for entry in registry.list(name, pattern):
            value = entry.metadata.get(extra, "")
            value = ", ".join(value) if isinstance(value, (list, tuple)) else str(value)
            table.add_row(entry.name, value, entry.description, entry.package)
        console.print(table)


SHOW_SECTIONS = {"task": "model", "model": "model", "adapter": "adapter", "dataset": "data"}
"""Kind -> the ``--set`` section of its options."""


def _value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (dict, list, tuple)) else str(value)


def option_rows(config_class: type, section: str, values: Optional[Dict[str, Any]] = None) -> List[Tuple[str, str]]:
    """(``section.key TYPE = value``, description) for every option of ``config_class``; ``values`` (a preset's)
    replace the defaults and are marked."""
    from rich.markup import escape

    from perceiver.config_fields import field_default, field_docs, field_types, type_name
    from perceiver.training.plan import ADAPTER_SHARED  # set by the task, not --set keys

    docs = field_docs(config_class)
    rows = []
    for name, tp in field_types(config_class).items():
        if section == "adapter" and name in ADAPTER_SHARED:
            continue
        default = field_default(config_class, name)
        text = escape(docs.get(name, ""))
        if values is not None and name in values:
            label = f"{section}.{name} = {_value(values[name])}"
            text = f"[bold yellow](preset; default {escape(_value(default))})[/] {text}"
        else:
            label = f"{section}.{name} {type_name(tp).upper()} = {_value(default)}"
        rows.append((label, text))
    return rows


def show_component(
    kind: str = typer.Argument(..., help="model, task, adapter or dataset."),
    name: str = typer.Argument(..., help="A registered name (see `perceiver list`)."),
) -> None:
    """Show a component's options: their --set keys with type, default and description; for a model preset, its
    values over the task's defaults."""
    from rich.console import Console

    from perceiver import registry
    from perceiver.commands.helptext import print_panels

    singular = KIND_NAMES.get(kind) or (kind if kind in KIND_NAMES.values() else None)
    if singular is None:
        raise typer.BadParameter(f"{kind!r} is not one of {', '.join(KIND_NAMES.values())}", param_hint="KIND")
    entry = registry.get(singular, name)
    console = Console(highlight=False)
    values = None
    if singular == "model":
        task = entry.metadata.get("task")
        config_class = registry.get("task", task).config_class()
        values = dict(entry.load())
        heading = f"model preset [bold]{name}[/] for task [bold]{task}[/]: {entry.description}"
        usage = f"use it with: perceiver train {task} --model {name}; any value can still be changed"
    else:
        config_class = entry.config_class()
        heading = f"{singular} [bold]{name}[/]: {entry.description}"
        usage = f"set with --set {SHOW_SECTIONS[singular]}.KEY=VALUE (or in the {SHOW_SECTIONS[singular]} section " \
                "of --config FILE)"
    console.print(f"{heading} [dim](package {entry.package})[/]")
    rows = option_rows(config_class, SHOW_SECTIONS[singular], values) if config_class is not None else []
    if not rows:
        console.print(f"{singular} {name} has no options")
        return
    console.print(usage)
    print_panels(console, {f"{SHOW_SECTIONS[singular]} options": rows})


def show_plugins() -> None:
    """List loaded plugins with their versions and the hooks they implement."""
    from rich.console import Console

    from perceiver import plugins, registry

    registry.list("task")  # loads the plugins
    table = _table("plugins", "name", "package", "version", "hooks", "status")
    for info in plugins.list_plugins():
        status = f"[red]{info.error}[/]" if info.error else "[green]loaded[/]"
        table.add_row(info.name, info.package, info.version, ", ".join(info.hooks), status)
    console = Console()
    console.print(table)
    if plugins.plugins_disabled():
        console.print("third-party plugins are disabled (PERCEIVER_DISABLE_PLUGINS / --no-plugins)")


def register(app: typer.Typer) -> None:
    app.command("list", rich_help_panel="Inspect")(list_components)
    app.command("show", rich_help_panel="Inspect")(show_component)
    app.command("plugins", rich_help_panel="Inspect")(show_plugins)
