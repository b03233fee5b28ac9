"""The getting-started workflows in examples/ run end to end on a tiny model."""

import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_example(name, *args, env):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], capture_output=True, text=True,
                            env={**os.environ, **env}, cwd=ROOT, timeout=600)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("examples")
    corpus = root / "corpus.txt"
    corpus.write_text("The seed document trains a byte-level Perceiver AR. " * 80)
    return root, corpus, {"PERCEIVER_CACHE_DIR": str(root / "cache")}


@pytest.mark.slow
def test_lightning_then_generate_from_its_checkpoint(setup):
    root, corpus, env = setup
    data = ["--data", "text", "--data-path", str(corpus), "--preset", "clm-tiny", "--batch-size", "4"]
    out = run_example("train_lightning.py", *data, "--max-steps", "4", "--warmup-steps", "1",
                      "--accumulate-grad-batches", "1", "--accelerator", "cpu", "--devices", "1",
                      "--output-dir", str(root / "lightning"), env=env)
    assert "parameters" in out
    text = run_example("generate.py", str(root / "lightning" / "last.ckpt"), "--prompt", "The seed", "--num-tokens",
                       "16", env=env)
    assert text.startswith("The seed") and len(text.encode()) > len("The seed")


def test_plain_pytorch_loop_then_generate_from_the_exported_model(setup):
    root, corpus, env = setup
    out = run_example("train_pytorch_loop.py", "--data", "text", "--data-path", str(corpus), "--preset", "clm-tiny",
                      "--batch-size", "4", "--steps", "80", "--lr", "3e-3", "--seed", "0", "--output-dir",
                      str(root / "loop"), env=env)
    losses = [float(line.split()[-1]) for line in out.splitlines() if line.startswith("step")]
    # a model that learned nothing has ln(262) = 5.57 nats; one that learned only the byte frequencies has the
    # corpus's unigram entropy (2.85 nats): below it, the model predicts from the context
    data = corpus.read_bytes()
    unigram = -sum(n / len(data) * math.log(n / len(data)) for n in Counter(data).values())
    assert len(losses) == 8 and losses[-1] < unigram < losses[0] < math.log(262), (losses, unigram)
    text = run_example("generate.py", str(root / "loop"), "--prompt", "A", "--num-tokens", "8", env=env)
    assert text.startswith("A")
