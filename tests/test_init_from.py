"""``perceiver train TASK --init-from SOURCE``: a run starts from a loaded model's weights, architecture and tokenizer.

"Starts from" is checked where it shows: one step at a learning rate of 1e-12 leaves the weights as they were, so the
run's validation loss after it is the source's loss on the new data (``perceiver eval``), and its export holds the
source's weights; a run from scratch is far from both.
"""

from __future__ import annotations

import csv
import random

import pytest
import torch
from cli_runner import cli
from tiny_tokenizer import train_tokenizer

from perceiver.checkpoint import load_model
from perceiver.tokenizers import SubwordTokenizer, load_tokenizer

WORDS = "the quick brown fox jumps over a lazy dog while perceiver latents read every byte".split()
QUICK = ["--batch-size", "4", "--limit-val-batches", "4", "--no-progress", "--warmup-steps", "1",
         "--log-every-n-steps", "1"]
STAND_STILL = ["--max-steps", "1", "--val-check-interval", "1", "--lr", "1e-12"]
"""One optimizer step that changes no weight measurably: the run's metrics are the loaded weights' metrics."""


def one_error_line(code, err, *fragments):
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error:"), err
    for fragment in fragments:
        assert fragment in lines[0], err


def words(path, count, seed):
    rng = random.Random(seed)
    path.write_text(" ".join(rng.choice(WORDS) for _ in range(count)))
    return path


def val_loss(run):
    with open(run / "logs" / "metrics.csv") as file:
        return [float(row["val_loss"]) for row in csv.DictReader(file) if row.get("val_loss")][-1]


def eval_loss(capsys, model, *data):
    code, out, err = cli(capsys, "eval", "--model", model, *data, "--batch-size", 4, "--max-batches", 4)
    assert code == 0, err
    return float(next(line for line in out.splitlines() if "loss" in line and "│" in line).split("│")[2])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PERCEIVER_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    root = tmp_path_factory.mktemp("texts")
    return words(root / "pretrain.txt", 6000, 0), words(root / "mine.txt", 3000, 1)


@pytest.fixture(scope="module")
def clm_run(texts, cache, tmp_path_factory):
    """A tiny clm trained on one text until it is far better than chance (loss ~2.8 vs ln 262 = 5.6)."""
    run = tmp_path_factory.mktemp("clm") / "run"
    from perceiver.cli import main

    main(["train", "clm", "--data", "text", "--data-path", str(texts[0]), "--model", "clm-tiny", "--max-steps", "60",
          "--lr", "3e-3", "--val-check-interval", "60", *QUICK, "--output-dir", str(run)])
    return run


@pytest.mark.slow
def test_a_clm_continues_on_my_texts_from_the_loaded_weights(clm_run, texts, cache, tmp_path, capsys):
    mine = ["--data", "text", "--data-path", texts[1]]
    code, _, err = cli(capsys, "train", "clm", *mine, "--init-from", clm_run / "model", *QUICK, *STAND_STILL,
                       "--output-dir", tmp_path / "still")
    assert code == 0, err
    loaded = eval_loss(capsys, clm_run, *mine)
    assert val_loss(tmp_path / "still") == pytest.approx(loaded, abs=1e-4)
    code, _, err = cli(capsys, "train", "clm", *mine, "--model", "clm-tiny", *QUICK, *STAND_STILL,
                       "--output-dir", tmp_path / "scratch")
    assert code == 0, err
    assert val_loss(tmp_path / "scratch") > loaded + 1.0  # from scratch: near chance

    code, _, err = cli(capsys, "train", "clm", *mine, "--init-from", clm_run, *QUICK, "--max-steps", "40",
                       "--val-check-interval", "40", "--lr", "3e-3", "--output-dir", tmp_path / "continued")
    assert code == 0, err
    continued = load_model(tmp_path / "continued")
    assert continued.config == load_model(clm_run).config  # the architecture is kept
    assert val_loss(tmp_path / "continued") < loaded  # and it learns the new text


@pytest.mark.slow
def test_an_mlm_fine_tunes_and_then_a_classifier_starts_from_its_encoder(cache, tmp_path, capsys):
    data = ["--data", "bbc-news", "--max-seq-len", 64, *QUICK]
    code, _, err = cli(capsys, "train", "mlm", *data, "--model", "mlm-tiny", "--max-steps", 5,
                       "--val-check-interval", 5, "--output-dir", tmp_path / "mlm")
    assert code == 0, err
    source = load_model(tmp_path / "mlm")
    code, _, err = cli(capsys, "train", "mlm", *data, "--init-from", tmp_path / "mlm", *STAND_STILL,
                       "--output-dir", tmp_path / "mlm-still")
    assert code == 0, err
    still = load_model(tmp_path / "mlm-still")
    assert still.config == source.config
    for (name, before), after in zip(source.state_dict().items(), still.state_dict().values()):
        assert torch.allclose(before, after, atol=1e-6), name
    code, _, err = cli(capsys, "train", "mlm", *data, "--init-from", tmp_path / "mlm", "--max-steps", 5,
                       "--val-check-interval", 5, "--lr", "1e-3", "--output-dir", tmp_path / "mlm-tuned")
    assert code == 0, err
    tuned = load_model(tmp_path / "mlm-tuned")
    assert not torch.equal(tuned.encoder.latent_provider.query, source.encoder.latent_provider.query)  # it trained

    code, _, err = cli(capsys, "train", "clf", *data, "--model", "clf-tiny", "--encoder-from", tmp_path / "mlm-tuned",
                       *STAND_STILL, "--output-dir", tmp_path / "clf")
    assert code == 0, err
    clf = load_model(tmp_path / "clf")
    encoder = {k: v for k, v in clf.state_dict().items() if k.startswith(("encoder.", "input_adapter."))}
    assert encoder and all(torch.allclose(v, tuned.state_dict()[k], atol=1e-6) for k, v in encoder.items())
    code, _, err = cli(capsys, "train", "clf", *data, "--init-from", tmp_path / "clf", *STAND_STILL,
                       "--output-dir", tmp_path / "clf-again")
    assert code == 0, err
    again = load_model(tmp_path / "clf-again")
    assert again.config.class_names == clf.config.class_names and again.config.encoder_from is None
    assert all(torch.allclose(v, clf.state_dict()[k], atol=1e-6) for k, v in again.state_dict().items())


@pytest.mark.slow
def test_a_subword_clm_keeps_its_tokenizer(texts, cache, tmp_path, capsys):
    tokenizer_dir = train_tokenizer(tmp_path / "tokenizer")
    mine = ["--data", "text", "--data-path", texts[1]]
    code, _, err = cli(capsys, "train", "clm", *mine, "--tokenizer", tokenizer_dir, "--model", "clm-tiny", *QUICK,
                       "--max-steps", 2, "--val-check-interval", 2, "--output-dir", tmp_path / "sub")
    assert code == 0, err
    code, _, err = cli(capsys, "train", "clm", *mine, "--init-from", tmp_path / "sub", *QUICK, *STAND_STILL,
                       "--output-dir", tmp_path / "sub-tuned")
    assert code == 0, err
    tuned = load_tokenizer(tmp_path / "sub-tuned")
    assert isinstance(tuned, SubwordTokenizer)
    assert tuned.fingerprint() == load_tokenizer(tokenizer_dir).fingerprint()
    assert val_loss(tmp_path / "sub-tuned") == pytest.approx(eval_loss(capsys, tmp_path / "sub", *mine), abs=1e-4)

    other = train_tokenizer(tmp_path / "other", vocab_size=280)
    code, _, err = cli(capsys, "train", "clm", *mine, "--init-from", tmp_path / "sub", "--tokenizer", other,
                       "--output-dir", tmp_path / "bad")
    one_error_line(code, err, "has another tokenizer", "leave out --tokenizer")
    assert not (tmp_path / "bad").exists()


def test_bad_sources_are_one_line_and_write_nothing(clm_run, texts, cache, tmp_path, capsys):
    run = tmp_path / "new"
    text = ["--data", "text", "--data-path", texts[1], "--output-dir", run]
    code, _, err = cli(capsys, "train", "mlm", *text, "--init-from", clm_run)
    one_error_line(code, err, "is a 'clm' model", "perceiver train clm --init-from")
    code, _, err = cli(capsys, "train", "clm", *text, "--init-from", clm_run, "--num-channels", 64)
    one_error_line(code, err, "num_channels=64 (it has 32) change its architecture")
    code, _, err = cli(capsys, "train", "clm", *text, "--init-from", clm_run, "--model", "clm-tiny")
    one_error_line(code, err, "leave out --model clm-tiny")
    code, _, err = cli(capsys, "train", "clm", *text, "--init-from", tmp_path / "nowhere")
    one_error_line(code, err, "--init-from", "does not exist")
    code, _, err = cli(capsys, "train", "clm", *text, "--init-from", clm_run, "--tokenizer",
                       train_tokenizer(tmp_path / "tok"))
    one_error_line(code, err, "reads bytes", "leave out --tokenizer")
    assert not run.exists()
