"""Seconds per training step (forward + backward) of a clm preset in fp32 and under CPU bf16 autocast, side by side.

    python bench/precision_step.py [--model clm-small] [--batch-size 16] [--rounds 2]

On a CPU whose bf16 matrix products are slow (no AMX), bf16-mixed training can be many times slower than fp32.
"""

from __future__ import annotations

import argparse
import time

import torch

from perceiver import registry
from perceiver.tasks.clm import CausalLanguageModel, CausalLanguageModelConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="clm-small")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    config = CausalLanguageModelConfig(**registry.get("model", args.model).load())
    torch.manual_seed(0)
    model = CausalLanguageModel(config).train()
    ids = torch.randint(6, 262, (args.batch_size, config.max_seq_len))
    prefix_len = config.max_seq_len - config.max_latents

    def step(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(ids, prefix_len)
        logits.float().logsumexp(-1).mean().backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    step(False), step(True)  # warm-up
    times = {"fp32": [], "bf16-mixed": []}
    for _ in range(args.rounds):  # alternate, so that both see the same machine
        times["fp32"].append(step(False))
        times["bf16-mixed"].append(step(True))
    fp32, bf16 = min(times["fp32"]), min(times["bf16-mixed"])
    print(f"{args.model} batch {args.batch_size}, {torch.get_num_threads()} threads: fp32 {fp32:.2f} s/step, "
          f"bf16-mixed {bf16:.2f} s/step ({bf16 / fp32:.1f}x fp32)")


if __name__ == "__main__":
    main()
