"""``perceiver list`` and ``perceiver plugins``."""

from __future__ import annotations

from typing import Optional

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
    app.command("plugins", rich_help_panel="Inspect")(show_plugins)
