"""Bad input to the commands that use a trained model (generate, eval, fill-mask, predict) and to loading one.

Each error is one line on stderr with a non-zero exit and no traceback; nothing is printed on stdout and nothing is
written. The models are tiny and untrained (built from presets and saved, no training), so these tests are fast.
Commands run in-process through ``perceiver.cli.main``.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import asdict
from pathlib import Path
from typing import List

import pytest
from conftest import example_plugin_module

from perceiver import registry
from perceiver.checkpoint import ModelLoadError, load_model, save_model
from perceiver.cli import main


def files_under(root: Path) -> List[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def cli(capsys, cli_width, tmp_path):
    """``cli(*args)`` runs the CLI in-process and returns (exit code, stdout, stderr); it checks that no traceback
    is shown and that nothing is written under tmp_path."""

    def run(*args: str):
        before = files_under(tmp_path)
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exit:
            code = exit.code or 0
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        assert files_under(tmp_path) == before, "the command wrote files"
        return code, out, err

    return run


def one_line(result, *fragments: str, exit_code: int = 1) -> str:
    """The single error line of a failed command, which contains every fragment; stdout is empty."""
    code, out, err = result
    lines = err.strip().splitlines()
    assert code == exit_code and out == "", (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def usage_error(result, *fragments: str) -> None:
    """A usage error: exit code 2, Click's message naming the option, stdout empty."""
    code, out, err = result
    assert code == 2 and out == "", (code, out, err)
    for fragment in fragments:
        assert fragment in err, err


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Untrained tiny models of each task, exported: {"clm": dir, "mlm": dir, "clf": dir (8x8 grey images)}."""
    import torch

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("models")
    built = {
        "clm": registry.create("model", "clm-tiny"),
        "mlm": registry.create("model", "mlm-tiny"),
        "clf": registry.create("model", "clf-tiny", adapter="image", image_shape=[8, 8, 1],
                               class_names=["circle", "square", "cross"]),
    }
    return {name: save_model(model, root / name) for name, model in built.items()}


def copy_export(source: Path, target: Path, **config_changes) -> Path:
    """A copy of an export with some config values replaced."""
    target.mkdir()
    (target / "model.safetensors").write_bytes((source / "model.safetensors").read_bytes())
    meta = json.loads((source / "config.json").read_text())
    meta["config"].update(config_changes)
    (target / "config.json").write_text(json.dumps(meta))
    return target


# ---------------------------------------------------------------------------------------------------------------
#  Loading
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task, changes, message", [
    ("clm", {"num_channels": "abc"}, "invalid value 'abc' for num_channels: expected int"),
    ("clm", {"cross_attention_dropout": [0.5]}, "invalid value [0.5] for cross_attention_dropout: expected float"),
    ("clm", {"adapter_options": {"rotary_fraction": "half"}},
     "invalid value 'half' for adapter_options.rotary_fraction: expected float"),
    ("clf", {"image_shape": [8, "eight", 1]}, "invalid value [8, 'eight', 1] for image_shape: expected list of int"),
    ("clf", {"class_names": "circle"}, "invalid value 'circle' for class_names: expected list of str or none"),
])
def test_config_values_are_type_checked_on_load(models, tmp_path, cli, task, changes, message):
    broken = copy_export(models[task], tmp_path / "broken", **changes)
    with pytest.raises(ModelLoadError, match=re.escape(message)):
        load_model(broken)
    command = ["generate", "--prompt", "hi"] if task == "clm" else ["predict", "image.png"]
    one_line(cli(*command, "--model", broken), f"{broken}: config does not fit task {task!r}", message)


def test_config_values_are_converted_like_set_values(models, tmp_path):
    """As with ``--set``, a value that reads as the field's type is taken: "32" is the int 32."""
    model = load_model(copy_export(models["clm"], tmp_path / "strings", num_channels="32", max_latents=16.0))
    assert model.config.num_channels == 32 and type(model.config.max_latents) is int


@pytest.mark.parametrize("content", [b"", b"meeting notes\nbuy milk\n", b"\x89PNG\r\n\x1a\n"])
def test_a_file_that_is_not_a_model_is_one_line(tmp_path, cli, content):
    notes = tmp_path / "notes.txt"
    notes.write_bytes(content)
    one_line(cli("generate", "--model", notes, "--prompt", "hi"),
             f"cannot read checkpoint {notes}: not a torch file", "a training output directory or a Lightning .ckpt")


def test_a_file_of_an_export_stands_for_its_directory(models):
    assert load_model(models["clm"] / "model.safetensors").config == load_model(models["clm"]).config


def lightning_like_checkpoint(path: Path, model, task=None) -> Path:
    import torch

    checkpoint = {"hyper_parameters": {"config": asdict(model.config)},
                  "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}
    if task:
        checkpoint["perceiver_task"] = task
    torch.save(checkpoint, path)
    return path


def test_a_checkpoint_that_does_not_name_its_task_is_refused(models, tmp_path, cli):
    model = load_model(models["mlm"])
    loaded = load_model(lightning_like_checkpoint(tmp_path / "named.ckpt", model, task="mlm"))
    assert loaded.task == "mlm"
    anonymous = lightning_like_checkpoint(tmp_path / "anonymous.ckpt", model)
    with pytest.raises(ModelLoadError, match="does not name its task"):
        load_model(anonymous)
    one_line(cli("fill-mask", "--model", anonymous, "a[MASK]"), f"{anonymous} does not name its task")


def overwrite_tensor(weights: Path, name: str, value: float) -> None:
    """Overwrite the first element of the float32 tensor ``name`` in a safetensors file, in place."""
    data = bytearray(weights.read_bytes())
    header_size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + header_size])
    assert header[name]["dtype"] == "F32"
    start = 8 + header_size + header[name]["data_offsets"][0]
    data[start:start + 4] = struct.pack("<f", value)
    weights.write_bytes(bytes(data))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_at_load(models, tmp_path, cli, value):
    damaged = copy_export(models["clm"], tmp_path / "damaged")
    overwrite_tensor(damaged / "model.safetensors", "out_norm.weight", value)
    with pytest.raises(ModelLoadError, match=r"hold NaN or infinite values \(out_norm.weight\)"):
        load_model(damaged)
    one_line(cli("generate", "--model", damaged, "--prompt", "hi", "--num-tokens", "4"),  # the prompt is not printed
             "hold NaN or infinite values", "damaged or training diverged")
    overwrite_tensor(damaged / "model.safetensors", "out_norm.weight", 1.0)  # repaired, it loads
    load_model(damaged)


def test_non_finite_names_exactly_the_tensors_with_nan_or_inf():
    import torch

    from perceiver.checkpoint import non_finite

    state = {
        "ok": torch.randn(5),
        "nan": torch.tensor([1.0, float("nan")]),
        "cancelling": torch.tensor([float("inf"), float("-inf")]),  # their sum is NaN
        "half": torch.tensor([1.0, float("inf")], dtype=torch.float16),
        "huge": torch.tensor([1e300, 1e300], dtype=torch.float64),  # finite, though their float32 sum is not
        "ids": torch.tensor([1, 2, 3]),
    }
    assert non_finite(state) == ["nan", "cancelling", "half"]


# ---------------------------------------------------------------------------------------------------------------
#  --device: one check for every command
# ---------------------------------------------------------------------------------------------------------------


def device_commands(models):
    return {
        "generate": ["generate", "--model", models["clm"], "--prompt", "hi"],
        "eval": ["eval", "--model", models["clm"], "--data", "wikipedia-offline"],
        "fill-mask": ["fill-mask", "--model", models["mlm"], "a[MASK]"],
        "predict": ["predict", "--model", models["clf"], "image.png"],
    }


@pytest.mark.parametrize("command", ["generate", "eval", "fill-mask", "predict"])
def test_a_device_this_machine_lacks_is_one_line_listing_those_it_has(models, cli, command):
    from perceiver.devices import available_devices

    listing = f"devices on this machine: {', '.join(available_devices())}"
    args = device_commands(models)[command]
    one_line(cli(*args, "--device", "tpu"), f"unknown device 'tpu'; {listing}")
    one_line(cli(*args, "--device", "cuda:7"), f"device 'cuda:7' is not available; {listing}")


def test_device_check_knows_every_gpu(monkeypatch):
    import torch

    from perceiver.devices import DeviceError, check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda") == "cuda" and check_device("cuda:1") == "cuda:1" and check_device("cpu") == "cpu"
    with pytest.raises(DeviceError, match=r"device 'cuda:2' is not available; devices on this machine: cpu, cuda:0, "
                                          r"cuda:1"):
        check_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="device 'cuda' is not available; devices on this machine: cpu$"):
        check_device("cuda")


# ---------------------------------------------------------------------------------------------------------------
#  The model must fit the data or the input
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model, data, message", [
    ("clm", "mnist-offline", "data set 'mnist-offline' holds image data, but the model's adapter 'text-bytes' reads "
                             "text"),
    ("clm", "bbc-news", "task 'clm' cannot use data set 'bbc-news': it gives labelled examples, the task reads "
                        "windows of a sequence"),
    ("clf", "wikipedia-offline", "data set 'wikipedia-offline' holds text data, but the model's adapter 'image' reads "
                                 "image"),
    ("mlm", "mnist-offline", "data set 'mnist-offline' holds image data"),
])
def test_eval_refuses_data_the_model_cannot_read(models, cli, model, data, message):
    one_line(cli("eval", "--model", models[model], "--data", data), message)


def test_train_refuses_a_data_set_whose_batches_the_task_cannot_read(cli, tmp_path):
    one_line(cli("train", "clm", "--data", "bbc-news", "--output-dir", tmp_path / "run"),
             "task 'clm' cannot use data set 'bbc-news'")


@pytest.fixture
def audio_models(add_plugin, tmp_path_factory):
    """Models of each task with the mu-law audio adapter of plugins/perceiver-audio (registered in-process from
    source): {"clm": dir, "mlm": dir, "clf": dir}."""
    add_plugin(example_plugin_module("perceiver-audio"), package="perceiver-audio")
    root = tmp_path_factory.mktemp("audio")
    built = {
        "clm": registry.create("model", "audio-clm-tiny"),
        "mlm": registry.create("model", "mlm-tiny", adapter="mulaw"),
        "clf": registry.create("model", "clf-tiny", adapter="mulaw", num_classes=2),
    }
    return {name: save_model(model, root / name) for name, model in built.items()}


@pytest.mark.parametrize("task, args, message", [
    ("clm", ["generate", "--prompt", "hello", "--num-tokens", "4"], "generate gives the model text input"),
    ("mlm", ["fill-mask", "a[MASK]"], "fill-mask gives the model text input"),
    ("clf", ["predict", "a text"], "predict gives the model text or image input"),
])
def test_commands_refuse_a_model_that_does_not_read_their_input(audio_models, cli, task, args, message):
    one_line(cli(*args, "--model", audio_models[task]), message, "but its adapter 'mulaw' reads audio")


# ---------------------------------------------------------------------------------------------------------------
#  generate: every range checked before anything is printed, all with the same exit code
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--top-k", "0"], "Invalid value for --top-k: must be >= 1, got 0"),
    (["--top-p", "0"], "Invalid value for --top-p: must be in (0, 1], got 0.0"),
    (["--top-p", "1.5"], "Invalid value for --top-p: must be in (0, 1], got 1.5"),
    (["--temperature", "-1"], "Invalid value for --temperature: must be a number >= 0"),
    (["--temperature", "nan"], "Invalid value for --temperature: must be a number >= 0"),
    (["--num-tokens", "0"], "Invalid value for --num-tokens: must be >= 1, got 0"),
    (["--prompt", ""], "Invalid value for --prompt: the prompt is empty"),
])
def test_generate_checks_option_ranges_before_loading_the_model(tmp_path, cli, args, message):
    missing = tmp_path / "no-model"  # not even looked at
    usage_error(cli("generate", "--model", missing, "--prompt", "hi", *args), message)


@pytest.mark.parametrize("num_latents", ["0", "17"])
def test_generate_checks_num_latents_against_the_model(models, cli, num_latents):
    usage_error(cli("generate", "--model", models["clm"], "--prompt", "hi", "--num-latents", num_latents),
                f"Invalid value for --num-latents: must be in 1..16 (the model's max_latents), got {num_latents}")


# ---------------------------------------------------------------------------------------------------------------
#  predict: directories of images
# ---------------------------------------------------------------------------------------------------------------


def test_predict_reads_every_image_of_a_directory_in_name_order(models, tmp_path, capsys, cli_width):
    import numpy as np
    from PIL import Image

    folder = tmp_path / "shapes"
    (folder / "nested").mkdir(parents=True)
    for name in ("b.png", "a.png", "c.jpg", "nested/d.png"):
        Image.fromarray((np.random.rand(8, 8) * 255).astype("uint8")).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    single = tmp_path / "single.png"
    Image.fromarray((np.random.rand(16, 16) * 255).astype("uint8")).save(single)

    main(["predict", "--model", str(models["clf"]), str(single), str(folder), "--top-k", "1"])
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert [line.split(": ")[0] for line in lines] == [str(single)] + [str(folder / n) for n in ("a.png", "b.png",
                                                                                                   "c.jpg")]
    assert all(line.split(": ")[1].split(" (")[0] in ("circle", "square", "cross") for line in lines)
    assert "resized 16x16 to 8x8" in err


def test_predict_on_a_directory_without_images_is_one_line(models, tmp_path, cli):
    (tmp_path / "empty").mkdir()
    one_line(cli("predict", "--model", models["clf"], tmp_path / "empty"), "holds no image files")
