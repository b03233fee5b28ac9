"""The clm workflow through the command line: train, resume, eval, generate; and bad input."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import cli

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "clm-tiny", "--batch-size", "4", "--val-check-interval", "5", "--limit-val-batches", "2",
        "--no-progress", "--warmup-steps", "2", "--lr", "0.003"]


def run(*args, env=None, check=True):
    environment = {**os.environ, **(env or {})}
    result = subprocess.run([sys.executable, "-m", "perceiver.cli", *args], capture_output=True, text=True,
                            env=environment, cwd=ROOT, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "story.txt"
    path.write_text("Once upon a time a small robot learned to read bytes, one by one. " * 60)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("run") / "clm"
    cache = tmp_path_factory.mktemp("cache")
    env = {"PERCEIVER_CACHE_DIR": str(cache)}
    run("train", "clm", "--data", "text", "--data-path", str(corpus), "--max-steps", "10", "--output-dir", str(out),
        *TINY, env=env)
    return out, env


def test_train_writes_checkpoint_logs_and_exported_model(trained):
    out, _ = trained
    assert (out / "checkpoints" / "last.ckpt").exists()
    assert (out / "model" / "config.json").exists() and (out / "model" / "model.safetensors").exists()
    assert list((out / "logs").rglob("metrics.csv"))


def test_resume_continues_from_the_last_step_and_refuses_to_overwrite(trained, corpus):
    out, env = trained
    args = ["train", "clm", "--data", "text", "--data-path", str(corpus), "--output-dir", str(out), *TINY]
    refused = run(*args, "--max-steps", "10", env=env, check=False)
    assert refused.returncode == 1 and "--resume" in refused.stderr and "Traceback" not in refused.stderr
    resumed = run(*args, "--max-steps", "15", "--resume", env=env)
    assert "done at step 15" in resumed.stderr
    import torch

    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 15


def test_eval_prints_the_tasks_metrics_over_every_validation_batch(trained, corpus, monkeypatch):
    """The printed values are clm's ``batch_metrics`` on the same validation batches, weighted by their
    predictions; perplexity is exp(loss)."""
    import math

    import torch

    from perceiver.checkpoint import load_model
    from perceiver.data.text import TextDataConfig, TextFilesDataModule
    from perceiver.tasks.clm import batch_metrics

    out, env = trained
    result = run("eval", "--model", str(out), "--data", "text", "--data-path", str(corpus), "--batch-size", "2",
                 env=env)
    printed = {}
    for line in result.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip("│ ").split("│")]
        if len(cells) == 2 and cells[0] in ("loss", "bpb", "perplexity", "predictions"):
            printed[cells[0]] = float(cells[1].replace(",", ""))
    assert set(printed) == {"loss", "bpb", "perplexity", "predictions"}, result.stdout

    model = load_model(out).eval()
    monkeypatch.setenv("PERCEIVER_CACHE_DIR", env["PERCEIVER_CACHE_DIR"])
    config = TextDataConfig(max_seq_len=model.config.max_seq_len, data_path=str(corpus), batch_size=2)
    data = TextFilesDataModule(config)
    data.setup("validate")
    totals, count, batches = {"loss": 0.0, "bpb": 0.0}, 0, 0
    with torch.no_grad():
        for batch in data.val_dataloader():
            metrics = batch_metrics(model, batch)
            for key in totals:
                totals[key] += float(metrics[key]) * int(metrics["count"])
            count += int(metrics["count"])
            batches += 1
    assert batches >= 2  # the weighting over batches is exercised
    assert printed["predictions"] == count
    assert printed["loss"] == pytest.approx(totals["loss"] / count, abs=6e-5)
    assert printed["bpb"] == pytest.approx(totals["bpb"] / count, abs=6e-5)
    assert printed["bpb"] == pytest.approx(printed["loss"] / math.log(2), abs=1e-4)
    assert printed["perplexity"] == pytest.approx(math.exp(totals["loss"] / count), abs=1e-4)


def test_plot_draws_the_curves_of_a_real_run(trained, capsys):
    out, _ = trained
    code, stdout, stderr = cli(capsys, "plot", str(out))
    assert code == 0, stderr
    png = out / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "loss, bpb" in stdout
    from PIL import Image

    with Image.open(png) as image:
        assert image.width > 2 * image.height  # loss and bits-per-byte panels side by side


def test_generate_streams_a_continuation_reproducibly(trained):
    out, _ = trained
    args = ["generate", "--model", str(out), "--prompt", "Once upon", "--num-tokens", "20", "--seed", "1",
            "--top-k", "5"]
    first, second = run(*args), run(*args)
    assert first.stdout.startswith("Once upon") and len(first.stdout.encode()) > len("Once upon")
    assert first.stdout == second.stdout
    from_ckpt = run("generate", "--model", str(out / "checkpoints" / "last.ckpt"), "--prompt", "Once", "--num-tokens",
                    "5", "--num-latents", "3")
    assert from_ckpt.stdout.startswith("Once")


def test_generate_keeps_the_last_bytes_of_a_long_prompt(trained, capsys):
    out, _ = trained
    code, stdout, stderr = cli(capsys, "generate", "--model", str(out), "--prompt", "x" * 100, "--num-tokens", "3")
    assert code == 0 and "keeping its last 64 bytes" in stderr
    assert stdout.startswith("x" * 64) and not stdout.startswith("x" * 65)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--prompt", ""], "prompt is empty"),
        (["--prompt", "hi", "--num-latents", "0"], "1..16"),
        (["--prompt", "hi", "--num-latents", "17"], "1..16"),
        (["--prompt", "hi", "--top-p", "2"], "--top-p"),
    ],
)
def test_generate_bad_input_is_one_line(trained, capsys, args, message):
    out, _ = trained
    code, _, stderr = cli(capsys, "generate", "--model", str(out), *args)
    assert code != 0 and message in stderr and "Traceback" not in stderr


def test_model_path_errors(tmp_path, capsys):
    code, _, stderr = cli(capsys, "generate", "--model", str(tmp_path / "missing"), "--prompt", "x")
    assert code == 1 and "does not exist" in stderr and "Traceback" not in stderr
    (tmp_path / "broken.ckpt").write_bytes(b"\x00garbage")
    code, _, stderr = cli(capsys, "generate", "--model", str(tmp_path / "broken.ckpt"), "--prompt", "x")
    assert code == 1 and "cannot read checkpoint" in stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["--data", "wikitxt"], "did you mean 'wikitext'"),
        (["--data", "text"], "--data-path"),
        (["--data", "text", "--data-path", "/no/such/file"], "does not exist"),
        (["--data", "text", "--data-path", "{corpus}", "--max-latents", "100"], "max_latents (100)"),
        (["--data", "text", "--data-path", "{corpus}", "--max-latents", "abc"], "expected int"),
        (["--data", "text", "--data-path", "{corpus}", "--model", "clm-tinyy"], "clm-tiny"),
        (["--data", "text", "--data-path", "{corpus}", "--set", "num_latentz=3"], "unknown option"),
        (["--data", "text", "--data-path", "{corpus}", "--optimizer", "sgd"], "adam or adamw"),
    ],
)
def test_train_bad_input_is_one_line(tmp_path, capsys, corpus, args, message):
    args = [a.replace("{corpus}", str(corpus)) for a in args]
    os.environ["PERCEIVER_CACHE_DIR"] = str(tmp_path / "cache")
    code, _, stderr = cli(capsys, "train", "clm", *TINY, "--max-steps", "1", "--output-dir", str(tmp_path / "o"), *args)
    assert code != 0 and message in stderr and "Traceback" not in stderr
    assert not (tmp_path / "o" / "checkpoints").exists()


def test_eval_rejects_unknown_data(trained, capsys):
    out, _ = trained
    code, _, stderr = cli(capsys, "eval", "--model", str(out), "--data", "nope")
    assert code == 1 and "known:" in stderr
