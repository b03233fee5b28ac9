"""Deterministic synthesized audio: tones, chords and chirps. NumPy only, no files, no downloads.

Clip ``i`` of a corpus is a pure function of ``(seed, i, sample_rate, seconds, kinds)``, so train and validation
clips never change when other options (e.g. the number of clips) do.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

KINDS = ("tone", "chord", "chirp")
TRIADS = ((0, 4, 7), (0, 3, 7), (0, 5, 7))  # major, minor, suspended


def midi_to_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69.0) / 12.0)


def envelope(num_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Attack-decay-sustain-release envelope with random times (peak 1)."""
    t = np.arange(num_samples) / sample_rate
    duration = num_samples / sample_rate
    attack = rng.uniform(0.005, 0.05)
    decay = rng.uniform(0.05, 0.2)
    sustain = rng.uniform(0.4, 0.9)
    release = rng.uniform(0.05, 0.25) * duration
    env = np.interp(t, [0.0, attack, attack + decay, max(attack + decay, duration - release), duration],
                    [0.0, 1.0, sustain, sustain, 0.0])
    return env


def _harmonics(phase: np.ndarray, num_harmonics: int, rolloff: float) -> np.ndarray:
    """Sum of the first harmonics of a phase track (radians), amplitude 1/k**rolloff."""
    return sum(np.sin(k * phase) / k**rolloff for k in range(1, num_harmonics + 1))


def tone(num_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One note (MIDI 45-81) with a few harmonics and slight vibrato."""
    t = np.arange(num_samples) / sample_rate
    freq = midi_to_hz(rng.integers(45, 82))
    vibrato = 1.0 + rng.uniform(0.0, 0.006) * np.sin(2 * np.pi * rng.uniform(4.0, 7.0) * t)
    phase = 2 * np.pi * np.cumsum(freq * vibrato) / sample_rate
    return _harmonics(phase, int(rng.integers(1, 5)), rng.uniform(1.0, 2.0))


def chord(num_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A major, minor or suspended triad on a root between MIDI 45 and 69."""
    t = np.arange(num_samples) / sample_rate
    root = int(rng.integers(45, 70))
    harmonics, rolloff = int(rng.integers(1, 4)), rng.uniform(1.0, 2.0)
    triad = TRIADS[int(rng.integers(len(TRIADS)))]
    return sum(_harmonics(2 * np.pi * midi_to_hz(root + step) * t, harmonics, rolloff) for step in triad) / 3.0


def chirp(num_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """An exponential sweep between two frequencies in 100 Hz .. sample_rate / 4."""
    duration = num_samples / sample_rate
    t = np.arange(num_samples) / sample_rate
    low, high = 100.0, sample_rate / 4.0
    f0, f1 = np.exp(rng.uniform(np.log(low), np.log(high), size=2))
    if abs(np.log(f1 / f0)) < 1e-3:
        return np.sin(2 * np.pi * f0 * t)
    rate = np.log(f1 / f0) / duration
    return np.sin(2 * np.pi * f0 * np.expm1(rate * t) / rate)


GENERATORS = {"tone": tone, "chord": chord, "chirp": chirp}


def parse_kinds(kinds: str) -> Sequence[str]:
    names = [k.strip() for k in kinds.split(",") if k.strip()]
    unknown = [k for k in names if k not in GENERATORS]
    if unknown or not names:
        raise ValueError(f"unknown clip kind(s) {', '.join(unknown) or '(none given)'}; kinds are {', '.join(KINDS)}")
    return names


def clip(index: int, sample_rate: int = 8000, seconds: float = 1.0, kinds: Sequence[str] = KINDS, seed: int = 0,
         kind: str = None) -> np.ndarray:
    """Clip ``index`` of the corpus: float32 amplitudes, peak in [0.3, 0.9], with an envelope."""
    rng = np.random.default_rng([seed, index])
    kind = kind or kinds[int(rng.integers(len(kinds)))]
    num_samples = max(1, int(round(seconds * sample_rate)))
    wave = GENERATORS[kind](num_samples, sample_rate, rng) * envelope(num_samples, sample_rate, rng)
    peak = float(np.abs(wave).max()) or 1.0
    return (wave / peak * rng.uniform(0.3, 0.9)).astype(np.float32)


def is_validation(index: int, val_fraction: float) -> bool:
    """Every k-th clip (k = 1 / val_fraction) is held out for validation."""
    return index % max(2, round(1.0 / val_fraction)) == 0
