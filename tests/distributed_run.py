"""Train a tiny clm model through ``perceiver.training.fit`` from a script, for tests/test_distributed.py.

Lightning's DDP launcher starts the extra ranks by running this script again, so it takes everything from its
command line. Every rank writes ``<output>/../ranks/<rank>.json`` (beside the run directory, which holds only what
training writes): its process id and, per training step, the token ids of the rows it trained on. ``--die-on-rank R
--die-at-step S`` kills rank R abruptly (``os._exit``, like the OOM killer) when it reaches step S.

    python tests/distributed_run.py OUTPUT CORPUS [--devices 2] [--max-steps 6] [--batch-size 4] [--die-on-rank R]
"""

import argparse
import json
import os
import sys
from pathlib import Path

import pytorch_lightning as pl


class RecordBatches(pl.Callback):
    def __init__(self, directory: Path, die_on_rank: int, die_at_step: int):
        self.directory = directory
        self.die_on_rank, self.die_at_step = die_on_rank, die_at_step
        self.steps = {}

    def _write(self, trainer):
        self.directory.mkdir(parents=True, exist_ok=True)
        record = {"pid": os.getpid(), "world_size": trainer.world_size, "steps": self.steps}
        (self.directory / f"{trainer.global_rank}.json").write_text(json.dumps(record))

    def on_train_start(self, trainer, pl_module):
        self._write(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_rank == self.die_on_rank and trainer.global_step == self.die_at_step:
            sys.stdout.flush()
            os._exit(7)
        labels, input_ids, pad_mask = batch
        self.steps[trainer.global_step] = input_ids.tolist()

    def on_train_end(self, trainer, pl_module):
        self._write(trainer)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output")
    parser.add_argument("corpus")
    parser.add_argument("--devices", default="2")
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--die-on-rank", type=int, default=-1)
    parser.add_argument("--die-at-step", type=int, default=2)
    args = parser.parse_args()

    from perceiver.training.fit import fit
    from perceiver.training.plan import plan_training

    options = {
        "model": {"cross_attention_dropout": 0.0},
        "data": {"data_path": args.corpus, "batch_size": args.batch_size, "random_train_truncation": 0.0},
        "optimizer": {"lr": 0.003, "warmup_steps": 2},
        "trainer": {
            "output_dir": args.output, "max_steps": args.max_steps, "val_check_interval": args.max_steps,
            "limit_val_batches": 0, "accelerator": "cpu", "devices": args.devices, "strategy": "ddp",
            "progress": False, "distributed_timeout": 120,
        },
    }
    plan = plan_training("clm", "text", preset="clm-tiny", options=options)
    recorder = RecordBatches(Path(args.output).parent / "ranks", args.die_on_rank, args.die_at_step)
    result = fit(plan, callbacks=[recorder])
    if result["is_global_zero"]:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
