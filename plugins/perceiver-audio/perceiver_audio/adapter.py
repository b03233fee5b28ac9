"""The ``mulaw`` token adapter: 8-bit mu-law waveform samples in, logits over the 256 codes out.

Three things make it an audio adapter rather than a byte adapter:

- **Amplitude features.** Code ``c`` stands for the amplitude ``decode(c)``; neighbouring codes are neighbouring
  amplitudes. Besides a learned embedding per code, each sample contributes sine/cosine features of its decoded
  amplitude (frequencies ``pi * 2**j``), so the model starts out knowing that code 130 is close to 131.
- **Sample positions.** Fixed sinusoidal features of the sample index with periods from 2 samples up to
  ``max_seq_len`` (plus rotary angles on part of each attention head), instead of a table of learned positions.
- **Untied output head.** Logits come from their own linear layer (the input side is not a plain table), and the
  six special token ids, which never occur in audio, get a large negative logit so sampling never picks them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from perceiver.adapters.base import TokenInputAdapter
from perceiver.config_checks import ConfigError
from perceiver.core.attention import Rotary
from perceiver.core.position import RotaryEmbedding
from perceiver.data.tokenizer import NUM_SPECIAL
from perceiver_audio import mulaw

VOCAB_SIZE = NUM_SPECIAL + mulaw.NUM_CODES


@dataclass
class MuLawAdapterConfig:
    """Options of the ``mulaw`` adapter. The first four fields are set by the task."""

    vocab_size: int = VOCAB_SIZE
    max_seq_len: int = 2048
    num_channels: int = 256
    num_heads: int = 4
    amplitude_bands: int = 8
    """Sine/cosine bands of the decoded sample amplitude added to the code embedding (0 turns them off)."""
    position_bands: int = 16
    """Sinusoidal bands of the sample index, periods from 2 samples to max_seq_len (0 turns them off)."""
    rotary_fraction: float = 0.5
    """Fraction of each attention head's channels rotated by rotary position embedding (0 turns it off)."""
    init_scale: float = 0.02

    def __post_init__(self):
        if self.vocab_size != VOCAB_SIZE:
            raise ConfigError(
                f"the mulaw adapter needs vocab_size {VOCAB_SIZE} (6 special + 256 codes), got {self.vocab_size}"
            )
        if self.amplitude_bands < 0 or self.position_bands < 0:
            raise ConfigError("amplitude_bands and position_bands must be >= 0")
        if not 0.0 <= self.rotary_fraction <= 1.0:
            raise ConfigError(f"rotary_fraction must be in [0, 1], got {self.rotary_fraction}")


def _sinusoids(values: Tensor, frequencies: Tensor) -> Tensor:
    """(...,) values and (F,) angular frequencies -> (..., 2F) sin/cos features."""
    angles = values[..., None].float() * frequencies
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class MuLawAdapter(TokenInputAdapter):
    """``embed(input_ids (B, N), positions (B, N)) -> (B, N, C)``, ``rotary(positions) -> (cos, sin) (B, 1, N, R)``,
    ``logits(hidden (B, M, C)) -> (B, M, vocab_size)``."""

    def __init__(self, config: MuLawAdapterConfig):
        super().__init__()
        self.config = config
        channels = config.num_channels
        self.vocab_size = config.vocab_size
        self.num_input_channels = channels
        self.code_embedding = nn.Embedding(config.vocab_size, channels)

        codes = np.arange(mulaw.NUM_CODES)
        amplitude = torch.tensor(np.concatenate([np.zeros(NUM_SPECIAL, np.float32), mulaw.decode(codes)]))
        self.register_buffer("amplitude_table", amplitude, persistent=False)
        amplitude_freqs = math.pi * 2.0 ** torch.arange(config.amplitude_bands).float()
        self.register_buffer("amplitude_freqs", amplitude_freqs, persistent=False)
        self.amplitude_proj = nn.Linear(1 + 2 * config.amplitude_bands, channels)

        periods = torch.logspace(1.0, math.log2(max(config.max_seq_len, 2)), config.position_bands, base=2.0)
        self.register_buffer("position_freqs", 2 * math.pi / periods, persistent=False)
        self.position_proj = None
        if config.position_bands:
            self.position_proj = nn.Linear(2 * config.position_bands, channels, bias=False)

        head_dim = channels // config.num_heads
        self.num_rotary_channels = int(head_dim * config.rotary_fraction) // 2 * 2
        self.rotary_embedding = RotaryEmbedding(self.num_rotary_channels) if self.num_rotary_channels else None

        self.head = nn.Linear(channels, config.vocab_size)
        special = torch.zeros(config.vocab_size, dtype=torch.bool)
        special[:NUM_SPECIAL] = True
        self.register_buffer("special", special, persistent=False)

        for module in (self.code_embedding, self.amplitude_proj, self.position_proj, self.head):
            if module is not None:
                nn.init.normal_(module.weight, std=config.init_scale)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    def amplitudes(self, input_ids: Tensor) -> Tensor:
        """(B, N) token ids -> (B, N) decoded amplitudes in [-1, 1] (0 for special tokens)."""
        return self.amplitude_table[input_ids]

    def embed(self, input_ids: Tensor, positions: Tensor) -> Tensor:
        x = self.code_embedding(input_ids)
        amplitude = self.amplitudes(input_ids)
        features = torch.cat([amplitude[..., None], _sinusoids(amplitude, self.amplitude_freqs)], dim=-1)
        x = x + self.amplitude_proj(features.to(x.dtype))
        if self.position_proj is not None:
            x = x + self.position_proj(_sinusoids(positions, self.position_freqs).to(x.dtype))
        return x

    def rotary(self, positions: Tensor) -> Optional[Rotary]:
        return self.rotary_embedding(positions) if self.rotary_embedding is not None else None

    def logits(self, hidden: Tensor) -> Tensor:
        logits = self.head(hidden)
        return logits.masked_fill(self.special, torch.finfo(logits.dtype).min / 2)
