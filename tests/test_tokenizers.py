"""Subword tokenizers: a model brings its tokenizer, and a new clm trains on the ids of one.

The tokenizer is a byte-level BPE trained here in seconds (``tiny_tokenizer.train_tokenizer``); nothing is downloaded.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_tokenizer import TEXT, train_tokenizer

from perceiver.cli import main
from perceiver.data.corpus import id_dtype, open_split
from perceiver.data.text import TextFilesDataModule
from perceiver.data.tokenizer import ByteTokenizer
from perceiver.tokenizers import SubwordTokenizer, load_tokenizer

TINY = ["--model", "clm-tiny", "--batch-size", "2", "--val-check-interval", "2", "--limit-val-batches", "1",
        "--no-progress", "--warmup-steps", "1", "--max-steps", "2"]


def cli(capsys, *args):
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exit:
        code = exit.code or 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def one_error_line(code, err, *fragments):
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error:"), err
    for fragment in fragments:
        assert fragment in lines[0], err


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return train_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "story.txt"
    path.write_text(TEXT * 30)
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PERCEIVER_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_corpus_holds_the_tokenizer_ids_under_its_own_key(tokenizer_dir, text_file, cache, tmp_path):
    tokenizer = load_tokenizer(tokenizer_dir)
    assert isinstance(tokenizer, SubwordTokenizer) and tokenizer.vocab_size == 300
    data = TextFilesDataModule(data_path=str(text_file), max_seq_len=32, tokenizer=str(tokenizer_dir))
    data.setup()
    raw = text_file.read_bytes()
    cut = int(len(raw) * (1 - data.config.val_fraction))
    train = open_split(data.corpus_dir, "train")
    assert train.dtype == np.uint16
    assert train.tolist() == tokenizer.encode(raw[:cut].decode())
    val = tokenizer.encode(raw[cut:].decode())
    window = data.val_set[0]
    assert window.tolist() == val[:33]  # ids as they are: no byte offset
    assert tokenizer.decode(window) == tokenizer.decode(val[:33])
    byte_data = TextFilesDataModule(data_path=str(text_file), max_seq_len=32)
    other = TextFilesDataModule(data_path=str(text_file), max_seq_len=32,
                                tokenizer=str(train_tokenizer(tmp_path / "other", vocab_size=280)))
    assert len({data.corpus_dir, byte_data.corpus_dir, other.corpus_dir}) == 3
    assert TextFilesDataModule.model_facts(data.config) == {"vocab_size": 300}
    assert [id_dtype(n) for n in (262, 300, 65536, 65537)] == [np.uint16, np.uint16, np.uint16, np.uint32]
    assert id_dtype(256) == np.uint8


@pytest.mark.slow
def test_a_clm_trained_with_a_subword_tokenizer_generates_and_evaluates_with_it(
        tokenizer_dir, text_file, cache, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = cli(capsys, "train", "clm", "--data", "text", "--data-path", text_file,
                       "--tokenizer", tokenizer_dir, *TINY, "--output-dir", run)
    assert code == 0, err
    from perceiver.checkpoint import load_model

    model = load_model(run)
    assert model.config.vocab_size == 300
    for source in (run, run / "model", run / "checkpoints" / "last.ckpt"):
        assert isinstance(load_tokenizer(source), SubwordTokenizer), source
    assert (run / "model" / "tokenizer.json").is_file() and (run / "tokenizer" / "tokenizer.json").is_file()

    tokenizer = load_tokenizer(run)
    prompt = "The Perceiver reads"
    ids = torch.tensor([tokenizer.encode(prompt)])
    new = model.generate(ids, torch.zeros_like(ids, dtype=torch.bool), num_tokens=8, num_latents=ids.shape[1],
                         temperature=0.0)
    code, out, err = cli(capsys, "generate", "--model", run, "--prompt", prompt, "-n", 8, "--temperature", 0)
    assert code == 0, err
    assert out.rstrip("\n") == prompt + tokenizer.decode(new[0])

    exported = tmp_path / "exported"  # an export carries the tokenizer: reloaded, it decodes the same text
    code, _, err = cli(capsys, "export", run, "--output", exported)
    assert code == 0, err
    assert (exported / "tokenizer.json").is_file()
    assert load_tokenizer(exported).fingerprint() == tokenizer.fingerprint()
    code, again, err = cli(capsys, "generate", "--model", exported, "--prompt", prompt, "-n", 8, "--temperature", 0)
    assert code == 0, err
    assert again == out

    code, out, err = cli(capsys, "eval", "--model", run, "--data", "text", "--data-path", text_file)
    assert code == 0, err
    assert "bits_per_token" in out and "bpb" not in out


def test_a_model_with_more_tokens_than_bytes_and_no_tokenizer_is_refused(tmp_path, capsys):
    from perceiver.checkpoint import save_model
    from perceiver.tasks.clm import CausalLanguageModel, CausalLanguageModelConfig

    model = CausalLanguageModel(CausalLanguageModelConfig(vocab_size=300, max_seq_len=16, max_latents=4,
                                                          num_channels=16, num_heads=2, num_self_attention_layers=1))
    save_model(model, tmp_path / "m")
    code, out, err = cli(capsys, "generate", "--model", tmp_path / "m", "--prompt", "hi", "-n", 2)
    one_error_line(code, err, "300-token vocabulary", "no tokenizer is saved")
    assert out == ""
    assert isinstance(load_tokenizer(tmp_path / "m"), ByteTokenizer)


def test_tokenizer_errors_are_one_line_and_write_nothing(tokenizer_dir, text_file, cache, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = cli(capsys, "train", "mlm", "--data", "text", "--data-path", text_file, "--tokenizer",
                       tokenizer_dir, "--model", "mlm-tiny", "--output-dir", run)
    one_error_line(code, err, "task 'mlm' reads bytes", "--tokenizer")
    code, _, err = cli(capsys, "train", "clm", "--data", "text", "--data-path", text_file, "--tokenizer",
                       tmp_path / "nowhere" / "tok", *TINY, "--output-dir", run)
    one_error_line(code, err, "does not exist")
    code, _, err = cli(capsys, "train", "clm", "--data", "text", "--data-path", text_file, "--tokenizer",
                       text_file, *TINY, "--output-dir", run)
    one_error_line(code, err, "neither a tokenizer directory", "nor a model")
    assert not run.exists() and not cache.exists()


def test_a_krasserm_model_brings_the_tokenizer_saved_beside_it_into_its_export(tmp_path, capsys):
    import shutil
    from pathlib import Path

    source = tmp_path / "krasserm-clm"
    shutil.copytree(Path(__file__).resolve().parent / "fixtures" / "krasserm" / "clm", source)
    tokenizer = load_tokenizer(train_tokenizer(source, vocab_size=262))  # saved beside its config.json
    assert isinstance(load_tokenizer(source), SubwordTokenizer)
    code, _, err = cli(capsys, "convert", source, "--output", tmp_path / "converted")
    assert code == 0, err
    assert load_tokenizer(tmp_path / "converted").fingerprint() == tokenizer.fingerprint()
    outs = []
    for model in (source, tmp_path / "converted"):
        code, out, err = cli(capsys, "generate", "--model", model, "--prompt", "The Perceiver", "-n", 6,
                             "--temperature", 0, "--num-latents", 1)
        assert code == 0, err
        outs.append(out)
    ids = torch.tensor([tokenizer.encode("The Perceiver")])
    from perceiver.checkpoint import load_model

    new = load_model(source).generate(ids, torch.zeros_like(ids, dtype=torch.bool), num_tokens=6, num_latents=1,
                                      temperature=0.0)
    assert outs[0] == outs[1] == "The Perceiver" + tokenizer.decode(new[0]) + "\n"
