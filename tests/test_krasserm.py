"""Models saved by krasserm's perceiver-io 0.11 load into this project's models and compute what krasserm's code
computes.

The fixtures in tests/fixtures/krasserm were written by scripts/krasserm_fixtures.py with krasserm's own classes
(random, perturbed weights; the inputs and logits krasserm's models gave; greedy generation with krasserm's
``generate``). Tolerance: rtol 1e-5 as asked, plus atol 1e-5 for logits near zero, where a relative bound means
nothing: both sides compute in float32 with sums in a different order (fused kernels here, einsum there); the largest
difference measured is 4e-6 on logits up to 7 in magnitude, i.e. a few float32 ulps of the largest logits.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from cli_runner import cli

from perceiver.checkpoint import ModelLoadError, load_model, save_model
from perceiver.data.tokenizer import ByteTokenizer
from perceiver.hf.krasserm import KrassermError, interleaved_to_halves, is_krasserm_config

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "krasserm"
RTOL, ATOL = 1e-5, 1e-5


def expected(name):
    return torch.load(FIXTURES / f"{name}.expected.pt", weights_only=True)


def copy_fixture(name, tmp_path, edit=None):
    target = tmp_path / name
    shutil.copytree(FIXTURES / name, target)
    if edit is not None:
        config = json.loads((target / "config.json").read_text())
        edit(config)
        (target / "config.json").write_text(json.dumps(config))
    return target


# -------------------------------------------------------------------------------------------------------------
#  Same logits, same generation
# -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["clm", "clm-rotary"])
def test_causal_lm_logits_match_krasserm(name):
    model, data = load_model(FIXTURES / name, task="clm"), expected(name)
    assert type(model).__name__ == "CausalLanguageModel" and not model.training
    with torch.no_grad():
        logits = model(data["input_ids"], data["prefix_len"], data["pad_mask"])
    torch.testing.assert_close(logits, data["logits"], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("name", ["clm", "clm-rotary"])
def test_greedy_generation_matches_krasserm(name, use_cache):
    model, data = load_model(FIXTURES / name), expected(name)
    tokens = model.generate(data["prompt"], data["prompt_pad_mask"], num_tokens=32, num_latents=data["num_latents"],
                            temperature=0.0, use_cache=use_cache)
    assert tokens.shape == (2, 32)
    assert torch.equal(tokens, data["generated"])


@pytest.mark.parametrize("prompt_len, num_latents, num_tokens", [(10, 3, 20), (20, 8, 30)])
def test_krasserm_options_keep_cached_generation_equal_to_recomputation(prompt_len, num_latents, num_tokens):
    """Past max_latents the latent window moves and, with latent_kv_query_norm, positions leaving it become prefix
    keys normalised differently: the cache must give what recomputing every step gives (krasserm's own cache does
    not; the fixtures stay below max_latents)."""
    from perceiver.tasks.clm import CausalLanguageModel, CausalLanguageModelConfig

    torch.manual_seed(0)
    model = CausalLanguageModel(CausalLanguageModelConfig(
        max_seq_len=32, max_latents=8, num_channels=32, num_heads=2, num_self_attention_layers=2, init_scale=0.3,
        output_norm=False, num_rotary_layers=1, qkv_bias=False, self_attention_out_bias=False, mlp_bias=False,
        latent_kv_query_norm=True,
    )).eval()
    with torch.no_grad():  # LayerNorms differ (a new model's are all the identity, q_norm = kv_norm)
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.3)
                module.bias.normal_(0.0, 0.3)
    prompt = torch.randint(6, 262, (2, prompt_len))
    cached = model.generate(prompt, num_tokens=num_tokens, num_latents=num_latents, temperature=0, use_cache=True)
    recomputed = model.generate(prompt, num_tokens=num_tokens, num_latents=num_latents, temperature=0, use_cache=False)
    assert len(set(recomputed.flatten().tolist())) > 3, "greedy output should not be degenerate for this test"
    assert torch.equal(cached, recomputed)


def test_masked_lm_logits_match_krasserm():
    model, data = load_model(FIXTURES / "mlm", task="mlm"), expected("mlm")
    assert model.config.decoder_query_residual is True  # krasserm's default, not this project's mlm default
    with torch.no_grad():
        logits = model(data["input_ids"], data["pad_mask"])
    torch.testing.assert_close(logits, data["logits"], rtol=RTOL, atol=ATOL)


def test_text_classifier_from_pytorch_model_bin_matches_krasserm():
    assert (FIXTURES / "txt-clf" / "pytorch_model.bin").exists()
    model, data = load_model(FIXTURES / "txt-clf", task="clf"), expected("txt-clf")
    assert model.config.class_names == ["negative", "neutral", "positive"]
    with torch.no_grad():
        logits = model(data["input_ids"], data["pad_mask"])
    torch.testing.assert_close(logits, data["logits"], rtol=RTOL, atol=ATOL)


def test_image_classifier_normalises_as_the_saved_image_processor():
    """The fixture has krasserm's MNIST image processor (mean 0.5, std 0.5): the model reads the raw images."""
    model, data = load_model(FIXTURES / "img-clf"), expected("img-clf")
    assert model.config.adapter_options["mean"] == [0.5] and model.config.adapter_options["std"] == [0.5]
    with torch.no_grad():
        from_uint8 = model(data["images"])
        from_floats = model(data["images"].float() / 255.0)
    torch.testing.assert_close(from_uint8, data["logits"], rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(from_floats, data["logits"], rtol=RTOL, atol=ATOL)


def test_image_classifier_without_image_processor_reads_what_krasserm_reads(tmp_path):
    directory = copy_fixture("img-clf", tmp_path)
    (directory / "preprocessor_config.json").unlink()
    model, data = load_model(directory), expected("img-clf")
    with torch.no_grad():
        logits = model(data["pixel_values"])  # the tensor krasserm's backend model received
    torch.testing.assert_close(logits, data["logits"], rtol=RTOL, atol=ATOL)


def test_converted_model_exports_and_reloads_as_a_project_model(tmp_path):
    model, data = load_model(FIXTURES / "clm"), expected("clm")
    save_model(model, tmp_path / "export")
    assert json.loads((tmp_path / "export" / "config.json").read_text())["format"] == "perceiver"
    reloaded = load_model(tmp_path / "export")
    with torch.no_grad():
        logits = reloaded(data["input_ids"], data["prefix_len"], data["pad_mask"])
    torch.testing.assert_close(logits, data["logits"], rtol=RTOL, atol=ATOL)


def test_rotary_pairs_are_permuted_per_head():
    weight = torch.arange(16.0)[:, None]  # 2 heads of 8 channels, 4 of them rotary
    order = interleaved_to_halves(weight, num_heads=2, num_rotary=4)[:, 0].tolist()
    assert order == [0, 2, 1, 3, 4, 5, 6, 7, 8, 10, 9, 11, 12, 13, 14, 15]


def test_detection_uses_the_model_type():
    assert is_krasserm_config(json.loads((FIXTURES / "mlm" / "config.json").read_text()))
    assert not is_krasserm_config({"model_type": "perceiver", "model_config": {}})  # transformers' own Perceiver
    assert not is_krasserm_config({"format": "perceiver", "task": "clm", "config": {}})


# -------------------------------------------------------------------------------------------------------------
#  Refusals
# -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, edit, named",
    [
        ("clm", lambda c: c["model_config"].update(num_channels=24, num_heads=4), "num_channels=24"),
        ("clm", lambda c: c["model_config"].update(rope_scaling=2.0), "rope_scaling"),
        ("mlm", lambda c: c["model_config"]["decoder"].update(num_output_query_channels=16),
         "decoder.num_output_query_channels"),
        ("txt-clf", lambda c: c["model_config"]["decoder"].update(num_output_queries=2), "decoder.num_output_queries"),
    ],
)
def test_an_option_the_project_cannot_express_is_refused_in_one_line(name, edit, named, tmp_path, capsys):
    directory = copy_fixture(name, tmp_path, edit)
    with pytest.raises(KrassermError, match=named.replace(".", r"\.")):
        load_model(directory)
    command = {"clm": ["generate", "--prompt", "hello"], "mlm": ["fill-mask", "a [MASK]"],
               "txt-clf": ["predict", "hello"]}[name]
    code, _, err = cli(capsys, *command, "--model", directory)
    assert code != 0
    assert named in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_fields_a_saved_config_lacks_take_krasserms_defaults(tmp_path):
    """krasserm's config classes fill in missing fields (e.g. of a config saved by an older version): so does this."""
    def drop(config):
        config["model_config"]["decoder"].pop("cross_attention_residual")  # krasserm's default True = the fixture's
        config["model_config"]["encoder"].pop("dropout")

    model, data = load_model(copy_fixture("mlm", tmp_path, drop)), expected("mlm")
    assert model.config.decoder_query_residual is True
    with torch.no_grad():
        logits = model(data["input_ids"], data["pad_mask"])
    torch.testing.assert_close(logits, data["logits"], rtol=RTOL, atol=ATOL)


def test_wrong_task_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match="'mlm' model .*expected a 'clm'"):
        load_model(FIXTURES / "mlm", task="clm")


class RunsCode:
    """Pickled, it tells the unpickler to call os.system: loading it with pickle would run the command."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_bin_that_would_run_code_is_refused_not_executed(tmp_path, capsys):
    directory = copy_fixture("txt-clf", tmp_path)
    marker = tmp_path / "code-ran"
    state = {"backend_model.0.latent_provider._query": torch.zeros(6, 24), "payload": RunsCode(f"touch {marker}")}
    torch.save(state, directory / "pytorch_model.bin")
    with pytest.raises(KrassermError, match="refusing .*pytorch_model.bin"):
        load_model(directory)
    assert not marker.exists()
    code, _, err = cli(capsys, "predict", "hello", "--model", directory)
    assert code != 0 and "refusing" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()


def test_a_corrupt_pytorch_model_bin_is_one_line(tmp_path, capsys):
    directory = copy_fixture("txt-clf", tmp_path)
    whole = (directory / "pytorch_model.bin").read_bytes()
    (directory / "pytorch_model.bin").write_bytes(whole[: len(whole) // 2])  # truncated, as by a broken download
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, out, err = cli(capsys, "predict", "hello", "--model", directory)
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "pytorch_model.bin" in err and "corrupted" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_bin_with_other_objects_is_refused(tmp_path):
    directory = copy_fixture("txt-clf", tmp_path)
    torch.save({"backend_model.x": 3}, directory / "pytorch_model.bin")  # allowed by weights_only, not a tensor
    with pytest.raises(KrassermError, match="not a state dict of tensors"):
        load_model(directory)


def test_missing_and_leftover_weights_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    directory = copy_fixture("mlm", tmp_path)
    state = load_file(str(directory / "model.safetensors"))
    state["backend_model.0.extra.weight"] = torch.zeros(2)
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(KrassermError, match="without a target: 0.extra.weight"):
        load_model(directory)
    del state["backend_model.0.extra.weight"], state["backend_model.1.output_adapter.bias"]
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(KrassermError, match="missing weights: 1.output_adapter.bias"):
        load_model(directory)


# -------------------------------------------------------------------------------------------------------------
#  Command line
# -------------------------------------------------------------------------------------------------------------


def test_cli_generate_on_a_krasserm_directory(capsys):
    prompt = "The history of"
    code, out, err = cli(capsys, "generate", "--model", FIXTURES / "clm", "--prompt", prompt, "--num-tokens", "32",
                         "--num-latents", "1", "--temperature", "0")
    assert code == 0, err
    model = load_model(FIXTURES / "clm")
    ids = torch.tensor([ByteTokenizer().encode(prompt)])
    tokens = model.generate(ids, num_tokens=32, num_latents=1, temperature=0.0)
    assert out == prompt + ByteTokenizer().decode(tokens[0]) + "\n"


def test_cli_eval_on_a_krasserm_directory(capsys, tmp_path):
    corpus = tmp_path / "story.txt"
    corpus.write_text("Once upon a time a small robot learned to read bytes, one by one. " * 40)
    code, out, err = cli(capsys, "eval", "--model", FIXTURES / "clm", "--data", "text", "--data-path", corpus,
                         "--batch-size", "4", "--max-batches", "2")
    assert code == 0, err
    assert "bpb" in out or "bits" in out


def test_cli_convert_turns_a_krasserm_directory_into_an_export(capsys, tmp_path):
    code, _, err = cli(capsys, "convert", FIXTURES / "mlm", "--output", tmp_path / "mlm")
    assert code == 0, err
    assert "krasserm's MaskedLanguageModel" in err
    assert json.loads((tmp_path / "mlm" / "config.json").read_text())["task"] == "mlm"
    model, data = load_model(tmp_path / "mlm"), expected("mlm")
    with torch.no_grad():
        logits = model(data["input_ids"], data["pad_mask"])
    torch.testing.assert_close(logits, data["logits"], rtol=RTOL, atol=ATOL)
