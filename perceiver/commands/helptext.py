"""``--help`` for commands with many long options (``perceiver train <task>``): one row per option, its full name.

Typer's rich help puts option names, ``--no-`` forms, types and help text in separate table columns and, at 80
columns, cuts names such as ``--cross-attention-widening-factor`` short. Here an option's row is its name with its
value (``--max-latents INT``) or, for a flag, ``--[no-]compile``, and its help text wraps beside it; when the
terminal is too narrow for both, the help text goes on the lines below the name.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

from typer.core import TyperCommand

MIN_HELP_WIDTH = 28
"""Narrower than this beside the names, the help text goes below them."""


def option_label(param) -> str:
    """``-d, --data NAME``, ``--max-latents INT`` or ``--[no-]compile``."""
    longs = [opt for opt in param.opts if opt.startswith("--")]
    shorts = [opt for opt in param.opts if not opt.startswith("--")]
    if getattr(param, "is_flag", False):
        negatives = [opt for opt in param.secondary_opts if opt.startswith("--")]
        if len(longs) == 1 and negatives == ["--no-" + longs[0][2:]]:
            longs = ["--[no-]" + longs[0][2:]]
        else:
            longs += negatives
        return ", ".join(shorts + longs)
    metavar = param.metavar or param.type.name.upper()
    return f"{', '.join(shorts + longs)} {metavar}"


def option_rows(command, ctx) -> Dict[str, List[Tuple[str, str]]]:
    """Panel title -> (label, help) of each visible option, in the order they are declared."""
    panels: Dict[str, List[Tuple[str, str]]] = {}
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False) or param.param_type_name != "option":
            continue
        panel = getattr(param, "rich_help_panel", None) or "Options"
        panels.setdefault(panel, []).append((option_label(param), param.help or ""))
    return panels


def print_help(command, ctx) -> None:
    from rich.console import Console
    from rich.padding import Padding
    from rich.text import Text

    console = Console(highlight=False)
    pieces = [ctx.command_path, *command.collect_usage_pieces(ctx)]
    console.print(Padding(Text.assemble(("Usage: ", "yellow"), " ".join(pieces)), (1, 1, 0, 1)))
    if command.help:
        console.print(Padding(command.help.strip(), (1, 1, 0, 1)))
    console.print()
    print_panels(console, option_rows(command, ctx))


def print_panels(console, panels: Dict[str, List[Tuple[str, str]]]) -> None:
    """Print each panel title's (label, text) rows: labels whole, text (rich markup) wrapped beside or below them."""
    from rich import box
    from rich.console import Group
    from rich.padding import Padding
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    name_width = max((len(label) for rows in panels.values() for label, _ in rows), default=0)
    side_by_side = console.width - 4 - name_width - 2 >= MIN_HELP_WIDTH
    for title, rows in panels.items():
        if side_by_side:
            table = Table.grid(padding=(0, 2), expand=True)
            table.add_column(no_wrap=True, min_width=name_width)
            table.add_column(ratio=1, overflow="fold")
            for label, text in rows:
                table.add_row(Text(label, style="bold cyan"), text)  # Text: "[no-]" is no markup
            body = table
        else:
            body = Group(*(item for label, text in rows
                           for item in (Text(label, style="bold cyan"), Padding(text, (0, 0, 0, 4)))))
        console.print(Panel(body, title=title, title_align="left", box=box.ROUNDED, border_style="dim"))


class WideOptionsCommand(TyperCommand):
    """A Typer command whose ``--help`` is :func:`print_help`."""

    def format_help(self, ctx, formatter) -> None:
        print_help(self, ctx)
