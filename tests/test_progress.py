"""What training prints and logs: plain progress lines off a terminal (and with --no-progress), no epochs, versions
or FLOPs; the learning rate in the log; one log per run that --resume continues."""

import csv
import os
import re
import sys

import pytest

from perceiver.cli import main

TINY = ["--model", "clm-tiny", "--batch-size", "4", "--val-check-interval", "3", "--limit-val-batches", "1",
        "--warmup-steps", "2", "--lr", "0.003", "--log-every-n-steps", "2"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "story.txt"
    path.write_text("Once upon a time a small robot learned to read bytes, one by one. " * 60)
    return path


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PERCEIVER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "progress-cache"))


def train(capsys, corpus, out, *args):
    try:
        main(["train", "clm", "--data", "text", "--data-path", str(corpus), *TINY, "--output-dir", str(out), *args])
        code = 0
    except SystemExit as exit:
        code = exit.code or 0
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.err


def rows(out):
    with open(out / "logs" / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.parametrize("flag", [[], ["--no-progress"]], ids=["not-a-terminal", "no-progress"])
def test_off_a_terminal_progress_is_plain_lines_every_logging_step(tmp_path, capsys, corpus, flag):
    assert not sys.stderr.isatty()
    err = train(capsys, corpus, tmp_path / "run", "--max-steps", "6", *flag)
    lines = [line for line in err.splitlines() if line.startswith("step ")]
    progress = [line for line in lines if "validation" not in line]
    assert [line.split()[1] for line in progress] == ["2/6", "4/6", "6/6"]
    assert all("loss " in line and "lr " in line and "eta " in line for line in progress)
    assert "tok/s" in progress[-1]  # a rate needs two points
    assert "val_loss" in progress[-1] and "val_bpb" in progress[-1]  # the last validation's metrics
    assert [line.split()[1] for line in lines if "validation" in line] == ["3/6", "6/6"]
    assert "training 36.2K parameters for 6 steps" in err
    for noise in ("\r", "Epoch", "v_num", "FLOPs", "it/s"):
        assert noise not in err


def test_on_a_terminal_the_bar_runs_and_closes(tmp_path, capsys, corpus, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    err = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", train(capsys, corpus, tmp_path / "run", "--max-steps", "4"))
    assert "step 4/4" in err and "done at step 4" in err and "v_num" not in err and "Epoch" not in err


def test_the_log_has_the_learning_rate_and_resume_continues_it(tmp_path, capsys, corpus):
    out = tmp_path / "run"
    train(capsys, corpus, out, "--max-steps", "6", "--no-progress")
    first = rows(out)
    lr = [float(r["lr/decay"]) for r in first if r.get("lr/decay")]
    assert len(lr) == 3 and lr[0] > lr[-1] > 0  # warmup to 3e-3 at step 2, then the cosine decay
    assert [int(r["step"]) for r in first if r.get("train_loss")] == [1, 3, 5]
    assert [int(r["step"]) for r in first if r.get("tok/s")] == [3, 5]

    # rows logged after the checkpoint by a run that then died are dropped and logged again by the resumed run
    with open(out / "logs" / "metrics.csv", "a", newline="") as file:
        csv.DictWriter(file, fieldnames=list(first[0])).writerow({"step": 7, "train_loss": 99})
    train(capsys, corpus, out, "--max-steps", "10", "--no-progress", "--resume")
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["hparams.yaml", "metrics.csv"]
    resumed = rows(out)
    assert resumed[: len(first)] == first  # the first run's rows, kept as they were
    steps = [int(r["step"]) for r in resumed if r.get("train_loss")]
    assert steps == [1, 3, 5, 7, 9]
    assert all(float(r["train_loss"]) != 99 for r in resumed if r.get("train_loss"))
    assert [int(float(r["step"])) for r in resumed if r.get("val_loss")] == [2, 5, 8]
    assert not [p for p in os.listdir(out / "logs") if p.startswith("version_")]
