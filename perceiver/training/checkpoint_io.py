"""How Lightning writes and reads this project's checkpoints: atomically, and without unpickling."""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from perceiver.training.signals import signals_held


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file and renames it into place (a kill mid-write leaves the previous
    checkpoint intact); loads with ``torch.load(weights_only=True)``."""

    def save_checkpoint(self, checkpoint: Dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        from perceiver.files import atomic_write_file

        with signals_held():  # Ctrl-C or SIGTERM mid-write takes effect once the file is renamed into place
            atomic_write_file(path, lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(self, path, map_location: Optional[Any] = None, weights_only: Optional[bool] = None):
        return torch.load(os.fspath(path), map_location=map_location or "cpu", weights_only=True)
