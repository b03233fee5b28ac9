"""The shared part of the classification data modules (images, labelled texts): two splits of labelled examples,
a shuffled training loader, an evaluation loader that is exact under DDP and FSDP, and ``model_facts``.

Subclasses set ``config_class`` and ``class_names`` and implement ``build_datasets() -> (train, val)``; those
that batch examples of different lengths also set ``collate``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from perceiver.data import config_from
from perceiver.data.distributed import evaluation_loader


class LabelledDataModule(pl.LightningDataModule):
    """Base of the classification data modules. ``config`` needs ``batch_size``, ``num_workers`` and ``seed``."""

    name = "labelled"
    config_class: type = type(None)
    unused_options: Tuple[str, ...] = ()
    """Options of the shared config that this data set does not read (``perceiver train`` refuses them)."""
    class_names: List[str] = []
    collate: Callable[[list], Any] = staticmethod(default_collate)

    def __init__(self, config: Optional[Any] = None, **overrides: Any):
        super().__init__()
        self.config = config_from(self.config_class, config, overrides)
        self.train_set: Optional[Dataset] = None
        self.val_set: Optional[Dataset] = None

    @classmethod
    def model_facts(cls, config: Optional[Any] = None) -> Dict[str, Any]:
        """Model options this data set decides: the classes (subclasses add more)."""
        return {"num_classes": len(cls.class_names), "class_names": list(cls.class_names)}

    def build_datasets(self) -> Tuple[Dataset, Dataset]:
        raise NotImplementedError

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is None:
            self.train_set, self.val_set = self.build_datasets()

    def train_dataloader(self) -> DataLoader:
        """Shuffled, reproducibly from ``seed``; Lightning gives each rank of a distributed run its share."""
        self.setup()
        return DataLoader(
            self.train_set,
            batch_size=self.config.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(self.config.seed),
            collate_fn=self.collate,
            num_workers=self.config.num_workers,
            persistent_workers=self.config.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        """Every validation example once, split evenly between the ranks of a distributed run."""
        self.setup()
        return evaluation_loader(self.val_set, self.config.batch_size, self.collate, self.config.num_workers)
