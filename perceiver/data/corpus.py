"""Byte corpora cached on disk, and the windows that training and validation read from them.

A corpus is prepared once into ``<cache>/<key>/``: ``train.bin`` and ``val.bin`` (flat uint8 arrays of UTF-8
bytes, documents separated by a blank line), ``train.docs.npy`` / ``val.docs.npy`` (int64 start offset of every
document) and ``meta.json``. Training reads ``np.memmap`` views and never tokenizes again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from perceiver.data.tokenizer import NUM_SPECIAL, PAD_ID

SEPARATOR = b"\n\n"
CACHE_VERSION = 1


class DataError(ValueError):
    """Missing, empty or unreadable data."""


def cache_root(cache_dir: Optional[str] = None) -> Path:
    root = cache_dir or os.environ.get("PERCEIVER_CACHE_DIR") or Path.home() / ".cache" / "perceiver" / "data"
    return Path(root)


def cache_key(name: str, **facts) -> str:
    digest = hashlib.sha256(json.dumps({"v": CACHE_VERSION, **facts}, sort_keys=True, default=str).encode())
    return f"{name}-{digest.hexdigest()[:12]}"


def _write_split(directory: Path, split: str, documents: Iterable[Union[str, bytes]]) -> Dict[str, int]:
    offsets = []
    position = 0
    with open(directory / f"{split}.bin", "wb") as f:
        for doc in documents:
            data = doc.encode("utf-8", errors="replace") if isinstance(doc, str) else bytes(doc)
            if not data.strip():
                continue
            if offsets:
                f.write(SEPARATOR)
                position += len(SEPARATOR)
            offsets.append(position)
            f.write(data)
            position += len(data)
    np.save(directory / f"{split}.docs.npy", np.asarray(offsets, dtype=np.int64))
    return {"documents": len(offsets), "bytes": position}


def prepare_corpus(
    directory: Path, splits: Dict[str, Callable[[], Iterable[Union[str, bytes]]]], description: str = ""
) -> Path:
    """Write each split's documents to ``directory`` unless it is already complete. Atomic: a killed run leaves no
    half-written cache behind."""
    if (directory / "meta.json").exists():
        return directory
    from perceiver.files import replace_directory

    def write(tmp: Path) -> None:
        stats = {split: _write_split(tmp, split, make_docs()) for split, make_docs in splits.items()}
        for split, facts in stats.items():
            if facts["bytes"] == 0:
                raise DataError(f"{description or directory.name}: the {split} split is empty")
        (tmp / "meta.json").write_text(json.dumps({"description": description, "splits": stats}, indent=2))

    try:
        replace_directory(directory, write, kind="perceiver data cache", force_hint="remove it")
    except OSError:  # another process finished first
        if not (directory / "meta.json").exists():
            raise
    return directory


def open_split(directory: Path, split: str) -> np.ndarray:
    return np.memmap(directory / f"{split}.bin", dtype=np.uint8, mode="r")


def _to_ids(window: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(window.astype(np.int64) + NUM_SPECIAL)


class RandomWindowDataset(Dataset):
    """Training windows of ``max_seq_len + 1`` tokens at random offsets (input + shifted labels).

    With probability ``truncation_prob`` a window is cut to a random length in ``[min_seq_len, max_seq_len]`` (it is
    then left-padded by :func:`collate_windows`), so the model also learns to predict from short contexts. Item
    ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``: reproducible, and distinct across ranks, which
    receive distinct indices from the distributed sampler. Indices past ``len(self)`` continue into later epochs
    (index ``e * len + i`` is item ``i`` of epoch ``e``), which is how
    :class:`~perceiver.data.distributed.FreshItemSampler` passes the epoch to data loader workers.
    """

    def __init__(
        self,
        data: np.ndarray,
        max_seq_len: int,
        min_seq_len: int = 16,
        truncation_prob: float = 0.5,
        seed: int = 0,
        num_samples: Optional[int] = None,
    ):
        if len(data) < 2:
            raise DataError("training data has fewer than 2 bytes")
        self.data = data
        self.max_seq_len = max_seq_len
        self.min_seq_len = min(min_seq_len, max_seq_len)
        self.truncation_prob = truncation_prob
        self.seed = seed
        self.epoch = 0
        self.num_samples = num_samples or max(1, len(data) // max_seq_len)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> torch.Tensor:
        epoch, index = divmod(index, self.num_samples)
        rng = np.random.default_rng([self.seed, self.epoch + epoch, index])
        window_len = min(self.max_seq_len + 1, len(self.data))
        start = int(rng.integers(0, len(self.data) - window_len + 1))
        length = window_len
        if rng.random() < self.truncation_prob:
            length = int(rng.integers(min(self.min_seq_len + 1, window_len), window_len + 1))
        return _to_ids(np.asarray(self.data[start + window_len - length : start + window_len]))


class FixedWindowDataset(Dataset):
    """Validation windows: consecutive, non-overlapping ``max_seq_len + 1`` token slices (the last may be shorter)."""

    def __init__(self, data: np.ndarray, max_seq_len: int):
        if len(data) < 2:
            raise DataError("validation data has fewer than 2 bytes")
        self.data = data
        self.max_seq_len = max_seq_len
        self.num_windows = max(1, (len(data) - 1) // max_seq_len)

    def __len__(self) -> int:
        return self.num_windows

    def __getitem__(self, index: int) -> torch.Tensor:
        start = index * self.max_seq_len
        return _to_ids(np.asarray(self.data[start : start + self.max_seq_len + 1]))


def collate_windows(windows):
    """Left-pad windows of ``L + 1`` tokens to a batch: ``(labels (B, N), input_ids (B, N), pad_mask (B, N))``
    with N = longest L; labels are -100 where there is nothing to predict."""
    length = max(len(w) for w in windows) - 1
    batch_size = len(windows)
    input_ids = torch.full((batch_size, length), PAD_ID, dtype=torch.long)
    labels = torch.full((batch_size, length), -100, dtype=torch.long)
    pad_mask = torch.ones(batch_size, length, dtype=torch.bool)
    for row, window in enumerate(windows):
        n = len(window) - 1
        input_ids[row, length - n :] = window[:-1]
        labels[row, length - n :] = window[1:]
        pad_mask[row, length - n :] = False
    return labels, input_ids, pad_mask
