"""Adapters between a task's data and the core blocks: inputs to channels, channels to task outputs."""

from perceiver.adapters.base import InputAdapter, OutputAdapter, TokenAdapter, TokenInputAdapter
from perceiver.adapters.image import ImageAdapter, ImageAdapterConfig
from perceiver.adapters.output import ClassLogitsAdapter, ClassLogitsConfig, TiedTokenLogitsAdapter, TokenLogitsConfig
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
    "TiedTokenLogitsAdapter",
    "TokenAdapter",
    "TokenInputAdapter",
    "TokenLogitsConfig",
]
