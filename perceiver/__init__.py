"""perceiver: Perceiver, Perceiver IO and Perceiver AR models, by name, from Python or the command line.

What a user composes with is importable from here: ``load_model`` / ``save_model``, the task models and their configs,
the core blocks and the adapters. They are imported on first use, so that ``import perceiver`` (and the CLI's
``--help``) stays fast.
"""

__version__ = "0.1.0"

import importlib  # noqa: E402

from perceiver.hookspecs import hookimpl  # noqa: E402

_LAZY = {
    "perceiver.checkpoint": ["load_model", "save_model"],
    "perceiver.tasks.clm": ["CausalLanguageModel", "CausalLanguageModelConfig"],
    "perceiver.tasks.mlm": ["MaskedLanguageModel", "MaskedLanguageModelConfig"],
    "perceiver.tasks.clf": ["Classifier", "ClassifierConfig"],
    "perceiver.core": [
        "CrossAttentionLayer", "MultiHeadAttention", "PerceiverAR", "PerceiverARConfig", "PerceiverDecoder",
        "PerceiverDecoderConfig", "PerceiverEncoder", "PerceiverEncoderConfig", "PerceiverIO", "SelfAttentionBlock",
        "SelfAttentionLayer",
    ],
    "perceiver.adapters": [
        "ClassLogitsAdapter", "ClassLogitsConfig", "ImageAdapter", "ImageAdapterConfig", "InputAdapter",
        "OutputAdapter", "TextAdapterConfig", "TextBytesAdapter", "TokenInputAdapter", "TokenLogitsAdapter",
    ],
}
_ORIGIN = {name: module for module, names in _LAZY.items() for name in names}

__all__ = ["__version__", "hookimpl", *_ORIGIN]


def __getattr__(name: str):
    if name in _ORIGIN:
        value = getattr(importlib.import_module(_ORIGIN[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'perceiver' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_ORIGIN))
