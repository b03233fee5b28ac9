"""LoRA vs full fine-tuning of a clm preset, side by side: trainable parameters, seconds per training step
(interleaved, same batches) and the bits per byte both reach on a held-out file after the same steps.

    nice python bench/lora_vs_full.py [--model clm-small] [--pretrain-steps 300] [--steps 150] [--batch-size 8]
        [--train docs] [--heldout README.md] [--lora-r 8] [--lora-alpha 16] [--lr 1e-3] [--lora-lr 3e-3]

The base model is the preset pretrained for ``--pretrain-steps`` on wikipedia-offline; both fine-tunings start from
it and read the same windows of ``--train`` (a file or a directory of .md/.txt files); ``--heldout`` is never
trained on. LoRA goes on every attention projection and MLP layer (q, k, v, o, fc1, fc2), as ``--lora-targets``'
default does.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path

import numpy as np
import torch

from perceiver import registry
from perceiver.data.corpus import FixedWindowDataset, RandomWindowDataset, collate_windows
from perceiver.tasks.clm import CausalLanguageModel, CausalLanguageModelConfig, batch_metrics

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"]


def text_bytes(path: Path) -> np.ndarray:
    files = sorted(p for p in path.rglob("*") if p.suffix in (".md", ".txt")) if path.is_dir() else [path]
    return np.frombuffer(b"\n\n".join(p.read_bytes() for p in files), dtype=np.uint8)


def batches(data: np.ndarray, seq_len: int, batch_size: int, seed: int):
    windows = RandomWindowDataset(data, seq_len, seed=seed)
    index = 0
    while True:
        yield collate_windows([windows[index + i] for i in range(batch_size)])
        index += batch_size


@torch.no_grad()
def bits_per_byte(model, data: np.ndarray, seq_len: int, batch_size: int) -> float:
    model.eval()
    windows = FixedWindowDataset(data, seq_len)
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        out = batch_metrics(model, collate_windows([windows[i] for i in range(start, min(start + batch_size,
                                                                                              len(windows)))]))
        total += float(out["loss"]) * float(out["count"])
        count += float(out["count"])
    model.train()
    return total / count / math.log(2)


def train_step(model, optimizer, batch) -> float:
    start = time.perf_counter()
    loss = batch_metrics(model, batch)["loss"]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="clm-small")
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--train", type=Path, default=Path("docs"))
    parser.add_argument("--heldout", type=Path, default=Path("README.md"))
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--lora-alpha", type=float, default=16.0)
    parser.add_argument("--lr", type=float, default=1e-3, help="Learning rate of full fine-tuning.")
    parser.add_argument("--lora-lr", type=float, default=3e-3, help="Learning rate of the LoRA weights.")
    args = parser.parse_args()
    import peft

    torch.manual_seed(0)
    config = CausalLanguageModelConfig(**registry.get("model", args.model).load())
    seq_len = config.max_seq_len
    base = CausalLanguageModel(config).train()
    wiki = registry.get("dataset", "wikipedia-offline").load()(max_seq_len=seq_len)
    wiki.setup()
    pretrain = torch.optim.AdamW(base.parameters(), lr=1e-3)
    for step, batch in zip(range(args.pretrain_steps), batches(np.asarray(wiki.train_set.data), seq_len,
                                                                args.batch_size, seed=1)):
        train_step(base, pretrain, batch)
    train, heldout = text_bytes(args.train), text_bytes(args.heldout)

    full = copy.deepcopy(base)
    lora = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha,
                                                                    target_modules=TARGETS))
    runs = {
        "full": (full, torch.optim.AdamW(full.parameters(), lr=args.lr)),
        "lora": (lora, torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=args.lora_lr)),
    }
    times = {name: [] for name in runs}
    for step, batch in zip(range(args.steps), batches(train, seq_len, args.batch_size, seed=2)):
        for name in (("full", "lora") if step % 2 == 0 else ("lora", "full")):  # interleaved, same batch
            times[name].append(train_step(*runs[name], batch))

    print(f"{args.model}: pretrained {args.pretrain_steps} steps on wikipedia-offline; fine-tuned {args.steps} "
          f"steps of batch {args.batch_size} x {seq_len} bytes on {args.train} ({len(train):,} bytes); held out: "
          f"{args.heldout} ({len(heldout):,} bytes); threads {torch.get_num_threads()}")
    print(f"base: held-out bpb {bits_per_byte(base, heldout, seq_len, args.batch_size):.4f}")
    for name, (model, _) in runs.items():
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        median = float(np.median(times[name][2:]))  # the first steps warm up
        lr = args.lr if name == "full" else args.lora_lr
        print(f"{name}: trainable {trainable:,} parameters; {median * 1000:.1f} ms/step (median); lr {lr:g}; "
              f"held-out bpb {bits_per_byte(model, heldout, seq_len, args.batch_size):.4f}")
    print(f"step time lora/full: {np.median(times['lora'][2:]) / np.median(times['full'][2:]):.2f}")


if __name__ == "__main__":
    main()
