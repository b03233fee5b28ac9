"""Time of a clm training step with and without activation checkpointing, on the same model and batches.

    python bench/activation_checkpointing.py                      # clm-small, batch 8, 5 rounds, CPU
    python bench/activation_checkpointing.py --preset clm-30m --batch-size 2 --rounds 3

Each round times one step of each setting, alternating (so that a change in the machine's load hits both), after
one warm-up step of each. A step is zero_grad + forward (prefix dropout as configured) + cross-entropy over the
latents + backward + Adam. Prints the median seconds per step of each setting and their ratio. Timings are only
meaningful on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from perceiver import registry
from perceiver.core.layers import set_activation_checkpointing
from perceiver.tasks.clm import CausalLanguageModel, CausalLanguageModelConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="clm-small")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = CausalLanguageModelConfig(**registry.get("model", args.preset).load())
    model = CausalLanguageModel(config).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    ids = torch.randint(6, config.vocab_size, (args.batch_size, config.max_seq_len + 1))
    inputs, labels = ids[:, :-1], ids[:, -config.max_latents:]

    def step(checkpointing: bool) -> float:
        set_activation_checkpointing(model, checkpointing)
        start = time.perf_counter()
        optimizer.zero_grad()
        logits = model(inputs, prefix_len=config.max_seq_len - config.max_latents)
        F.cross_entropy(logits.transpose(1, 2), labels).backward()
        optimizer.step()
        return time.perf_counter() - start

    step(False), step(True)  # warm-up
    times = {False: [], True: []}
    for _ in range(args.rounds):
        for checkpointing in (False, True):
            times[checkpointing].append(step(checkpointing))
    plain, recomputed = statistics.median(times[False]), statistics.median(times[True])
    print(f"{args.preset}, batch {args.batch_size}, {torch.get_num_threads()} threads, {args.rounds} rounds")
    print(f"without activation checkpointing: {plain:.3f} s/step")
    print(f"with activation checkpointing:    {recomputed:.3f} s/step ({recomputed / plain - 1:+.0%})")


if __name__ == "__main__":
    main()
