"""Token corpora cached on disk, and the windows that training and validation read from them.

A corpus is prepared once into ``<cache>/<key>/``: ``train.bin`` and ``val.bin`` (flat arrays), ``train.docs.npy``
/ ``val.docs.npy`` (int64 start offset of every document) and ``meta.json``. Training reads ``np.memmap`` views and
never tokenizes again.

Byte corpora (the default) hold uint8 UTF-8 bytes, documents separated by a blank line; a byte ``b`` is token
``b + NUM_SPECIAL``. With a subword tokenizer the arrays hold its token ids (uint16 when the vocabulary fits, else
uint32), documents separated by its end-of-text token (or the ids of a blank line); ``meta.json`` records the
dtype and the offset added to every stored value (``id_offset``: ``NUM_SPECIAL`` for bytes, 0 for token ids).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

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


def id_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned dtype that holds every id of a ``vocab_size`` vocabulary."""
    return np.dtype(np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 2**16 else np.uint32)


class CorpusEncoding:
    """How documents become stored values: UTF-8 bytes (``tokenizer`` None or the byte tokenizer), or the ids of a
    subword tokenizer."""

    def __init__(self, tokenizer: Any = None):
        from perceiver.data.tokenizer import ByteTokenizer

        self.tokenizer = None if tokenizer is None or isinstance(tokenizer, ByteTokenizer) else tokenizer
        if self.tokenizer is None:
            self.dtype, self.id_offset, self.unit = np.dtype(np.uint8), NUM_SPECIAL, "bytes"
            self.separator = np.frombuffer(SEPARATOR, dtype=np.uint8)
        else:
            self.dtype, self.id_offset, self.unit = id_dtype(self.tokenizer.vocab_size), 0, "tokens"
            eos = getattr(self.tokenizer, "eos_token_id", None)
            self.separator = np.asarray([eos] if eos is not None else self.tokenizer.encode("\n\n"), self.dtype)

    def values(self, document: Union[str, bytes]) -> np.ndarray:
        """The stored values of one document (empty for a blank one)."""
        data = document.encode("utf-8", errors="replace") if isinstance(document, str) else bytes(document)
        if not data.strip():
            return np.zeros(0, self.dtype)
        if self.tokenizer is None:
            return np.frombuffer(data, dtype=np.uint8)
        return np.asarray(self.tokenizer.encode(data.decode("utf-8", errors="replace")), dtype=self.dtype)


def _write_split(directory: Path, split: str, documents: Iterable[Union[str, bytes]],
                 encoding: CorpusEncoding) -> Dict[str, int]:
    offsets: List[int] = []
    position = 0
    with open(directory / f"{split}.bin", "wb") as f:
        for doc in documents:
            values = encoding.values(doc)
            if not len(values):
                continue
            if offsets:
                f.write(encoding.separator.tobytes())
                position += len(encoding.separator)
            offsets.append(position)
            f.write(values.tobytes())
            position += len(values)
    np.save(directory / f"{split}.docs.npy", np.asarray(offsets, dtype=np.int64))
    return {"documents": len(offsets), encoding.unit: position}


def prepare_corpus(
    directory: Path, splits: Dict[str, Callable[[], Iterable[Union[str, bytes]]]], description: str = "",
    tokenizer: Any = None,
) -> Path:
    """Write each split's documents to ``directory`` unless it is already complete, as bytes or as the ids of
    ``tokenizer`` (:class:`CorpusEncoding`). Atomic: a killed run leaves no half-written cache behind."""
    if (directory / "meta.json").exists():
        return directory
    from perceiver.files import replace_directory

    encoding = CorpusEncoding(tokenizer)

    def write(tmp: Path) -> None:
        stats = {split: _write_split(tmp, split, make_docs(), encoding) for split, make_docs in splits.items()}
        for split, facts in stats.items():
            if facts[encoding.unit] == 0:
                raise DataError(f"{description or directory.name}: the {split} split is empty")
        meta = {"description": description, "splits": stats, "dtype": encoding.dtype.name,
                "id_offset": encoding.id_offset}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))

    try:
        replace_directory(directory, write, kind="perceiver data cache", force_hint="remove it")
    except OSError:  # another process finished first
        if not (directory / "meta.json").exists():
            raise
    return directory


def _meta(directory: Path) -> Dict[str, Any]:
    try:
        return json.loads((directory / "meta.json").read_text())
    except (OSError, ValueError):
        return {}


def open_split(directory: Path, split: str) -> np.ndarray:
    """The stored values of a split, as a read-only memory map of the corpus's dtype."""
    dtype = np.dtype(_meta(directory).get("dtype", "uint8"))
    return np.memmap(directory / f"{split}.bin", dtype=dtype, mode="r")


def id_offset(directory: Path) -> int:
    """What is added to a stored value to give its token id (``NUM_SPECIAL`` for bytes)."""
    return int(_meta(directory).get("id_offset", NUM_SPECIAL))


def _to_ids(window: np.ndarray, offset: int = NUM_SPECIAL) -> torch.Tensor:
    return torch.from_numpy(window.astype(np.int64) + offset)


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
        id_offset: int = NUM_SPECIAL,
    ):
        if len(data) < 2:
            raise DataError("training data has fewer than 2 tokens")
        self.data = data
        self.id_offset = id_offset
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
        return _to_ids(np.asarray(self.data[start + window_len - length : start + window_len]), self.id_offset)


class FixedWindowDataset(Dataset):
    """Validation windows: consecutive, non-overlapping ``max_seq_len + 1`` token slices (the last may be shorter)."""

    def __init__(self, data: np.ndarray, max_seq_len: int, id_offset: int = NUM_SPECIAL):
        if len(data) < 2:
            raise DataError("validation data has fewer than 2 tokens")
        self.data = data
        self.id_offset = id_offset
        self.max_seq_len = max_seq_len
        self.num_windows = max(1, (len(data) - 1) // max_seq_len)

    def __len__(self) -> int:
        return self.num_windows

    def __getitem__(self, index: int) -> torch.Tensor:
        start = index * self.max_seq_len
        return _to_ids(np.asarray(self.data[start : start + self.max_seq_len + 1]), self.id_offset)


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
