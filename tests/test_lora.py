"""LoRA fine-tuning (``--lora-r``): only the adapters train, the run saves only them, ``load_model`` merges them into
the base, and ``perceiver export --merge`` writes that merged model as a plain export."""

from __future__ import annotations

import pytest
import torch
from cli_runner import cli
from safetensors.torch import load_file
from test_init_from import (  # noqa: F401 (fixtures)
    QUICK,
    cache,  # noqa: F401
    clm_run,
    one_error_line,
    texts,
    val_loss,
)

from perceiver.checkpoint import load_model

pytest.importorskip("peft")
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2")


@pytest.fixture(scope="module")
def lora_run(clm_run, texts, cache, tmp_path_factory):  # noqa: F811
    from perceiver.cli import main

    run = tmp_path_factory.mktemp("lora") / "run"
    main(["train", "clm", "--data", "text", "--data-path", str(texts[1]), "--init-from", str(clm_run), "--lora-r", "4",
          "--lora-alpha", "8", *QUICK, "--max-steps", "10", "--val-check-interval", "10", "--lr", "3e-3",
          "--output-dir", str(run)])
    return run


@pytest.mark.slow
def test_only_the_adapters_train_and_the_run_saves_only_them(lora_run, clm_run):  # noqa: F811
    assert sorted(p.name for p in (lora_run / "model").iterdir()) == ["adapter_config.json",
                                                                      "adapter_model.safetensors"]
    adapter = load_file(str(lora_run / "model" / "adapter_model.safetensors"))
    base = load_model(clm_run)
    linears = [name for name, module in base.named_modules()
               if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in TARGETS]
    assert len(adapter) == 2 * len(linears) and all("lora_A" in k or "lora_B" in k for k in adapter)
    assert sum(t.numel() for t in adapter.values()) == sum(
        4 * (m.in_features + m.out_features) for n, m in base.named_modules() if n in linears)

    merged = load_model(lora_run)  # base + adapter, merged: a plain model
    assert type(merged) is type(base) and merged.config == base.config
    changed = {name for name, p in merged.state_dict().items() if not torch.equal(p, base.state_dict()[name])}
    assert changed and all(name.rsplit(".", 2)[-2] in TARGETS for name in changed)  # nothing else moved


@pytest.mark.slow
def test_the_merged_model_is_what_trained_and_exports_as_a_plain_model(lora_run, texts, tmp_path, capsys):  # noqa: F811
    data = ["--data", "text", "--data-path", texts[1], "--batch-size", 4, "--max-batches", 4]
    code, out, err = cli(capsys, "eval", "--model", lora_run, *data)
    assert code == 0, err
    loss = float(next(line for line in out.splitlines() if "loss" in line and "│" in line).split("│")[2])
    assert loss == pytest.approx(val_loss(lora_run), abs=1e-4)

    code, _, err = cli(capsys, "export", lora_run, "--output", tmp_path / "plain")
    one_error_line(code, err, "is a LoRA run", "--merge")
    assert not (tmp_path / "plain").exists()
    code, _, err = cli(capsys, "export", lora_run, "--merge", "--output", tmp_path / "plain")
    assert code == 0, err
    assert not (tmp_path / "plain" / "adapter_config.json").exists()
    plain, merged = load_model(tmp_path / "plain"), load_model(lora_run)
    assert all(torch.equal(v, merged.state_dict()[k]) for k, v in plain.state_dict().items())
    prompt = ["--prompt", "the quick", "-n", 16, "--temperature", 0]
    outs = [cli(capsys, "generate", "--model", model, *prompt)[1] for model in (lora_run, tmp_path / "plain")]
    assert outs[0] == outs[1] and len(outs[0]) > len("the quick")


def test_lora_options_that_do_not_fit_are_one_line(clm_run, texts, tmp_path, capsys):  # noqa: F811
    run = tmp_path / "run"
    text = ["--data", "text", "--data-path", texts[1], "--output-dir", run]
    code, _, err = cli(capsys, "train", "clm", *text, "--init-from", clm_run, "--lora-r", 4, "--lora-targets",
                       "q,attn")
    one_error_line(code, err, "--lora-targets 'attn'", "no 'attn' layer", "q_proj")
    code, _, err = cli(capsys, "train", "clm", *text, "--model", "clm-tiny", "--lora-r", 4)
    one_error_line(code, err, "give --init-from")
    code, _, err = cli(capsys, "train", "clm", *text, "--init-from", clm_run, "--lora-r", -1)
    one_error_line(code, err, "lora_r must be >= 0")
    assert not run.exists()
