"""The learning-rate schedules: warmup that trains from the first step, cosine decay to a floor that holds."""

import math

import pytest
import torch

from perceiver.training.schedules import ConstantWithWarmupLR, CosineWithWarmupLR


def learning_rates(scheduler, steps):
    rates = []
    for _ in range(steps):
        rates.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return rates


def optimizer():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def test_cosine_warms_up_from_the_first_step_decays_to_the_floor_and_holds_it():
    rates = learning_rates(CosineWithWarmupLR(optimizer(), training_steps=10, warmup_steps=4, min_lr_ratio=0.1), 16)
    assert rates[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # the first step trains
    assert rates[5] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 6)))
    assert all(a > b for a, b in zip(rates[4:10], rates[5:11]))
    assert rates[10:] == pytest.approx([0.1] * 6)  # past training_steps the floor holds


def test_constant_warms_up_then_holds_the_base_lr():
    assert learning_rates(ConstantWithWarmupLR(optimizer(), warmup_steps=2), 5) == pytest.approx([0.5, 1, 1, 1, 1])
    assert learning_rates(ConstantWithWarmupLR(optimizer(), warmup_steps=0), 2) == pytest.approx([1, 1])
