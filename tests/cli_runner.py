"""Running the ``perceiver`` command in-process from a test."""

from __future__ import annotations

from perceiver.cli import main


def cli(capsys, *args):
    """Run ``perceiver ARGS`` in-process; return (exit code, stdout, stderr). A run never prints a traceback."""
    try:
        main([str(arg) for arg in args])
        code = 0
    except SystemExit as exit:
        code = exit.code or 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err
    return code, out, err
