"""Input adapter for token ids (UTF-8 bytes or a subword vocabulary): embeddings in, logits tied to them out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from perceiver.adapters.base import TokenInputAdapter
from perceiver.config_checks import check_ranges
from perceiver.core.attention import Rotary
from perceiver.core.position import RotaryEmbedding


@dataclass
class TextAdapterConfig:
    """Options of the ``text-bytes`` adapter. The first four fields are set by the task."""

    vocab_size: int = 262
    """Size of the token vocabulary (set by the task)."""
    max_seq_len: int = 4096
    """Positions of the learned position embedding (set by the task)."""
    num_channels: int = 512
    """Embedding channels (set by the task)."""
    num_heads: int = 8
    """Attention heads, for the rotary channels per head (set by the task)."""
    abs_pos_emb: bool = True
    """Learned absolute position embedding (positions start at the first non-padding token)."""
    rotary_fraction: float = 0.5
    """Fraction of each attention head's channels rotated by rotary position embedding (0 turns it off)."""
    output_bias: bool = True
    """Add a learned bias to the tied output logits."""
    init_scale: float = 0.02
    """Standard deviation of the normal initialisation of the embeddings."""

    def __post_init__(self):
        check_ranges(
            self,
            {"vocab_size": ">= 1", "max_seq_len": ">= 1", "num_channels": ">= 1", "num_heads": ">= 1",
             "rotary_fraction": "[0, 1]", "init_scale": "> 0"},
        )


class TextBytesAdapter(TokenInputAdapter):
    """Token embedding + learned absolute positions + rotary angles; logits from the transposed embedding.

    ``embed(input_ids (B, N), positions (B, N)) -> (B, N, C)``, ``rotary(positions) -> (cos, sin) (B, 1, N, R)``,
    ``logits(hidden (B, M, C)) -> (B, M, vocab_size)``.
    """

    def __init__(self, config: TextAdapterConfig):
        super().__init__()
        self.config = config
        self.vocab_size = config.vocab_size
        self.num_input_channels = config.num_channels
        self.token_embedding = nn.Embedding(config.vocab_size, config.num_channels)
        self.position_embedding = nn.Embedding(config.max_seq_len, config.num_channels) if config.abs_pos_emb else None
        head_dim = config.num_channels // config.num_heads
        num_rotary = int(head_dim * config.rotary_fraction) // 2 * 2
        self.num_rotary_channels = num_rotary
        self.rotary_embedding = RotaryEmbedding(num_rotary) if num_rotary else None
        self.output_bias = nn.Parameter(torch.zeros(config.vocab_size)) if config.output_bias else None
        nn.init.normal_(self.token_embedding.weight, std=config.init_scale)
        if self.position_embedding is not None:
            nn.init.normal_(self.position_embedding.weight, std=config.init_scale)

    def embed(self, input_ids: Tensor, positions: Tensor) -> Tensor:
        x = self.token_embedding(input_ids)
        if self.position_embedding is not None:
            x = x + self.position_embedding(positions)
        return x

    def rotary(self, positions: Tensor) -> Optional[Rotary]:
        return self.rotary_embedding(positions) if self.rotary_embedding is not None else None

    def logits(self, hidden: Tensor) -> Tensor:
        """(B, M, C) -> (B, M, V) in the dtype of ``hidden`` (fp32 hidden states over bf16 weights give fp32)."""
        logits = hidden @ self.token_embedding.weight.to(hidden.dtype).T
        return logits + self.output_bias if self.output_bias is not None else logits
