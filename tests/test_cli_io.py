"""The Perceiver IO workflows through the command line, on tiny configs: train mlm + fill-mask, train clf on images
and on text (from an mlm encoder) + eval + predict; and bad input, each a one-line error."""

import pytest
from cli_runner import cli

from perceiver.cli import main

FAST = ["--batch-size", "8", "--val-check-interval", "4", "--limit-val-batches", "2", "--max-steps", "4",
        "--no-progress", "--warmup-steps", "1"]


def ok(capsys, *args):
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    return out, err


def one_line_error(capsys, *args):
    code, out, err = cli(capsys, *args)
    assert code == 1 and "Traceback" not in err and err.strip().startswith("error:"), err
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("io-runs")
    mp = pytest.MonkeyPatch()
    mp.setenv("PERCEIVER_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def mlm_run(runs):
    out = runs / "mlm"
    main(["train", "mlm", "--data", "wikipedia-offline", "--model", "mlm-tiny", "--output-dir", str(out), *FAST])
    return out


@pytest.fixture(scope="module")
def image_run(runs):
    out = runs / "mnist"
    main(["train", "clf", "--data", "mnist-offline", "--model", "clf-tiny", "--output-dir", str(out), *FAST])
    return out


@pytest.fixture(scope="module")
def text_run(runs, mlm_run):
    out = runs / "bbc"
    main(["train", "clf", "--data", "bbc-news", "--encoder-from", str(mlm_run), "--freeze-encoder",
          "--max-seq-len", "48", "--output-dir", str(out), *FAST])
    return out


def test_mlm_train_eval_and_fill_mask(mlm_run, capsys):
    assert (mlm_run / "model" / "config.json").exists()
    out, _ = ok(capsys, "eval", "--model", str(mlm_run), "--data", "wikipedia-offline", "--max-batches", "2")
    assert "accuracy" in out and "loss" in out
    text = "The capital of France is [MASK][MASK][MASK][MASK][MASK]."
    out, _ = ok(capsys, "fill-mask", "--model", str(mlm_run), text, "--top-k", "3")
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 3 and lines[0].startswith("1. The capital of France is ") and "p=" in lines[0]


def test_clf_on_images_eval_and_predict(image_run, capsys, tmp_path):
    import numpy as np
    from PIL import Image

    out, _ = ok(capsys, "eval", "--model", str(image_run), "--data", "mnist-offline", "--max-batches", "2")
    assert "accuracy" in out
    digit = tmp_path / "digit.png"
    Image.fromarray((np.random.rand(28, 28) * 255).astype("uint8")).save(digit)
    photo = tmp_path / "photo.jpg"
    Image.fromarray((np.random.rand(50, 40, 3) * 255).astype("uint8")).save(photo)
    out, err = ok(capsys, "predict", "--model", str(image_run), str(digit), str(photo), "--top-k", "2")
    lines = out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(digit) + ": ") and lines[0].count("(") == 2
    assert "converted RGB to L, resized 40x50 to 28x28" in err


def test_clf_on_text_from_an_mlm_encoder(text_run, mlm_run, capsys):
    import json

    config = json.loads((text_run / "model" / "config.json").read_text())["config"]
    mlm_config = json.loads((mlm_run / "model" / "config.json").read_text())["config"]
    assert config["num_latents"] == mlm_config["num_latents"] and config["max_seq_len"] == 48
    assert config["class_names"] == ["business", "entertainment", "politics", "sports", "tech"]
    out, _ = ok(capsys, "eval", "--model", str(text_run), "--data", "bbc-news", "--max-batches", "2")
    assert "accuracy" in out
    out, _ = ok(capsys, "predict", "--model", str(text_run), "Shares fell sharply on Monday", "The match ended 2-1")
    lines = out.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("The match ended 2-1: ")
    assert all(line.count("(") == 3 and any(t in line for t in config["class_names"]) for line in lines)


def test_bad_input_is_one_line(image_run, text_run, mlm_run, capsys, tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG not really")
    assert "cannot read image" in one_line_error(capsys, "predict", "--model", str(image_run), str(corrupt))
    assert "does not exist" in one_line_error(capsys, "predict", "--model", str(image_run), str(tmp_path / "no.png"))
    assert "the text is empty" in one_line_error(capsys, "predict", "--model", str(text_run), "")
    assert "expected a 'clf' model" in one_line_error(capsys, "predict", "--model", str(mlm_run), "text")
    assert "expected a 'mlm' model" in one_line_error(capsys, "fill-mask", "--model", str(text_run), "a[MASK]")
    assert "no [MASK]" in one_line_error(capsys, "fill-mask", "--model", str(mlm_run), "plain")
    err = one_line_error(capsys, "eval", "--model", str(image_run), "--data", "bbc-news")
    assert "holds text data, but the model's adapter 'image' reads image" in err
    err = one_line_error(capsys, "eval", "--model", str(text_run), "--data", "imdb")  # 2 classes, not 5
    assert "does not fit the model" in err and "num_classes" in err
    err = one_line_error(capsys, "train", "clf", "--data", "bbc-news", "--encoder-from", str(image_run),
                         "--output-dir", str(tmp_path / "x"), *FAST)
    assert "is a 'clf' model; it must be a trained mlm model" in err
    err = one_line_error(capsys, "train", "clf", "--data", "mnist-offline", "--model", "clf-tiny", "--encoder-from",
                         str(mlm_run), "--output-dir", str(tmp_path / "y"), *FAST)
    assert "needs a text classifier" in err
    err = one_line_error(capsys, "train", "mlm", "--data", "mnist-offline", "--output-dir", str(tmp_path / "z"))
    assert "accepts tokens input" in err or "holds image data" in err
