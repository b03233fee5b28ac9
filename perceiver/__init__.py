"""perceiver: Perceiver, Perceiver IO and Perceiver AR models, by name, from Python or the command line."""

__version__ = "0.1.0"

from perceiver.hookspecs import hookimpl  # noqa: E402

__all__ = ["__version__", "hookimpl"]
