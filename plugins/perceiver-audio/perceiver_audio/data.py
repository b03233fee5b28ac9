"""Audio data sets: waveforms -> mu-law codes -> training windows of ``max_seq_len + 1`` tokens.

Windows and batches are perceiver's own (:mod:`perceiver.data.corpus`): ``RandomWindowDataset`` for training,
``FixedWindowDataset`` for validation, ``collate_windows`` -> ``(labels, input_ids, pad_mask)``; token id =
code + ``NUM_SPECIAL``. Clips are joined with a short silence, the audio analogue of a blank line between documents.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader

from perceiver.data import config_from
from perceiver.data.corpus import DataError, FixedWindowDataset, RandomWindowDataset, collate_windows
from perceiver_audio import mulaw, synth
from perceiver_audio.wav import WavError, read_wav, resample

GAP_SECONDS = 0.05


@dataclass
class AudioDataConfig:
    max_seq_len: int = 2048
    """Window length in samples; set from the model's max_seq_len by the trainer."""
    batch_size: int = 16
    min_seq_len: int = 64
    """Shortest training window when a window is truncated."""
    random_train_truncation: float = 0.25
    """Probability that a training window is cut to a random length (0 = always full windows)."""
    sample_rate: int = 8000
    """Samples per second of the training audio (WAV files are resampled to it)."""
    val_fraction: float = 0.1
    """Share of clips (or files) held out for validation."""
    num_workers: int = 0
    seed: int = 0
    """Seed of the training window sampler (set from the trainer's seed)."""

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.sample_rate < 100:
            raise ValueError(f"sample_rate must be >= 100, got {self.sample_rate}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0.0 <= self.random_train_truncation <= 1.0:
            raise ValueError(f"random_train_truncation must be in [0, 1], got {self.random_train_truncation}")


@dataclass
class SynthAudioDataConfig(AudioDataConfig):
    num_clips: int = 400
    """Number of synthesized clips (train + validation)."""
    clip_seconds: float = 1.0
    kinds: str = "tone,chord,chirp"
    """Comma-separated clip kinds: tone, chord, chirp."""
    corpus_seed: int = 0
    """Seed of the synthesized clips (independent of the training seed)."""

    def __post_init__(self):
        super().__post_init__()
        if self.num_clips < 2:
            raise ValueError(f"num_clips must be >= 2 (train and validation), got {self.num_clips}")
        if self.clip_seconds <= 0:
            raise ValueError(f"clip_seconds must be > 0, got {self.clip_seconds}")
        synth.parse_kinds(self.kinds)


@dataclass
class WavDataConfig(AudioDataConfig):
    data_path: Optional[str] = None
    """A .wav file or a directory of .wav files (searched recursively)."""


class AudioDataModule(pl.LightningDataModule):
    """Base of the audio data modules; subclasses yield float waveforms per split (``waveforms(split)``)."""

    config_class = AudioDataConfig

    def __init__(self, config: Optional[AudioDataConfig] = None, **overrides):
        super().__init__()
        self.config = config_from(self.config_class, config, overrides)
        self.train_set: Optional[RandomWindowDataset] = None
        self.val_set: Optional[FixedWindowDataset] = None

    def waveforms(self, split: str) -> Iterable[np.ndarray]:
        raise NotImplementedError

    def codes(self, split: str) -> np.ndarray:
        """All waveforms of ``split`` as one uint8 array of mu-law codes, clips separated by silence."""
        gap = np.full(int(GAP_SECONDS * self.config.sample_rate), mulaw.SILENCE, dtype=np.uint8)
        parts: List[np.ndarray] = []
        for waveform in self.waveforms(split):
            if parts:
                parts.append(gap)
            parts.append(mulaw.encode(waveform))
        if not parts:
            raise DataError(f"the {split} split holds no audio")
        return np.concatenate(parts)

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is not None:
            return
        cfg = self.config
        self.train_set = RandomWindowDataset(
            self.codes("train"), cfg.max_seq_len, min_seq_len=cfg.min_seq_len,
            truncation_prob=cfg.random_train_truncation, seed=cfg.seed,
        )
        self.val_set = FixedWindowDataset(self.codes("val"), cfg.max_seq_len)

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset, batch_size=self.config.batch_size, shuffle=shuffle, collate_fn=collate_windows,
            num_workers=self.config.num_workers, persistent_workers=self.config.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.val_set, shuffle=False)


class SynthAudioDataModule(AudioDataModule):
    """Synthesized tones, chords and chirps; every k-th clip is validation (k = 1 / val_fraction)."""

    config_class = SynthAudioDataConfig

    def waveforms(self, split: str) -> Iterable[np.ndarray]:
        cfg = self.config
        kinds = synth.parse_kinds(cfg.kinds)
        for index in range(cfg.num_clips):
            if synth.is_validation(index, cfg.val_fraction) == (split == "val"):
                yield synth.clip(index, cfg.sample_rate, cfg.clip_seconds, kinds, cfg.corpus_seed)


class WavDataModule(AudioDataModule):
    """Your own recordings: a .wav file (split by time) or a directory of .wav files (split by file)."""

    config_class = WavDataConfig

    def files(self) -> List[Path]:
        if not self.config.data_path:
            raise DataError("data set 'wav' needs --data-path FILE_OR_DIR")
        path = Path(self.config.data_path).expanduser()
        if not path.exists():
            raise DataError(f"data path {str(path)!r} does not exist")
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*.wav") if p.is_file())
        if not files:
            raise DataError(f"data path {str(path)!r} holds no .wav files")
        return files

    def _read(self, path: Path) -> np.ndarray:
        try:
            waveform, rate = read_wav(path)
        except WavError as error:
            raise DataError(str(error)) from None
        return resample(waveform, rate, self.config.sample_rate)

    def waveforms(self, split: str) -> Iterable[np.ndarray]:
        files = self.files()
        if len(files) == 1:
            waveform = self._read(files[0])
            cut = min(max(int(len(waveform) * (1 - self.config.val_fraction)), 1), max(len(waveform) - 1, 1))
            yield waveform[:cut] if split == "train" else waveform[cut:]
            return
        num_val = max(1, round(len(files) * self.config.val_fraction))
        for path in files[-num_val:] if split == "val" else files[:-num_val]:
            yield self._read(path)
