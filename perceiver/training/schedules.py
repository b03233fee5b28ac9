"""Learning-rate schedules.

Written here rather than taken from ``transformers.get_cosine_with_min_lr_schedule_with_warmup`` (or torch's
``LinearLR`` + ``CosineAnnealingLR``) for two behaviours they lack, both tested in tests/test_schedules.py:
the first optimizer step trains (lr ``1 / warmup_steps`` of the base lr, where theirs is 0, a step that only moves
Adam's moments), and the lr stays at its floor after ``training_steps`` (theirs are periodic and climb back up:
a run without ``--max-steps`` guesses its length, and a resumed run may train past the old end).
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class CosineWithWarmupLR(LambdaLR):
    """Linear warmup from 0 to the base lr over ``warmup_steps``, then cosine decay to ``min_lr_ratio * lr`` at
    ``training_steps``. Step it once per optimizer step."""

    def __init__(self, optimizer: Optimizer, training_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0):
        def factor(step: int) -> float:
            if step < warmup_steps:
                return (step + 1) / warmup_steps
            progress = min(1.0, (step - warmup_steps) / max(1, training_steps - warmup_steps))
            return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

        super().__init__(optimizer, factor)


class ConstantWithWarmupLR(LambdaLR):
    """Linear warmup over ``warmup_steps``, then the base lr."""

    def __init__(self, optimizer: Optimizer, warmup_steps: int = 0):
        super().__init__(optimizer, lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0)
