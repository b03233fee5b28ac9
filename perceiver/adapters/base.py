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
