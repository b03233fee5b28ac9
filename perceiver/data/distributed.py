"""Samplers that split data between the processes of a distributed run, for any map-style data set.

Both are :class:`~torch.utils.data.DistributedSampler` subclasses, so Lightning uses them as they are instead of
injecting its own sampler. Rank and world size come from ``torch.distributed`` when it is initialised (Lightning
builds the data loaders after that), else the run is one process.

- :class:`FreshItemSampler` (training, for data sets whose every index is a new random draw, like
  :class:`~perceiver.data.corpus.RandomWindowDataset`): epoch ``e`` yields the global indices
  ``e * T ... (e + 1) * T - 1`` (``T`` = ``len(dataset)`` rounded up to a multiple of the world size), rank ``r``
  takes every ``world``-th one starting at ``r``. No index is drawn twice, by any rank, in any epoch; the epoch is
  part of the index, so it reaches data loader workers too; and at every step the ranks together read exactly the
  items one process with the same global batch size would read. A run bounded by ``max_steps`` reads the indices
  ``0, 1, 2, ...`` in one pass instead, and a resumed run starts where its checkpoint stopped
  (:func:`training_loader`, :func:`run_position`): it reads what the run would have read without the interruption.
- :class:`EvenBatchSampler` (evaluation): every item exactly once (no padding duplicates, nothing dropped), and
  every rank gets the same number of batches, because under DDP and FSDP a rank that runs one forward pass fewer
  than the others makes them wait forever. Batches are lists of indices, read by :class:`BatchedDataset`.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def rank_and_world_size() -> Tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _RankSampler(DistributedSampler):
    def __init__(self, dataset: Dataset, num_replicas: Optional[int] = None, rank: Optional[int] = None, seed: int = 0):
        default_rank, default_world = rank_and_world_size()
        num_replicas = default_world if num_replicas is None else num_replicas
        rank = default_rank if rank is None else rank
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, seed=seed)


class FreshItemSampler(_RankSampler):
    """Training indices for data sets whose item ``i`` is a pure function of ``(seed, i)`` for every ``i >= 0``.

    By default one epoch per ``iter``, as described in the module docstring. With ``num_samples`` (this rank's items
    in the whole run) it is one pass over the global indices ``0, 1, 2, ...`` that ignores the epoch, and skips the
    first ``start`` of this rank's items: a run resumed after ``k`` batches of ``B`` passes ``start = k * B``.
    ``len`` is the whole pass in both cases, as Lightning expects of a loader that resumes mid-epoch.
    """

    def __init__(
        self, dataset: Dataset, num_replicas: Optional[int] = None, rank: Optional[int] = None,
        num_samples: Optional[int] = None, start: int = 0,
    ):
        super().__init__(dataset, num_replicas, rank)
        self.one_pass = num_samples is not None
        if num_samples is None:
            if start:
                raise ValueError("start needs num_samples (one pass over the run)")
            num_samples = math.ceil(len(dataset) / self.num_replicas)
        self.per_epoch = num_samples * self.num_replicas
        self.num_samples = num_samples
        self.start = min(start, num_samples)

    def __iter__(self) -> Iterator[int]:
        first = 0 if self.one_pass else self.epoch * self.per_epoch
        return iter(range(first + self.start * self.num_replicas + self.rank, first + self.per_epoch,
                          self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


def even_batches(num_items: int, batch_size: int, world_size: int) -> List[List[range]]:
    """Split ``range(num_items)`` into the same number of contiguous batches for every rank: ``result[rank][j]``.

    Batches hold at most ``batch_size`` items (``batch_size == 1`` with a world size that does not divide the
    number of items needs some batches of 2). Global batch ``j * world_size + rank`` goes to ``rank``, so the first
    batches of all ranks together cover the start of the data set.
    """
    if num_items < world_size:
        raise ValueError(
            f"the evaluation data has {num_items} item(s), fewer than the {world_size} processes: "
            "use fewer devices or more validation data"
        )
    per_rank = min(math.ceil(num_items / (world_size * batch_size)), num_items // world_size)
    slots = per_rank * world_size
    small, extra = divmod(num_items, slots)
    bounds = [0]
    for k in range(slots):
        bounds.append(bounds[-1] + small + (k < extra))
    batches = [range(bounds[k], bounds[k + 1]) for k in range(slots)]
    return [batches[rank::world_size] for rank in range(world_size)]


class EvenBatchSampler(_RankSampler):
    """Yields this rank's evaluation batches (lists of indices); see :func:`even_batches`."""

    def __init__(
        self, dataset: Dataset, batch_size: int, num_replicas: Optional[int] = None, rank: Optional[int] = None
    ):
        super().__init__(dataset, num_replicas, rank)
        self.batches = even_batches(len(dataset), batch_size, self.num_replicas)[self.rank]
        self.num_samples = len(self.batches)

    def __iter__(self) -> Iterator[List[int]]:
        return (list(batch) for batch in self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class BatchedDataset(Dataset):
    """``dataset[list of indices]`` -> ``collate_fn([items])``: one batch per item, for :class:`EvenBatchSampler`."""

    def __init__(self, dataset: Dataset, collate_fn: Callable[[list], object]):
        self.dataset = dataset
        self.collate_fn = collate_fn

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: Sequence[int]):
        return self.collate_fn([self.dataset[i] for i in indices])


def _unbatched(batch):
    return batch


def evaluation_loader(
    dataset: Dataset, batch_size: int, collate_fn: Callable[[list], object], num_workers: int = 0
) -> DataLoader:
    """A validation/test loader that is exact under DDP and FSDP (:class:`EvenBatchSampler`)."""
    return DataLoader(
        BatchedDataset(dataset, collate_fn),
        batch_size=None,
        sampler=EvenBatchSampler(dataset, batch_size),
        collate_fn=_unbatched,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def training_loader(
    dataset: Dataset, batch_size: int, collate_fn: Callable[[list], object], num_workers: int = 0,
    num_batches: Optional[int] = None, start_batch: int = 0,
) -> DataLoader:
    """A training loader over a data set of fresh random items (:class:`FreshItemSampler`): by epochs, or with
    ``num_batches`` (per rank, for the whole run) one pass that begins after ``start_batch`` batches."""
    sampler = FreshItemSampler(
        dataset,
        num_samples=None if num_batches is None else num_batches * batch_size,
        start=start_batch * batch_size,
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate_fn,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def run_position(trainer) -> Tuple[Optional[int], int]:
    """For a Lightning run bounded by ``max_steps``: ``(batches per rank in the whole run, batches read before it
    started)`` (non-zero when it resumed from a checkpoint); ``(None, 0)`` without a trainer or ``max_steps``.
    Lightning restores ``global_step`` before it asks the data module for its training loader."""
    max_steps = getattr(trainer, "max_steps", None)
    if max_steps is None or max_steps < 1:
        return None, 0
    accumulate = trainer.accumulate_grad_batches
    return max_steps * accumulate, trainer.global_step * accumulate
