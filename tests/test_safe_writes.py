"""Every writer of the project refuses targets that hold what it did not write, replaces its own earlier output only
when asked, and leaves the old output intact when interrupted: model export (Python, ``convert``, end of training),
training output directories, checkpoints (see test_clm_training) and data caches."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from perceiver.checkpoint import load_model, save_model
from perceiver.cli import main
from perceiver.data.corpus import prepare_corpus
from perceiver.files import TargetError, atomic_write_file, replace_directory
from perceiver.tasks.clm import CausalLanguageModel, CausalLanguageModelConfig

ROOT = Path(__file__).resolve().parents[1]


def tiny(**overrides):
    values = dict(vocab_size=262, max_seq_len=32, max_latents=8, num_channels=16, num_heads=2,
                  num_self_attention_layers=2, cross_attention_dropout=0.0)
    values.update(overrides)
    return CausalLanguageModel(CausalLanguageModelConfig(**values))


def snapshot(directory: Path):
    """Every file under ``directory`` with its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def foreign_dir(path: Path) -> Path:
    (path / "other-model").mkdir(parents=True)
    (path / "notes.txt").write_text("my notes")
    (path / "other-model" / "weights.bin").write_bytes(b"\x00\x01")
    return path


def no_temporaries(parent: Path):
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name]


def same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_export_refuses_a_foreign_directory_and_keeps_it_intact(tmp_path):
    target = foreign_dir(tmp_path / "out")
    before = snapshot(target)
    with pytest.raises(TargetError, match="is not empty and is not a perceiver model; choose another path or pass"):
        save_model(tiny(), target)
    assert snapshot(target) == before and no_temporaries(tmp_path) == []


def test_export_with_overwrite_adds_its_files_and_keeps_the_foreign_ones(tmp_path):
    target = foreign_dir(tmp_path / "out")
    before = snapshot(target)
    model = tiny()
    save_model(model, target, overwrite=True)
    after = snapshot(target)
    assert {k: after[k] for k in before} == before
    assert set(after) - set(before) == {"config.json", "model.safetensors"}
    assert same_weights(load_model(target), model)


def test_export_never_replaces_a_foreign_file_even_with_overwrite(tmp_path):
    target = tmp_path / "hf-model"
    target.mkdir()
    (target / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(TargetError, match="config.json was not written by perceiver"):
        save_model(tiny(), target, overwrite=True)
    assert (target / "config.json").read_text() == '{"model_type": "bert"}'
    assert sorted(os.listdir(target)) == ["config.json"] and no_temporaries(tmp_path) == []


def test_export_replaces_an_earlier_export_only_with_overwrite(tmp_path):
    target = tmp_path / "model"
    first, second = tiny(), tiny(num_self_attention_layers=1)
    save_model(first, target)
    (target / "README.md").write_text("my model card")
    with pytest.raises(TargetError, match="already holds a perceiver model; pass --force"):
        save_model(second, target)
    assert same_weights(load_model(target), first)
    save_model(second, target, overwrite=True)
    assert load_model(target).config.num_self_attention_layers == 1
    assert (target / "README.md").read_text() == "my model card"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_an_interrupted_export_leaves_the_earlier_one_intact(tmp_path, monkeypatch):
    import safetensors.torch

    target = tmp_path / "model"
    first = tiny()
    save_model(first, target)
    before = snapshot(target)

    def killed(state, path, metadata=None):
        Path(path).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        save_model(tiny(), target, overwrite=True)
    assert snapshot(target) == before and no_temporaries(tmp_path) == []
    assert same_weights(load_model(target), first)


def test_saving_a_model_over_its_training_run_is_refused(tmp_path):
    run = tmp_path / "run"
    save_model(tiny(), run / "model")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"checkpoint")
    (run / "logs").mkdir()
    before = snapshot(run)
    with pytest.raises(TargetError, match="is not empty and is not a perceiver model"):
        save_model(load_model(run), run)
    assert snapshot(run) == before


def test_exports_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        target = save_model(tiny(), tmp_path / "model")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    for name in ("config.json", "model.safetensors"):
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o644


def hf_model_dir(tmp_path):
    from test_convert import hf_masked_lm

    path = tmp_path / "hf-mlm"
    hf_masked_lm().save_pretrained(path)
    return path


def cli(capsys, *args):
    try:
        main(list(args))
        code = 0
    except SystemExit as exit:
        code = exit.code or 0
    out, err = capsys.readouterr()
    return code, err


def test_convert_refuses_foreign_and_existing_outputs_unless_forced(tmp_path, capsys):
    source = hf_model_dir(tmp_path)
    capsys.readouterr()  # transformers' own progress output
    target = foreign_dir(tmp_path / "out")
    before = snapshot(target)
    code, err = cli(capsys, "convert", str(source), "--output", str(target))
    assert code == 1 and "is not empty and is not a perceiver model" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and snapshot(target) == before

    model_dir = tmp_path / "model"
    assert cli(capsys, "convert", str(source), "--output", str(model_dir))[0] == 0
    (model_dir / "notes.txt").write_text("kept")
    code, err = cli(capsys, "convert", str(source), "--output", str(model_dir))
    assert code == 1 and "already holds a perceiver model; pass --force" in err
    assert cli(capsys, "convert", str(source), "--output", str(model_dir), "--force")[0] == 0
    assert load_model(model_dir).task == "mlm" and (model_dir / "notes.txt").read_text() == "kept"


def test_training_refuses_a_foreign_output_dir_and_writes_nothing(tmp_path):
    corpus = tmp_path / "story.txt"
    corpus.write_text("a small robot learned to read. " * 40)
    target = foreign_dir(tmp_path / "out")
    before = snapshot(target)
    result = subprocess.run(
        [sys.executable, "-m", "perceiver.cli", "train", "clm", "--data", "text", "--data-path", str(corpus),
         "--model", "clm-tiny", "--max-steps", "2", "--no-progress", "--output-dir", str(target)],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PERCEIVER_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert result.returncode != 0 and "is not empty and is not a perceiver training run" in result.stderr
    assert "Traceback" not in result.stderr and snapshot(target) == before


def test_the_end_of_training_export_keeps_foreign_files_in_model(tmp_path):
    from perceiver.training.fit import check_output_dir

    run = tmp_path / "run"
    save_model(tiny(), run / "model")
    (run / "model" / "notes.txt").write_text("mine")
    check_output_dir(run)  # a run's own entries pass
    save_model(tiny(num_self_attention_layers=1), run / "model", task="clm", overwrite=True)  # what fit() calls
    assert (run / "model" / "notes.txt").read_text() == "mine"
    (run / "model" / "config.json").write_text("{}")  # no longer an export: its config.json is the user's
    with pytest.raises(TargetError, match="config.json was not written by perceiver"):
        check_output_dir(run)


def test_data_cache_refuses_a_foreign_directory_and_survives_interruption(tmp_path):
    target = foreign_dir(tmp_path / "cache")
    before = snapshot(target)
    with pytest.raises(TargetError, match="is not empty and is not a perceiver data cache"):
        prepare_corpus(target, {"train": lambda: ["text"], "val": lambda: ["held out"]})
    assert snapshot(target) == before

    def interrupted():
        yield "first document"
        raise KeyboardInterrupt

    cache = tmp_path / "corpus"
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus(cache, {"train": interrupted, "val": lambda: ["held out"]})
    assert not cache.exists() and no_temporaries(tmp_path) == []
    prepare_corpus(cache, {"train": lambda: ["text"], "val": lambda: ["held out"]})
    written = snapshot(cache)
    prepare_corpus(cache, {"train": lambda: ["other"], "val": lambda: ["other"]})  # complete: reused, not rewritten
    assert snapshot(cache) == written and json.loads((cache / "meta.json").read_text())["splits"]["train"]["bytes"] == 4


def test_atomic_file_write_keeps_the_old_file_when_interrupted(tmp_path):
    path = tmp_path / "mnist.npz"
    path.write_bytes(b"old")

    def killed(tmp):
        tmp.write_bytes(b"ne")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write_file(path, killed)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["mnist.npz"]
    atomic_write_file(path, lambda tmp: tmp.write_bytes(b"new"))
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["mnist.npz"]


def test_directory_swap_without_renameat2_keeps_the_same_guarantees(tmp_path, monkeypatch):
    import perceiver.files as files

    monkeypatch.setattr(files, "_renameat2", lambda: None)
    target = tmp_path / "out"
    replace_directory(target, lambda tmp: (tmp / "a").write_text("1"))
    (target / "mine").write_text("kept")
    replace_directory(target, lambda tmp: (tmp / "a").write_text("2"), own=["a"], overwrite=True)
    assert snapshot(target) == {"a": b"2", "mine": b"kept"} and no_temporaries(tmp_path) == []
