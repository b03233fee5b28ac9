"""``python -m perceiver``: the ``perceiver`` command."""

from perceiver.cli import main

main()
