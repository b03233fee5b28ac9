"""Reading and writing WAV files with the standard library ``wave`` module (PCM 8/16/24/32-bit)."""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Tuple, Union

import numpy as np


class WavError(ValueError):
    """A file that is not a PCM WAV file this module can read."""


def write_wav(path: Union[str, Path], waveform: np.ndarray, sample_rate: int) -> Path:
    """Write a mono waveform (amplitudes in [-1, 1]) as 16-bit PCM, atomically (an interrupted write leaves any
    earlier file at ``path`` intact)."""
    from perceiver.files import atomic_write_file

    pcm = (np.clip(np.asarray(waveform, dtype=np.float64), -1.0, 1.0) * 32767.0).round().astype("<i2")

    def write(tmp: Path) -> None:
        with wave.open(str(tmp), "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(int(sample_rate))
            f.writeframes(pcm.tobytes())

    return atomic_write_file(path, write)


def read_wav(path: Union[str, Path]) -> Tuple[np.ndarray, int]:
    """A WAV file -> (mono float32 waveform in [-1, 1], sample rate). Channels are averaged."""
    try:
        with wave.open(str(path), "rb") as f:
            channels, width, rate = f.getnchannels(), f.getsampwidth(), f.getframerate()
            frames = f.readframes(f.getnframes())
    except (wave.Error, EOFError) as error:
        raise WavError(f"{path}: not a PCM WAV file ({error})") from None
    if width == 1:
        samples = (np.frombuffer(frames, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        samples = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        raw = np.frombuffer(frames, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        value = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        samples = np.where(value >= 1 << 23, value - (1 << 24), value).astype(np.float32) / float(1 << 23)
    elif width == 4:
        samples = np.frombuffer(frames, dtype="<i4").astype(np.float32) / float(1 << 31)
    else:
        raise WavError(f"{path}: unsupported sample width of {width} bytes")
    samples = samples[: len(samples) // channels * channels].reshape(-1, channels).mean(axis=1)
    return samples.astype(np.float32), rate


def resample(waveform: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Linear-interpolation resampling (adequate for 8-16 kHz training data; no anti-aliasing filter)."""
    if rate == target_rate or len(waveform) == 0:
        return np.asarray(waveform, dtype=np.float32)
    duration = len(waveform) / rate
    n = max(1, int(round(duration * target_rate)))
    times = np.arange(n) / target_rate
    return np.interp(times, np.arange(len(waveform)) / rate, waveform).astype(np.float32)
