"""The ``perceiver`` command: assembled from the command modules and the registry.

Heavy libraries (torch, Lightning, transformers) are imported inside the commands that need them, so that
``perceiver --help`` and ``perceiver list`` answer at once.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import List, Optional

import typer

from perceiver import __version__
from perceiver.training.signals import TrainingInterrupted, ignore_stop_signals

HELP = "Perceiver, Perceiver IO and Perceiver AR models: train, evaluate and generate by name."
DEBUG_ENV = "PERCEIVER_DEBUG"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"perceiver {__version__}")
        raise typer.Exit()


def create_app(argv: Optional[List[str]] = None) -> typer.Typer:
    """Build the Typer app: built-in commands, ``train <task>`` for every registered task, plugin commands."""
    from perceiver import plugins, registry
    from perceiver.commands import (
        convert,
        evaluate,
        export,
        fill_mask,
        generate,
        inspect,
        plot,
        predict,
        push,
        train,
    )

    app = typer.Typer(
        name="perceiver",
        help=HELP,
        rich_markup_mode="rich",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def root(
        version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
        no_plugins: bool = typer.Option(
            False, "--no-plugins", help="Skip third-party plugins (same as PERCEIVER_DISABLE_PLUGINS=1)."
        ),
    ) -> None:
        """Perceiver, Perceiver IO and Perceiver AR models: train, evaluate and generate by name."""

    inspect.register(app)
    generate.register(app)
    evaluate.register(app)
    fill_mask.register(app)
    predict.register(app)
    convert.register(app)
    export.register(app)
    push.register(app)
    plot.register(app)
    train.register(app, build_tasks="train" in (argv or []), argv=argv)
    plugins.register_commands(app, registry.REGISTRY)
    return app


def _friendly(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text


def main(argv: Optional[List[str]] = None) -> None:
    """Console entry point: runs the app and turns every error into one line on stderr and exit code 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--no-plugins" in argv[: argv.index("train") if "train" in argv else len(argv)]:
        os.environ["PERCEIVER_DISABLE_PLUGINS"] = "1"
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    _quiet_warnings(debug)
    try:
        from perceiver.commands.train import with_resumed_task

        argv = with_resumed_task(argv)  # `train --resume RUN` names the run's task for the task's command
        app = create_app(argv)
        command = typer.main.get_command(app)
        result = command.main(args=argv, prog_name="perceiver", standalone_mode=False)
        if isinstance(result, int) and not isinstance(result, bool) and result:
            if result == 130:  # Typer's answer to Ctrl-C inside a command
                _error("interrupted")
            sys.exit(result)
    except TrainingInterrupted as interrupted:
        ignore_stop_signals()  # the step is saved and the process ends: a second Ctrl-C must not cut that short
        if interrupted.report:
            _interrupted(interrupted, argv)
        sys.exit(interrupted.exit_code)
    except KeyboardInterrupt:
        _error("interrupted")
        sys.exit(130)
    except SystemExit:
        raise
    except BaseException as error:  # noqa: BLE001 - the one place that decides what users see
        exit_code = _click_exit(error)
        if exit_code is not None:
            sys.exit(exit_code)
        if debug:
            raise
        _error(f"{_friendly(error)}  (set {DEBUG_ENV}=1 for the traceback)")
        sys.exit(1)


def _click_exit(error: BaseException) -> Optional[int]:
    """Let click/Typer report their own usage errors and exits; None for everything else."""
    for module in ("click", "typer._click"):
        click = sys.modules.get(module + ".exceptions") or sys.modules.get(module)
        exceptions = getattr(click, "exceptions", click)
        if exceptions is None:
            continue
        if isinstance(error, getattr(exceptions, "ClickException", ())):
            error.show()
            return error.exit_code
        if isinstance(error, getattr(exceptions, "Exit", ())):
            return error.exit_code
        if isinstance(error, getattr(exceptions, "Abort", ())):
            _error("aborted")
            return 1
    return None


def _interrupted(interrupted: TrainingInterrupted, argv: List[str]) -> None:
    """One line: where training stopped and the command that continues it."""
    from rich.console import Console
    from rich.markup import escape

    line = interrupted.summary()
    if interrupted.saved:
        again = argv if "--resume" in argv else [*argv, "--resume"]
        line += f"; continue with: perceiver {shlex.join(again)}"
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[yellow]{escape(line)}[/]")


def _error(message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {escape(message)}")


def _quiet_warnings(debug: bool) -> None:
    """Show plugin warnings as one line each; hide library chatter unless debugging."""
    import warnings

    def one_line(message, category, filename, lineno, file=None, line=None):
        from rich.console import Console
        from rich.markup import escape

        Console(stderr=True, highlight=False, soft_wrap=True).print(f"[yellow]warning:[/] {escape(str(message))}")

    from perceiver.plugins import PluginWarning

    warnings.showwarning = one_line
    if not debug:
        warnings.filterwarnings("ignore")
        warnings.filterwarnings("default", category=PluginWarning)
        warnings.filterwarnings("default", category=UserWarning, module="perceiver")


if __name__ == "__main__":  # pragma: no cover
    main()
