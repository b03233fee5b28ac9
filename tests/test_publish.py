"""Publishing: ``perceiver push``, the task models' ``save_pretrained`` / ``push_to_hub`` / ``from_pretrained``, the
model card, and loading without a second copy of the weights.

Only the network is faked: ``HfApi.create_repo`` / ``create_branch`` / ``upload_folder`` are replaced by recorders
that note the repo and the files of the folder being uploaded; for the failures a local HTTP server answers as the
Hub would (``HF_ENDPOINT``), and the real client runs against it.
"""

from __future__ import annotations

import csv
import http.server
import json
import threading
from pathlib import Path

import pytest
import torch
import yaml
from cli_runner import cli
from tiny_models import MODELS, inputs

from perceiver.checkpoint import ModelLoadError, load_model, save_model
from perceiver.files import TargetError
from perceiver.model_card import MARKER, card_metadata, model_card
from perceiver.tasks.clf import Classifier
from perceiver.tasks.clm import CausalLanguageModel
from perceiver.tasks.mlm import MaskedLanguageModel

CLASSES = {"clm": CausalLanguageModel, "mlm": MaskedLanguageModel, "text-clf": Classifier, "image-clf": Classifier}
PIPELINE = {"clm": "text-generation", "mlm": "fill-mask", "text-clf": "text-classification",
            "image-clf": "image-classification"}


def logits(model, kind):
    args, _ = inputs(kind)
    with torch.no_grad():
        return model(*args)


def snapshot(root: Path):
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


# -------------------------------------------------------------------------------------------------------------
#  save_pretrained / from_pretrained, and the card
# -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(MODELS))
def test_save_pretrained_and_from_pretrained_give_the_same_logits(kind, tmp_path):
    torch.manual_seed(0)
    model = MODELS[kind]().eval()
    with torch.no_grad():  # LayerNorms away from their initial values, so that a lost weight shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    target = model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in target.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = CLASSES[kind].from_pretrained(target)
    assert type(loaded) is type(model) and not loaded.training
    assert not any(p.is_meta for p in loaded.parameters()) and not any(b.is_meta for b in loaded.buffers())
    torch.testing.assert_close(logits(loaded, kind), logits(model, kind), rtol=0, atol=0)
    meta = card_metadata((target / "README.md").read_text())
    assert meta["library_name"] == "perceiver" and meta["license"] == "apache-2.0"
    assert meta["pipeline_tag"] == PIPELINE[kind]
    assert "perceiver" in meta["tags"] and ("perceiver-ar" if kind == "clm" else "perceiver-io") in meta["tags"]


def test_from_pretrained_reads_what_load_model_reads(tmp_path):
    krasserm = Path(__file__).resolve().parent / "fixtures" / "krasserm" / "clm"
    from_krasserm = CausalLanguageModel.from_pretrained(krasserm)
    torch.testing.assert_close(logits(from_krasserm, "clm"), logits(load_model(krasserm), "clm"), rtol=0, atol=0)
    model = MODELS["text-clf"]().eval()
    run = fake_run(tmp_path, model)
    torch.testing.assert_close(logits(Classifier.from_pretrained(run), "text-clf"), logits(model, "text-clf"))


def test_from_pretrained_refuses_a_model_of_another_task(tmp_path):
    MODELS["mlm"]().save_pretrained(tmp_path / "mlm")
    with pytest.raises(ModelLoadError, match="'mlm' model, expected a 'clm' model"):
        CausalLanguageModel.from_pretrained(tmp_path / "mlm")


def test_save_pretrained_keeps_the_export_rules_and_a_readme_of_the_users(tmp_path):
    target = tmp_path / "m"
    first, second = MODELS["clm"](), MODELS["clm"]()
    first.save_pretrained(target)
    with pytest.raises(TargetError, match="already holds a perceiver model"):
        second.save_pretrained(target)
    card = (target / "README.md").read_text()
    (target / "README.md").write_text(card.replace("pipeline_tag: text-generation", "pipeline_tag: other"))
    second.save_pretrained(target, overwrite=True)  # a card perceiver wrote (marker kept) is replaced
    assert card_metadata((target / "README.md").read_text())["pipeline_tag"] == "text-generation"
    (target / "README.md").write_text("# My own card\n")
    first.save_pretrained(target, overwrite=True)  # the user's card is kept, the weights replaced
    assert (target / "README.md").read_text() == "# My own card\n"
    torch.testing.assert_close(logits(load_model(target), "clm"), logits(first.eval(), "clm"))


def fake_run(root: Path, model, dataset="wikitext-2", metrics=((0, 5.6, None), (9, 4.1, None), (9, None, 4.25))):
    """A training run directory as ``perceiver train`` leaves it: run.yaml, logs/metrics.csv, model/."""
    run = root / "run"
    save_model(model, run / "model")
    record = {"task": model.task, "data": {"name": dataset, "batch_size": 4}, "adapter": {"name": "text-bytes"},
              "model": {}, "optimizer": {"lr": 0.001},
              "trainer": {"max_steps": 10, "precision": "32", "init_from": None, "lora_r": 0}}
    (run / "run.yaml").write_text(yaml.safe_dump(record))
    (run / "logs").mkdir()
    with open(run / "logs" / "metrics.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["epoch", "lr/decay", "step", "tok/s", "train_loss", "val_loss"])
        for step, train, val in metrics:
            writer.writerow([0, 0.001, step, 99.0, train or "", val or ""])
    return run


def test_a_run_s_card_names_its_data_steps_command_and_final_metrics(tmp_path):
    model = MODELS["clm"]()
    run = fake_run(tmp_path, model)
    card = model_card(model, source=run / "model", name="me/tiny")
    meta = card_metadata(card)
    assert meta["datasets"] == ["Salesforce/wikitext"] and meta["pipeline_tag"] == "text-generation"
    assert "| val_loss | 4.2500 |" in card and "| train_loss | 4.1000 |" in card  # the last value of each
    assert "tok/s" not in card and "lr/decay" not in card
    assert "perceiver train clm --config run.yaml" in card and "- steps: 10, batch size 4" in card
    assert f"{sum(p.numel() for p in model.parameters()):,} parameters" in card
    assert card.count(MARKER) == 1 and 'perceiver.load_model("me/tiny")' in card
    assert model_card(model, source=run / "checkpoints" / "last.ckpt") == model_card(model, source=run / "model")


def test_a_card_without_a_run_or_a_hub_data_set_has_no_datasets(tmp_path):
    model = MODELS["image-clf"]()
    assert "datasets" not in card_metadata(model_card(model))
    run = fake_run(tmp_path, model, dataset="text")
    meta = card_metadata(model_card(model, source=run))
    assert "datasets" not in meta and meta["pipeline_tag"] == "image-classification"


@pytest.mark.slow
def test_a_training_run_exports_with_its_card(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PERCEIVER_CACHE_DIR", str(tmp_path / "cache"))
    text = tmp_path / "text.txt"
    text.write_text(" ".join(["the quick brown fox jumps over a lazy dog"] * 300))
    run = tmp_path / "run"
    code, _, err = cli(capsys, "train", "clm", "--data", "text", "--data-path", text, "--model", "clm-tiny",
                       "--max-steps", 2, "--val-check-interval", 2, "--batch-size", 4, "--limit-val-batches", 2,
                       "--no-progress", "--warmup-steps", 1, "--log-every-n-steps", 1, "--output-dir", run)
    assert code == 0, err
    card = (run / "model" / "README.md").read_text()
    with open(run / "logs" / "metrics.csv") as file:
        val_loss = [float(row["val_loss"]) for row in csv.DictReader(file) if row.get("val_loss")][-1]
    assert f"| val_loss | {val_loss:.4f} |" in card and "- data set: `text`" in card and "- steps: 2," in card
    assert card_metadata(card)["pipeline_tag"] == "text-generation"


# -------------------------------------------------------------------------------------------------------------
#  perceiver push, with the network faked
# -------------------------------------------------------------------------------------------------------------


class Uploads:
    """Stands in for the Hub's side of HfApi: records what would be sent."""

    def __init__(self):
        self.created, self.branches, self.uploads = [], [], []

    def install(self, monkeypatch):
        from huggingface_hub import HfApi

        uploads = self

        def create_repo(api, repo_id, **kwargs):
            uploads.created.append((repo_id, kwargs.get("private"), api.token))
            return type("RepoUrl", (), {"repo_id": repo_id})()

        def create_branch(api, repo_id, *, branch, **kwargs):
            uploads.branches.append((repo_id, branch))

        def upload_folder(api, *, repo_id, folder_path, revision=None, **kwargs):
            folder = Path(folder_path)
            uploads.uploads.append({"repo_id": repo_id, "revision": revision,
                                    "files": sorted(p.name for p in folder.iterdir()),
                                    "card": (folder / "README.md").read_text()})
            return type("CommitInfo", (), {"commit_url": f"https://hub.test/{repo_id}/commit/1"})()

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "create_branch", create_branch)
        monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
        return self


@pytest.fixture
def hub(monkeypatch, tmp_path):
    import tempfile

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where push writes its temporary export
    yield Uploads().install(monkeypatch)
    assert list((tmp_path / "tmp").glob("perceiver-push-*")) == []  # and removes it (torch may keep a cache there)


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    import huggingface_hub.constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


def test_push_of_a_run_uploads_its_export_and_card(hub, tmp_path, capsys):
    model = MODELS["clm"]()
    run = fake_run(tmp_path, model)
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "push", run, "--repo", "me/tiny-clm", "--private", "--token", "hf_test")
    assert code == 0, err
    assert hub.created == [("me/tiny-clm", True, "hf_test")] and hub.branches == []
    [upload] = hub.uploads
    assert upload["repo_id"] == "me/tiny-clm" and upload["revision"] is None
    assert upload["files"] == ["README.md", "config.json", "model.safetensors"]
    assert card_metadata(upload["card"])["datasets"] == ["Salesforce/wikitext"]
    assert "| val_loss | 4.2500 |" in upload["card"] and "# me/tiny-clm" in upload["card"]
    assert snapshot(tmp_path) == before  # nothing written beside the run
    assert "pushed" in err and "me/tiny-clm" in err


def test_push_of_a_checkpoint_to_a_branch(hub, tmp_path, capsys):
    from tiny_models import clm

    torch.manual_seed(0)
    model = clm()
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    from dataclasses import asdict

    torch.save({"hyper_parameters": {"config": asdict(model.config), "task": "clm"}, "perceiver_task": "clm",
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    code, _, err = cli(capsys, "push", ckpt, "--repo", "me/tiny", "--revision", "v1", "--token", "hf_test")
    assert code == 0, err
    assert hub.branches == [("me/tiny", "v1")] and hub.uploads[0]["revision"] == "v1"
    assert hub.uploads[0]["files"] == ["README.md", "config.json", "model.safetensors"]


def test_push_uploads_a_subword_tokenizer_and_a_readme_of_the_users(hub, tmp_path, capsys):
    from tiny_tokenizer import train_tokenizer

    from perceiver.tasks.clm import CausalLanguageModelConfig
    from perceiver.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(train_tokenizer(tmp_path / "tok"))
    model = CausalLanguageModel(CausalLanguageModelConfig(vocab_size=tokenizer.vocab_size, max_seq_len=32,
                                                          max_latents=8, num_channels=16, num_heads=2,
                                                          num_self_attention_layers=1))
    export = save_model(model, tmp_path / "export", tokenizer=tokenizer)
    tokenizer_files = sorted(set(p.name for p in export.iterdir()) - {"config.json", "model.safetensors"})
    assert tokenizer_files
    (export / "README.md").write_text("# Mine\n")
    code, _, err = cli(capsys, "push", export, "--repo", "me/sub", "--token", "hf_test")
    assert code == 0, err
    [upload] = hub.uploads
    assert upload["files"] == sorted(["README.md", "config.json", "model.safetensors", *tokenizer_files])
    assert upload["card"] == "# Mine\n"


def test_push_to_hub_in_python(hub, tmp_path):
    url = MODELS["mlm"]().push_to_hub("me/tiny-mlm", token="hf_test")
    assert url == "https://hub.test/me/tiny-mlm/commit/1"
    [upload] = hub.uploads
    assert upload["files"] == ["README.md", "config.json", "model.safetensors"]
    assert card_metadata(upload["card"])["pipeline_tag"] == "fill-mask"


def test_push_without_a_token_is_one_line_and_writes_nothing(hub, no_token, tmp_path, capsys):
    run = fake_run(tmp_path, MODELS["clm"]())
    before = snapshot(tmp_path)
    code, out, err = cli(capsys, "push", run, "--repo", "me/tiny")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error:"), err
    assert "needs a token" in err and "HF_TOKEN" in err and "hf auth login" in err
    assert hub.created == [] and hub.uploads == [] and snapshot(tmp_path) == before
    from perceiver.publishing import PushError

    with pytest.raises(PushError, match="needs a token"):
        MODELS["clm"]().push_to_hub("me/tiny")


@pytest.mark.parametrize("repo", ["me", "me/x@v1", "a/b/c"])
def test_push_to_a_bad_repo_id_is_one_line(repo, hub, tmp_path, capsys):
    run = fake_run(tmp_path, MODELS["clm"]())
    code, _, err = cli(capsys, "push", run, "--repo", repo, "--token", "hf_test")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "is not a Hub repo id" in err
    assert hub.uploads == []


class RefusingHub(http.server.BaseHTTPRequestHandler):
    """Answers every request as the Hub does to a token it does not know (401) or one that may not write to the
    namespace (403)."""

    def do_POST(self):
        unknown = self.headers.get("Authorization") == "Bearer hf_unknown"
        self.send_response(401 if unknown else 403)
        body = json.dumps({"error": "Invalid credentials" if unknown else
                           "You don't have the rights to create a model under the namespace"}).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args):
        pass


def test_push_failures_of_the_hub_are_one_line(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    run = fake_run(tmp_path, MODELS["clm"]())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RefusingHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        code, _, err = cli(capsys, "push", run, "--repo", "someone/else", "--token", "hf_test")
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert "may not write to someone/else (403)" in err
        code, _, err = cli(capsys, "push", run, "--repo", "me/x", "--token", "hf_unknown")
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert "refused the token (401)" in err
    finally:
        server.shutdown()
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens
    code, _, err = cli(capsys, "push", run, "--repo", "me/x", "--token", "hf_test")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "cannot reach the Hugging Face Hub (http://127.0.0.1:9)" in err
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    code, _, err = cli(capsys, "push", run, "--repo", "me/x", "--token", "hf_test")
    assert code == 1 and "HF_HUB_OFFLINE set" in err and len(err.strip().splitlines()) == 1, err


# -------------------------------------------------------------------------------------------------------------
#  Loading holds the weights once
# -------------------------------------------------------------------------------------------------------------


def test_load_model_takes_device_and_keeps_map_location(tmp_path):
    target = save_model(MODELS["clm"](), tmp_path / "m")
    assert next(load_model(target, device="cpu").parameters()).device.type == "cpu"
    assert next(load_model(target, map_location="cpu").parameters()).device.type == "cpu"
    with pytest.raises(ValueError, match="pass device only"):
        load_model(target, device="cpu", map_location="cuda")


def test_the_loaded_parameters_are_the_tensors_read_from_the_file(tmp_path, monkeypatch):
    """No copy: each parameter is the very tensor the file reader returned (a loader that builds the model with
    random weights and copies the file's into them would hold two copies while it loads)."""
    import safetensors.torch

    read = {}
    original = safetensors.torch.load_file

    def recording_load_file(*args, **kwargs):
        read.update(original(*args, **kwargs))
        return read

    target = save_model(MODELS["mlm"](), tmp_path / "m")
    monkeypatch.setattr(safetensors.torch, "load_file", recording_load_file)
    model = load_model(target)
    own = model.state_dict()
    assert read and all(own[name].data_ptr() == value.data_ptr() for name, value in read.items())


def test_shared_parameters_stay_shared_after_loading(tmp_path):
    from torch import nn

    from perceiver.empty_model import assign_weights, parameters_on_meta

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)
            self.b.weight = self.a.weight

    source = Tied()
    state = {k: v.clone() for k, v in source.state_dict().items()}
    with parameters_on_meta():
        empty = Tied()
    assert empty.a.weight.is_meta and empty.b.weight is empty.a.weight
    assign_weights(empty, state)
    assert empty.b.weight is empty.a.weight and torch.equal(empty.a.weight, source.a.weight)
    assert not nn.Linear(2, 2).weight.is_meta  # outside the block, modules are built as usual
