"""8-bit mu-law companding (ITU-T G.711 style, continuous form): amplitudes in [-1, 1] <-> codes 0..255.

Quiet samples get finer steps than loud ones, so 256 levels are enough for intelligible audio. NumPy only.
Token ids are codes + ``perceiver.data.tokenizer.NUM_SPECIAL`` (the 6 special ids come first, as for bytes).
"""

from __future__ import annotations

import numpy as np

MU = 255
NUM_CODES = MU + 1
SILENCE = 128
"""The code of amplitude 0."""


def encode(waveform: np.ndarray) -> np.ndarray:
    """Amplitudes (any shape, clipped to [-1, 1]) -> uint8 codes."""
    x = np.clip(np.asarray(waveform, dtype=np.float64), -1.0, 1.0)
    companded = np.sign(x) * np.log1p(MU * np.abs(x)) / np.log1p(MU)  # [-1, 1]
    return np.clip(np.floor((companded + 1.0) / 2.0 * MU + 0.5), 0, MU).astype(np.uint8)


def decode(codes: np.ndarray) -> np.ndarray:
    """Codes 0..255 -> float32 amplitudes in [-1, 1]."""
    companded = np.asarray(codes, dtype=np.float64) / MU * 2.0 - 1.0
    return (np.sign(companded) * np.expm1(np.abs(companded) * np.log1p(MU)) / MU).astype(np.float32)
