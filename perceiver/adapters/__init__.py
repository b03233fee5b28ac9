"""Adapters between a task's data and the core blocks: the input side (inputs -> channels, with position
information) and the output side (channels -> task outputs). The vocabulary is described in
:mod:`perceiver.adapters.base`."""

from perceiver.adapters.base import InputAdapter, OutputAdapter, TokenInputAdapter
from perceiver.adapters.image import ImageAdapter, ImageAdapterConfig
from perceiver.adapters.output import ClassLogitsAdapter, ClassLogitsConfig, TokenLogitsAdapter, TokenLogitsConfig
from perceiver.adapters.text import TextAdapterConfig, TextBytesAdapter

__all__ = [
    "ClassLogitsAdapter",
    "ClassLogitsConfig",
    "ImageAdapter",
    "ImageAdapterConfig",
    "InputAdapter",
    "OutputAdapter",
    "TextAdapterConfig",
    "TextBytesAdapter",
    "TokenInputAdapter",
    "TokenLogitsAdapter",
    "TokenLogitsConfig",
]
