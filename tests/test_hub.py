"""Hub repo ids as --model / load_model sources, offline: a Hugging Face cache laid out by hand (HF_HOME,
HF_HUB_OFFLINE=1) is what the loader reads; for the failures, a local HTTP server stands in for the Hub's network
replies (HF_ENDPOINT), and the real huggingface_hub client and loader run against it."""

import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from perceiver.checkpoint import load_model, save_model
from perceiver.hub import is_repo_id, split_revision
from perceiver.tasks.clm import CausalLanguageModel, CausalLanguageModelConfig

ROOT = Path(__file__).resolve().parents[1]
COMMIT = hashlib.sha1(b"perceiver test model").hexdigest()


def perceiver(*args, env):
    return subprocess.run([sys.executable, "-m", "perceiver.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **env}, timeout=300)


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """HF_HOME holding ``acme/tiny-clm`` at commit COMMIT (refs/main points at it), as a download would leave it."""
    home = tmp_path_factory.mktemp("hf-home")
    torch.manual_seed(0)
    model = CausalLanguageModel(CausalLanguageModelConfig(vocab_size=262, max_seq_len=32, max_latents=8,
                                                          num_channels=16, num_heads=2, num_self_attention_layers=1))
    export = save_model(model, tmp_path_factory.mktemp("export") / "model")
    repo = home / "hub" / "models--acme--tiny-clm"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    shutil.copytree(export, repo / "snapshots" / COMMIT)
    return home, export


def test_repo_ids_are_told_apart_from_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_repo_id("krasserm/perceiver-ar-clm-base") and is_repo_id("acme/m@v1.0")
    assert split_revision("acme/m@v1.0") == ("acme/m", "v1.0") and split_revision("acme/m") == ("acme/m", None)
    (tmp_path / "runs").mkdir()
    assert not is_repo_id("runs/small")  # runs/ is a local directory: a missing run there is a local path
    assert not is_repo_id("./acme/m") and not is_repo_id("/abs/path") and not is_repo_id("model.ckpt")


def test_a_cached_hub_model_loads_offline_by_repo_id_and_revision(hub_cache):
    home, export = hub_cache
    env = {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    local = perceiver("generate", "--model", str(export), "--prompt", "ab", "-n", "6", "--seed", "3", env=env)
    assert local.returncode == 0, local.stderr
    for source in ("acme/tiny-clm", f"acme/tiny-clm@{COMMIT}"):
        result = perceiver("generate", "--model", source, "--prompt", "ab", "-n", "6", "--seed", "3", env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout == local.stdout


def test_python_load_model_takes_a_repo_id(hub_cache):
    home, export = hub_cache
    code = ("import torch; from perceiver.checkpoint import load_model; m = load_model('acme/tiny-clm'); "
            "print(sum(float(p.sum()) for p in m.state_dict().values()))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    expected = sum(float(p.sum()) for p in load_model(export).state_dict().values())
    assert float(result.stdout) == pytest.approx(expected, rel=1e-6)


def one_line_error(result, *fragments):
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_offline_and_not_cached_says_that_hf_hub_offline_is_set(hub_cache):
    home, _ = hub_cache
    result = perceiver("generate", "--model", "acme/other", "--prompt", "ab", env={"HF_HOME": str(home),
                                                                                "HF_HUB_OFFLINE": "1"})
    one_line_error(result, "acme/other is not in the local Hugging Face cache", "HF_HUB_OFFLINE is set")


class FakeHub(http.server.BaseHTTPRequestHandler):
    """Answers as the Hub does for repos that do not exist, are gated, or lack a revision."""

    def do_GET(self):
        if "/gated/" in self.path:
            self.send_response(403)
            self.send_header("X-Error-Code", "GatedRepo")
        elif "/revision/nope" in self.path:
            self.send_response(404)
            self.send_header("X-Error-Code", "RevisionNotFound")
        else:
            self.send_response(401)
            self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_hub(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
           "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1"}
    server.shutdown()


@pytest.mark.parametrize("source,fragments", [
    ("acme/missing", ["Hub model acme/missing does not exist, or it is private", "HF_TOKEN"]),
    ("gated/model", ["Hub model gated/model is gated: accept its conditions", "hf auth login"]),
    ("acme/model@nope", ["Hub model acme/model has no revision 'nope'"]),
])
def test_hub_failures_are_one_line_that_says_what_to_do(fake_hub, source, fragments):
    one_line_error(perceiver("eval", "--model", source, "--data", "wikipedia-offline", env=fake_hub), *fragments)


def test_an_unreachable_hub_is_named(tmp_path):
    closed = {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0",
              "HF_HUB_ETAG_TIMEOUT": "2", "HF_HUB_DOWNLOAD_TIMEOUT": "2"}
    result = perceiver("generate", "--model", "acme/model", "--prompt", "ab", env=closed)
    one_line_error(result, "cannot reach the Hugging Face Hub (http://127.0.0.1:9) to download acme/model")
