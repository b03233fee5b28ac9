"""Output adapters: token logits from a token input adapter (tied to its embedding), and class logits.

Both are registered by name (``token-logits``, ``class-logits``) and built as ``factory(config, input_adapter)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import Tensor, nn

from perceiver.adapters.base import OutputAdapter, TokenInputAdapter


@dataclass
class TokenLogitsConfig:
    """The ``token-logits`` adapter has no options: its weights are the input adapter's."""


class TokenLogitsAdapter(OutputAdapter):
    """``forward(hidden (B, Q, C)) -> logits (B, Q, vocab_size)`` = the token input adapter's ``logits(hidden)``
    (for ``text-bytes``: hidden @ embedding.T + bias). The weights stay owned by the input adapter (one parameter
    tensor, saved once), so this module has no parameters of its own."""

    def __init__(self, config: Optional[TokenLogitsConfig], input_adapter: nn.Module):
        super().__init__()
        if not isinstance(input_adapter, TokenInputAdapter):
            raise ValueError(
                f"token-logits needs a token input adapter to tie to, got {type(input_adapter).__name__}"
            )
        object.__setattr__(self, "_input_adapter", input_adapter)  # a reference, not a submodule

    def forward(self, hidden: Tensor) -> Tensor:
        return self._input_adapter.logits(hidden)


@dataclass
class ClassLogitsConfig:
    """Options of the ``class-logits`` adapter; both are set by the task."""

    num_channels: int = 0
    """Channels of the decoder's output (set by the task)."""
    num_classes: int = 0
    """Number of classes (set by the task)."""

    def __post_init__(self):
        from perceiver.config_checks import ConfigError

        if self.num_channels < 1 or self.num_classes < 2:
            raise ConfigError(
                "class-logits needs num_channels >= 1 and num_classes >= 2, "
                f"got {self.num_channels}, {self.num_classes}"
            )


class ClassLogitsAdapter(OutputAdapter):
    """``forward(hidden (B, Q, E)) -> logits (B, num_classes)`` from the first output query (a classification
    decoder has one)."""

    def __init__(self, config: ClassLogitsConfig, input_adapter: Optional[nn.Module] = None):
        super().__init__()
        self.config = config
        self.linear = nn.Linear(config.num_channels, config.num_classes)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.linear(hidden[:, 0])


__all__ = ["ClassLogitsAdapter", "ClassLogitsConfig", "TokenLogitsAdapter", "TokenLogitsConfig"]
