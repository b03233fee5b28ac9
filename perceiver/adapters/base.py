"""Adapter protocols: how a modality enters and leaves a Perceiver.

An adapter is registered by name (kind ``adapter``) with metadata ``modality`` (what data it reads, e.g. "text")
and ``input`` (the form of model input it consumes: "tokens" for integer sequences, "image" for pixel arrays).
A task declares the input forms it accepts (metadata ``inputs``).
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from perceiver.core.attention import Rotary


class TokenAdapter(nn.Module):
    """Input and output side for sequences of token ids (input form ``tokens``).

    Subclasses set ``num_channels`` and ``num_rotary_channels`` and implement the three methods.
    """

    num_channels: int
    num_rotary_channels: int = 0

    def embed(self, input_ids: Tensor, positions: Tensor) -> Tensor:
        """(B, N) ids and (B, N) positions -> (B, N, C) embeddings."""
        raise NotImplementedError

    def rotary(self, positions: Tensor) -> Optional[Rotary]:
        """(B, N) positions -> rotary angles (cos, sin), each (B, 1, N, R), or None."""
        return None

    def logits(self, hidden: Tensor) -> Tensor:
        """(B, M, C) hidden states -> (B, M, vocab_size) logits."""
        raise NotImplementedError


# -------------------------------------------------------------------------------------------------------------
#  Perceiver IO sides (see perceiver.core.perceiver_io)
# -------------------------------------------------------------------------------------------------------------


class InputAdapter(nn.Module):
    """Input side of Perceiver IO: ``forward(inputs, pad_mask=None) -> (x (B, N, C), pad_mask (B, N) or None)``.

    Subclasses set ``num_input_channels`` (= C), the channels the encoder cross-attends to.
    """

    num_input_channels: int

    def forward(self, inputs: Tensor, pad_mask: Optional[Tensor] = None):
        raise NotImplementedError


class OutputAdapter(nn.Module):
    """Output side of Perceiver IO: ``forward(hidden (B, Q, E)) -> task output``.

    Output adapters are registered like input adapters (metadata ``side="output"``); their factory is called as
    ``factory(config, input_adapter)`` so that an output can be tied to the input side.
    """

    def forward(self, hidden: Tensor) -> Tensor:
        raise NotImplementedError


class TokenInputAdapter(InputAdapter):
    """Any :class:`TokenAdapter` as a Perceiver IO input adapter.

    ``forward(input_ids (B, N), pad_mask (B, N)) -> (embeddings (B, N, C), pad_mask)``; positions start at the first
    non-padding token of each row, so left and right padding give the same embeddings for the same text.
    """

    def __init__(self, adapter: TokenAdapter):
        super().__init__()
        self.adapter = adapter
        self.num_input_channels = adapter.num_channels

    def forward(self, input_ids: Tensor, pad_mask: Optional[Tensor] = None):
        from perceiver.core.position import positions

        if input_ids.dim() != 2:
            raise ValueError(f"token input must have shape (batch, length), got {tuple(input_ids.shape)}")
        if pad_mask is not None and not pad_mask.any():
            pad_mask = None
        pos = positions(pad_mask, *input_ids.shape, device=input_ids.device)
        return self.adapter.embed(input_ids, pos), pad_mask
