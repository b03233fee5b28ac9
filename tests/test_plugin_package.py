"""The example plugin package plugins/perceiver-audio, installed into this environment and driven through the CLI.

Installing is idempotent: an editable install of this very folder is reused. The commands run as subprocesses with
third-party plugins enabled, exactly as a user would run them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / "plugins" / "perceiver-audio"
DIST = "perceiver-audio"

pytestmark = pytest.mark.slow


def _installed_from_here() -> bool:
    try:
        dist = metadata.distribution(DIST)
    except metadata.PackageNotFoundError:
        return False
    direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    editable = direct_url.get("dir_info", {}).get("editable", False)
    return editable and direct_url.get("url", "").rstrip("/") == PACKAGE_DIR.as_uri()


@pytest.fixture(scope="module")
def installed():
    if not _installed_from_here():
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-input",
             "--disable-pip-version-check", "-e", str(PACKAGE_DIR)],
            capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, f"pip install failed:\n{result.stdout}\n{result.stderr}"
    assert _installed_from_here()
    eps = [ep for ep in metadata.entry_points(group="perceiver") if ep.dist and ep.dist.name == DIST]
    assert [(ep.name, ep.value) for ep in eps] == [("audio", "perceiver_audio.plugin")]


def perceiver(*args: str, env=None, check: bool = True) -> subprocess.CompletedProcess:
    """Run the ``perceiver`` console script of this environment with third-party plugins enabled."""
    gates = ("PERCEIVER_DISABLE_PLUGINS", "PERCEIVER_LOAD_PLUGINS")
    environment = {k: v for k, v in os.environ.items() if k not in gates}
    environment.update({"COLUMNS": "200", "NO_COLOR": "1", **(env or {})})
    script = Path(sys.executable).parent / "perceiver"
    result = subprocess.run([str(script), *args], capture_output=True, text=True, env=environment, cwd=ROOT,
                            timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"perceiver {' '.join(args)}: exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    assert "Traceback" not in result.stdout + result.stderr
    return result


def test_plugin_components_are_listed(installed):
    out = perceiver("list").stdout
    for name in ("mulaw", "audio-synth", "wav", "audio-clm-tiny", "audio-clm-small"):
        row = next((line for line in out.splitlines() if f"│ {name} " in line), "")
        assert "perceiver-audio" in row, f"{name} not listed by perceiver-audio:\n{out}"
    assert "│ audio " in out  # the modality column
    plugins_table = perceiver("plugins").stdout
    row = next(line for line in plugins_table.splitlines() if line.startswith("│ audio "))
    assert "perceiver-audio" in row and "0.1.0" in row and "loaded" in row
    assert "register_commands" in plugins_table and "register_adapters" in plugins_table
    assert "audio-synth" in perceiver("--help").stdout


def test_no_plugins_hides_the_plugin(installed):
    out = perceiver("--no-plugins", "list", "adapters").stdout
    assert "text-bytes" in out and "mulaw" not in out
    out = perceiver("list", "adapters", env={"PERCEIVER_DISABLE_PLUGINS": "1"}).stdout
    assert "mulaw" not in out
    out = perceiver("list", "adapters", env={"PERCEIVER_LOAD_PLUGINS": "audio"}).stdout
    assert "mulaw" in out
    result = perceiver("--no-plugins", "audio-synth", "--help", check=False)
    assert result.returncode == 2 and "No such command 'audio-synth'" in result.stderr


def test_plugin_misfits_are_one_line_errors(installed):
    result = perceiver("train", "clm", "--data", "text", "--adapter", "mulaw", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: data set 'text' holds text data, but adapter 'mulaw' reads audio  "
        "(set PERCEIVER_DEBUG=1 for the traceback)"
    ]
    result = perceiver("train", "clm", "--data", "audio-synth", "--set", "kinds=tone,noise", check=False)
    assert result.returncode == 1 and "unknown clip kind(s) noise" in result.stderr


@pytest.fixture
def plugins_enabled(monkeypatch):
    """The registry of this process with installed plugins loaded (fresh, and reset afterwards)."""
    from perceiver import plugins, registry

    monkeypatch.delenv("PERCEIVER_DISABLE_PLUGINS", raising=False)
    plugins._reset_for_tests()
    yield registry
    plugins._reset_for_tests()


def test_train_with_the_plugin_adapter_then_load_eval_and_synthesize(installed, tmp_path, plugins_enabled):
    out = tmp_path / "run"
    data = ["--data", "audio-synth", "--set", "num_clips=12", "--set", "clip_seconds=0.2"]
    result = perceiver(
        "train", "clm", *data, "--adapter", "mulaw", "--model", "audio-clm-tiny", "--batch-size", "4",
        "--max-steps", "4", "--val-check-interval", "2", "--limit-val-batches", "1", "--warmup-steps", "1",
        "--set", "adapter.amplitude_bands=4", "--output-dir", str(out), "--no-progress",
    )
    assert "train clm on audio-synth with adapter mulaw" in result.stderr and "done at step 4" in result.stderr

    import torch

    from perceiver.checkpoint import load_model

    model = load_model(out)
    assert model.config.adapter == "mulaw" and model.config.adapter_options == {"amplitude_bands": 4}
    assert type(model.input_adapter).__module__ == "perceiver_audio.adapter"
    logits = model(torch.randint(6, 262, (1, 128)), prefix_len=96)
    assert logits.shape == (1, 32, 262) and torch.isfinite(logits).all()
    assert load_model(out / "checkpoints" / "last.ckpt").config == model.config

    result = perceiver("eval", "--model", str(out), *data, "--max-batches", "2")
    assert "loss" in result.stdout and "bpb" in result.stdout

    wav_path = tmp_path / "continuation.wav"
    result = perceiver("audio-synth", "--model", str(out), "--output", str(wav_path), "--prompt", "chord",
                       "--prompt-seconds", "0.01", "--seconds", "0.01", "--seed", "1")
    assert "wrote" in result.stderr
    with wave.open(str(wav_path)) as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes()) == (1, 2, 8000, 160)


def test_the_plugins_own_tests_pass(installed):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PACKAGE_DIR / "tests")],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
