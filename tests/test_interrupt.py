"""Ctrl-C and SIGTERM keep the work: the run stops after the step under way, saves it, says how to continue, and
the continued run ends exactly where an uninterrupted one does. Also the pieces that make this exact: checkpoint
writes that a signal cannot cut, a training sampler that resumes mid-pass, per-step random seeds."""

import csv
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
RUN = ["--model", "clm-tiny", "--batch-size", "4", "--val-check-interval", "10", "--limit-val-batches", "2",
       "--warmup-steps", "2", "--lr", "0.003", "--max-steps", "30", "--log-every-n-steps", "2", "--no-progress",
       "--checkpoint-every-minutes", "0"]
"""30 steps, dropout on (clm-tiny), random window truncation on: the interrupted run must repeat both exactly."""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "story.txt"
    path.write_text("Once upon a time a small robot learned to read bytes, one by one. " * 60)
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return {**os.environ, "PERCEIVER_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}


def train_args(corpus, out):
    return ["train", "clm", "--data", "text", "--data-path", str(corpus), *RUN, "--output-dir", str(out)]


def run(args, env):
    result = subprocess.run([sys.executable, "-m", "perceiver.cli", *args], capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr
    return result


def rows(out):
    with open(out / "logs" / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def train_losses(out):
    return {int(r["step"]): float(r["train_loss"]) for r in rows(out) if r.get("train_loss")}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, corpus, env):
    out = tmp_path_factory.mktemp("reference") / "run"
    result = run(train_args(corpus, out), env)
    return out, result.stderr


def interrupt(args, env, signum, at_step):
    """Start training, send ``signum`` once the progress line of ``at_step`` is out (and once more right after, as
    an impatient user would), return (exit code, stderr)."""
    process = subprocess.Popen([sys.executable, "-m", "perceiver.cli", *args], stderr=subprocess.PIPE, text=True,
                               env=env, cwd=ROOT)
    lines = []
    try:
        for line in process.stderr:
            lines.append(line)
            if line.startswith(f"step {at_step}/"):
                process.send_signal(signum)
                time.sleep(0.01)
                process.send_signal(signum)
                break
        lines.append(process.stderr.read())
        process.wait(timeout=300)
    finally:
        process.kill()
    return process.returncode, "".join(lines)


@pytest.mark.slow
@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_saves_the_step_and_the_continued_run_matches_an_uninterrupted_one(
    tmp_path, corpus, env, uninterrupted, signum, code
):
    out = tmp_path / "run"
    exit_code, stderr = interrupt(train_args(corpus, out), env, signum, at_step=12)
    assert exit_code == code, stderr
    said = [line for line in stderr.splitlines() if line.startswith("interrupted")]
    assert len(said) == 1 and "Traceback" not in stderr, stderr
    step = int(said[0].split()[3].rstrip(";"))
    assert 12 <= step < 30 and "checkpoint saved; continue with: perceiver train clm" in said[0]
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == step
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.ckpt"]  # no half-written file
    assert not (out / "model").exists()  # exported only when training is complete

    command = shlex.split(said[0].split("continue with: ")[1])
    assert command[0] == "perceiver" and command[-1] == "--resume"
    resumed = run(command[1:], env)
    assert f"training 36.2K parameters from step {step} to 30" in resumed.stderr
    reference_out, reference_stderr = uninterrupted
    done = [line for line in resumed.stderr.splitlines() if line.startswith("done at step 30")]
    assert done and done[0] in reference_stderr  # same validation loss and bpb, to 4 decimals

    # one log for the whole run, with every training loss of the uninterrupted run (the stopped step may lack its
    # row) and none twice
    losses, expected = train_losses(out), train_losses(reference_out)
    assert not list((out / "logs").glob("version_*"))
    assert set(losses) <= set(expected) and len(set(expected) - set(losses)) <= 1
    assert [int(r["step"]) for r in rows(out) if r.get("train_loss")] == sorted(losses)
    for s, loss in losses.items():
        assert loss == pytest.approx(expected[s], rel=1e-5, abs=1e-6), s


# ----------------------------------------------------------------------------------------------------------------
#  The pieces
# ----------------------------------------------------------------------------------------------------------------


def test_a_signal_during_a_checkpoint_write_takes_effect_after_the_rename(tmp_path, monkeypatch):
    from perceiver.training import checkpoint_io

    real_save = torch.save

    def save_and_get_interrupted(obj, f):
        real_save(obj, f)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C between the write and the rename
        time.sleep(0.05)

    path = tmp_path / "last.ckpt"
    path.write_bytes(b"the previous checkpoint")
    monkeypatch.setattr(checkpoint_io.torch, "save", save_and_get_interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpoint_io.AtomicCheckpointIO().save_checkpoint({"global_step": 7}, path)
    assert torch.load(path, weights_only=True) == {"global_step": 7}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_training_sampler_resumes_mid_pass_where_the_run_stopped():
    from perceiver.data.distributed import FreshItemSampler, run_position

    dataset = list(range(10))
    for rank in range(2):
        whole = list(FreshItemSampler(dataset, num_replicas=2, rank=rank, num_samples=12))
        assert whole == list(range(rank, 24, 2))  # one pass past the data set's length, epoch ignored
        resumed = FreshItemSampler(dataset, num_replicas=2, rank=rank, num_samples=12, start=6)
        resumed.set_epoch(3)
        assert list(resumed) == whole[6:] and len(resumed) == 12

    class Trainer:
        max_steps, global_step, accumulate_grad_batches = 50, 20, 2

    assert run_position(Trainer()) == (100, 40)
    Trainer.max_steps = -1  # an epoch-based run: epochs as before
    assert run_position(Trainer()) == (None, 0)
    assert run_position(None) == (None, 0)


def test_step_seeds_depend_on_every_coordinate():
    from perceiver.training.callbacks import step_seed

    seeds = {step_seed(s, r, t, b) for s in range(2) for r in range(2) for t in range(3) for b in range(2)}
    assert len(seeds) == 24 and all(0 <= s < 2**63 for s in seeds)
    assert step_seed(0, 0, 5, 0) == step_seed(0, 0, 5, 0)


def test_the_stop_waits_for_the_end_of_an_accumulation_and_for_a_validation_that_is_due(tmp_path):
    from types import SimpleNamespace

    from perceiver.training.callbacks import StopOnSignal
    from perceiver.training.signals import TrainingInterrupted

    # 2 batches per optimizer step, 18 batches (9 steps) done; Lightning validates after batch index 19 (step 10)
    trainer = SimpleNamespace(global_step=9, max_steps=30, world_size=1, log_every_n_steps=10, enable_validation=True,
                              val_check_batch=10, fit_loop=SimpleNamespace(total_batch_idx=17))
    stop = StopOnSignal(str(tmp_path / "last.ckpt"))
    stop.on_train_start(trainer, None)

    def batch():
        """One training batch as Lightning runs it; the exception that stops training, if any."""
        stop.on_train_batch_start(trainer, None, None, 0)
        trainer.fit_loop.total_batch_idx += 1
        trainer.global_step += trainer.fit_loop.total_batch_idx % 2  # the second batch of a pair steps
        try:
            stop.on_train_batch_end(trainer, None, None, None, 0)
        except TrainingInterrupted as interrupted:
            return interrupted

    stop._handle(signal.SIGTERM, None)
    assert batch() is None  # batch 18: gradients accumulated, no step yet
    assert batch() is None and trainer.global_step == 10  # batch 19: step 10, and its validation is due
    assert batch() is None  # batch 20: accumulating again
    stopped = batch()  # batch 21: step 11
    assert stopped is not None and stopped.step == 11 and stopped.signum == signal.SIGTERM
    stop._handle(signal.SIGINT, None)  # a second signal while stopping changes nothing
    assert stop.signum == signal.SIGTERM and stop.phase == "stopping"


def test_time_based_checkpoints_wait_for_the_end_of_an_accumulation(tmp_path, monkeypatch):
    """With 2 batches per optimizer step, a checkpoint due by time may only be written after a batch that stepped
    (a save mid-accumulation would resume past gradients it does not hold). The checkpoint's clock advances one
    second per reading (one reading per batch) and the interval is 3 s, so the time comes due mid-accumulation."""
    from datetime import timedelta
    from types import SimpleNamespace

    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.callbacks import model_checkpoint

    from perceiver.training.callbacks import StepCheckpoint

    readings = iter(range(1000))
    monkeypatch.setattr(model_checkpoint, "time", SimpleNamespace(monotonic=lambda: float(next(readings))))
    saves = []

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def on_save_checkpoint(self, checkpoint):
            saves.append((self.trainer.fit_loop.total_batch_idx, self.trainer.global_step))

    checkpoint = StepCheckpoint(
        dirpath=tmp_path, save_last=True, save_top_k=0, train_time_interval=timedelta(seconds=3)
    )
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(12, 2)), batch_size=1)
    trainer = pl.Trainer(max_steps=6, accumulate_grad_batches=2, callbacks=[checkpoint], logger=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(Tiny(), data)
    assert len(saves) >= 2, saves
    assert all(batch % 2 == 1 for batch, _ in saves), saves  # batches 1, 3, 5, ...: the second of each pair
