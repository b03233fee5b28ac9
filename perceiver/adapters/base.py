"""The adapter vocabulary: how a modality enters and leaves a Perceiver. Every model kind uses the same two sides.

* **Input side**, :class:`InputAdapter`: what a task reads (token ids, images, ...) -> channels ``x (B, N, C)`` that
  the model attends to. Position information is part of its contract: ``embed(inputs, positions)`` adds what it
  encodes of the positions (a learned embedding, Fourier features), and ``rotary(positions)`` gives the rotary
  angles the attention layers apply (or None). ``forward(inputs, pad_mask)`` does both steps with positions counted
  from the first non-padding token of each row (Perceiver IO calls this; Perceiver AR calls ``embed`` and
  ``rotary`` itself because cached decoding feeds positions one at a time).
* **Output side**, :class:`OutputAdapter`: ``forward(hidden (B, Q, E)) -> task output`` (token logits, class
  logits, ...).

:class:`TokenInputAdapter` is the input side for integer token sequences: it also knows its vocabulary and gives
``logits(hidden)`` tied to its embedding, which :class:`~perceiver.adapters.output.TokenLogitsAdapter` exposes as an
output side.

Adapters are registered by name (kind ``adapter``) with metadata ``modality`` (what data they read, e.g. "text"),
``input`` (the input form: "tokens" or "image"), or ``side="output"`` for output adapters. A task declares the input
forms it accepts (metadata ``inputs``). Task models also take adapter instances directly, unregistered.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from torch import Tensor, nn

from perceiver.core.attention import Rotary


class InputAdapter(nn.Module):
    """Input side: ``inputs -> x (B, N, C)``, with positions as part of the contract.

    Subclasses set ``num_input_channels`` (= C) and ``num_rotary_channels`` (R per head, 0 for none) and implement
    :meth:`embed`; :meth:`rotary` and :meth:`forward` have defaults.
    """

    num_input_channels: int
    num_rotary_channels: int = 0

    def embed(self, inputs: Any, positions: Optional[Tensor]) -> Tensor:
        """Inputs and their (B, N) positions -> (B, N, C). Inputs with an inherent layout (images) ignore
        ``positions``."""
        raise NotImplementedError

    def rotary(self, positions: Tensor) -> Optional[Rotary]:
        """(B, N) positions -> rotary angles (cos, sin), each (B, 1, N, R), or None (no rotary embedding)."""
        return None

    def forward(self, inputs: Any, pad_mask: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
        """-> (x (B, N, C), pad_mask (B, N) or None). Positions start at each row's first non-padding token, so left
        and right padding embed the same text alike."""
        from perceiver.core.position import positions

        if pad_mask is not None and not pad_mask.any():
            pad_mask = None
        pos = positions(pad_mask, *inputs.shape[:2], device=inputs.device) if isinstance(inputs, Tensor) else None
        return self.embed(inputs, pos), pad_mask


class TokenInputAdapter(InputAdapter):
    """Input side for token ids (input form ``tokens``): ``embed(input_ids (B, N), positions (B, N)) -> (B, N, C)``,
    and the output side tied to it, ``logits(hidden (B, M, C)) -> (B, M, vocab_size)``.

    Subclasses set ``vocab_size``, ``num_input_channels`` and ``num_rotary_channels``.
    """

    vocab_size: int

    def forward(self, input_ids: Tensor, pad_mask: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
        if input_ids.dim() != 2:
            raise ValueError(f"token input must have shape (batch, length), got {tuple(input_ids.shape)}")
        return super().forward(input_ids, pad_mask)

    def logits(self, hidden: Tensor) -> Tensor:
        """(B, M, C) hidden states -> (B, M, vocab_size) logits."""
        raise NotImplementedError


class OutputAdapter(nn.Module):
    """Output side: ``forward(hidden (B, Q, E)) -> task output``.

    Registered output adapters are built as ``factory(config, input_adapter)`` so that an output can be tied to the
    input side.
    """

    def forward(self, hidden: Tensor) -> Any:
        raise NotImplementedError


def check_adapter_fits(
    adapter: nn.Module, num_channels: Optional[int] = None, vocab_size: Optional[int] = None
) -> None:
    """Raise a one-line ``ValueError`` unless ``adapter`` is an :class:`InputAdapter` (with ``num_channels`` channels
    when given; for a ``vocab_size``, a :class:`TokenInputAdapter` of that many tokens)."""
    name = type(adapter).__name__
    if vocab_size is not None and not isinstance(adapter, TokenInputAdapter):
        raise ValueError(f"{name} is not a TokenInputAdapter (token ids in; embed, rotary and logits)")
    if not isinstance(adapter, InputAdapter):
        raise ValueError(f"{name} is not an InputAdapter")
    if num_channels is not None and adapter.num_input_channels != num_channels:
        raise ValueError(f"{name} makes {adapter.num_input_channels} channels, the model has {num_channels}")
    if vocab_size is not None and adapter.vocab_size != vocab_size:
        raise ValueError(f"{name} reads {adapter.vocab_size} tokens, the model's vocab_size is {vocab_size}")


def rename_legacy_keys(state_dict: Dict[str, Any], renames: Dict[str, str], prefix: str = "") -> None:
    """Rename, in place, the keys of ``state_dict`` that start with ``prefix + old`` to ``prefix + new`` for each
    ``old: new`` of ``renames``: weights saved before a module was renamed still load (exports, checkpoints,
    converters). Task models list theirs in ``LEGACY_KEYS``."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix):]
        for old, new in renames.items():
            if rest.startswith(old):
                state_dict[prefix + new + rest[len(old):]] = state_dict.pop(key)
                break


def legacy_keys_hook(renames: Dict[str, str]):
    """A ``load_state_dict`` pre-hook that applies :func:`rename_legacy_keys` under the module's prefix."""

    def hook(module, state_dict, prefix, *args):
        rename_legacy_keys(state_dict, renames, prefix)

    return hook


__all__ = [
    "InputAdapter", "OutputAdapter", "TokenInputAdapter", "check_adapter_fits", "legacy_keys_hook",
    "rename_legacy_keys",
]
