"""The CLI assembled from the registry: component names, options, config files, and every kind of bad input.

Commands run in-process through ``perceiver.cli.main`` (what the console script calls), so the checks cover the
one-line error handling: bad input gives one clear line, a non-zero exit, and never a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from perceiver import hookimpl, registry
from perceiver.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run(capsys, cli_width):
    def run(*args: str):
        """Run the CLI in-process; return (exit code, stdout, stderr)."""
        try:
            main(list(args))
            code = 0
        except SystemExit as exit:
            code = exit.code or 0
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err

    return run


@pytest.fixture
def text_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PERCEIVER_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "story.txt"
    path.write_text("A tiny story about a Perceiver that reads bytes and predicts more bytes. " * 40)
    return path


def one_error_line(code: int, err: str, *fragments: str, exit_code: int = 1) -> None:
    lines = err.strip().splitlines()
    assert code == exit_code, err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for fragment in fragments:
        assert fragment in lines[0]


# ---------------------------------------------------------------------------------------------------------------
#  Listing and help
# ---------------------------------------------------------------------------------------------------------------


def test_list_datasets_prints_a_table(run):
    code, out, _ = run("list", "datasets")
    assert code == 0
    assert out.splitlines()[0].strip() == "datasets"
    for name in ("text", "wikipedia-offline", "wikitext", "wikitext-2"):
        assert f"│ {name} " in out
    assert "modality" in out and "package" in out and "adapters" not in out


def test_list_without_kind_prints_every_table_and_accepts_patterns(run):
    code, out, _ = run("list")
    assert code == 0 and all(title in out for title in ("adapters", "tasks", "datasets", "models"))
    code, out, _ = run("list", "models", "--pattern", "clm-t*")
    assert code == 0 and "clm-tiny" in out and "clm-30m" not in out


def test_list_unknown_kind_is_a_usage_error(run):
    code, _, err = run("list", "widgets")
    assert code == 2 and "'widgets' is not one of adapters, tasks, datasets, models" in err


def test_plugins_lists_the_builtins_with_version_and_hooks(run):
    from perceiver import __version__

    code, out, _ = run("plugins")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("│ perceiver "))
    assert __version__ in row and "register_adapters" in out and "loaded" in row
    assert "third-party plugins are disabled" in out  # the test session runs without them


def test_train_help_shows_options_generated_from_the_config_dataclasses(run):
    code, out, _ = run("train", "clm", "--help")
    assert code == 0
    for option in ("--max-latents", "--num-channels", "--cross-attention-dropout", "--lr", "--max-steps", "--set",
                   "--config", "--adapter", "--model", "--data"):
        assert option in out
    assert "Number of latent positions" in out  # the field's docstring
    assert "[default: 512]" in out


def test_train_without_a_task_lists_the_tasks(run):
    code, out, err = run("train", "--help")
    assert code == 0
    for entry in registry.list("task"):
        assert f" {entry.name} " in out and entry.description[:30] in out


@pytest.mark.parametrize("task", [entry.name for entry in registry.list("task")])
def test_every_task_gets_a_train_command_with_generated_options(run, task):
    from perceiver.config_fields import field_types

    code, out, err = run("train", task, "--help")
    assert code == 0, err
    config_class = registry.get("task", task).config_class()
    simple = [name for name, tp in field_types(config_class).items()
              if tp in (int, float, str, bool) and name not in ("adapter", "data", "model", "config", "set")]
    assert simple, f"task {task} has no simple options"
    flags = {name: name.replace("_", "-") for name in simple}
    shown = [name for name, flag in flags.items()
             if any(f"{prefix}{flag} " in out for prefix in ("--", "--model-", "--[no-]", "--[no-]model-"))]
    assert len(shown) == len(simple), f"not shown: {sorted(set(simple) - set(shown))}"


# ---------------------------------------------------------------------------------------------------------------
#  Unknown names get suggestions
# ---------------------------------------------------------------------------------------------------------------


def test_unknown_task(run):
    code, _, err = run("train", "clmm", "--data", "text")
    assert code == 2 and "No such command 'clmm'" in err and "clm" in err.split("No such command")[1]


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--data", "txt"], ["unknown dataset 'txt'", "did you mean 'text'"]),
        (["--data", "text", "--adapter", "text-byte"], ["unknown adapter 'text-byte'", "did you mean 'text-bytes'"]),
        (["--data", "text", "--model", "clm-tinyy"], ["unknown model 'clm-tinyy'", "did you mean 'clm-tiny'"]),
        (["--model", "clm-tiny"], ["no data set given", "--data"]),
    ],
    ids=["dataset", "adapter", "preset", "missing-dataset"],
)
def test_unknown_component_names(run, args, fragments):
    code, _, err = run("train", "clm", *args)
    one_error_line(code, err, *fragments)


# ---------------------------------------------------------------------------------------------------------------
#  Options: --set, generated options, --config
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--set", "num_latents=abc"], ["unknown option 'num_latents'", "did you mean max_latents?"]),
        (["--set", "max_latents=abc"], ["invalid value 'abc' for model.max_latents: expected int"]),
        (["--set", "model.max_latents=1.5"], ["invalid value '1.5' for model.max_latents: expected int"]),
        (["--set", "activation_checkpointing=maybe"], ["invalid value 'maybe'", "expected bool"]),
        (["--max-latents", "abc"], ["invalid value 'abc' for model.max_latents: expected int"]),
        (["--lr", "fast"], ["invalid value 'fast' for optimizer.lr: expected float"]),
        (["--set", "model.max_latent=8"], ["unknown option model.max_latent", "did you mean model.max_latents?"]),
        (["--set", "adapter.rotary_fractoin=0.5"], ["unknown option adapter.rotary_fractoin", "rotary_fraction?"]),
        (["--set", "modle.max_latents=8"], ["unknown section 'modle'"]),
        (["--set", "max_latents"], ["--set expects key=value"]),
        (["--set", "max_latents=128", "--max-seq-len", "64"], ["max_latents (128) must be in 1..max_seq_len (64)"]),
    ],
    ids=["unknown-key", "bad-int", "float-for-int", "bad-bool", "generated-option", "bad-float", "near-miss",
         "adapter-key", "section", "no-value", "invalid-combination"],
)
def test_bad_option_values_and_keys(run, args, fragments):
    code, _, err = run("train", "clm", "--data", "text", *args)
    one_error_line(code, err, *fragments)


@pytest.mark.parametrize(
    "content, fragments",
    [
        ("model: [1,\n", ["is not valid YAML (line 2, column 1)"]),
        ("model:\n  max_latents: 8\n bad indent: 1\n", ["is not valid YAML (line 3"]),
        ("- just\n- a list\n", ["must hold a mapping of sections, got list"]),
        ("modle: {max_latents: 8}\n", ["unknown section(s) modle"]),
        ("data: text\nmodel: {max_latents: many}\n", ["invalid value 'many' for model.max_latents: expected int"]),
        ("data: text\nmodel: {max_latent: 8}\n", ["unknown option model.max_latent", "model.max_latents?"]),
        ("task: mlm\n", ["is for task 'mlm', not 'clm'"]),
        ("data: {name: txt}\n", ["unknown dataset 'txt'", "did you mean 'text'"]),
        ("data: {name: text, batch_size: 0}\n", ["batch_size must be >= 1, got 0"]),
    ],
    ids=["unclosed", "indentation", "not-a-mapping", "section", "bad-type", "unknown-key", "other-task", "data-name",
         "data-value"],
)
def test_bad_config_files(run, tmp_path, content, fragments):
    path = tmp_path / "config.yaml"
    path.write_text(content)
    code, _, err = run("train", "clm", "--config", str(path))
    one_error_line(code, err, *fragments)


def test_missing_config_file(run, tmp_path):
    code, _, err = run("train", "clm", "--data", "text", "--config", str(tmp_path / "nope.yaml"))
    one_error_line(code, err, "does not exist")


def test_config_file_sets_every_section_and_the_command_line_wins(run, text_file, tmp_path, monkeypatch):
    """Precedence: defaults < preset < --config < options < --set (fit is replaced: this checks the plan)."""
    import perceiver.training.fit as fit_module

    plans = []

    def fake_fit(plan, callbacks=None):
        plans.append(plan)
        return {"metrics": {"val_loss": 1.0}, "model_dir": str(tmp_path / "out" / "model"), "step": 3}

    monkeypatch.setattr(fit_module, "fit", fake_fit)
    config = tmp_path / "run.yaml"
    config.write_text(
        f"task: clm\n"
        f"data: {{name: text, data_path: {text_file}, batch_size: 4}}\n"
        f"model: {{preset: clm-tiny, max_latents: 8, num_self_attention_layers: 2}}\n"
        f"adapter: {{rotary_fraction: 0.25}}\n"
        f"optimizer: {{lr: 1.0e-3, warmup_steps: 1}}\n"
        f"trainer: {{max_steps: 50, output_dir: {tmp_path / 'out'}, progress: false}}\n"
    )
    code, _, err = run("train", "clm", "--config", str(config), "--max-steps", "3", "--set", "max_latents=4")
    assert code == 0, err
    (plan,) = plans
    assert (plan.task, plan.dataset, plan.adapter) == ("clm", "text", "text-bytes")
    model = plan.model_config
    assert (model.max_seq_len, model.num_channels) == (64, 32)  # from the preset
    assert model.num_self_attention_layers == 2  # the file beats the preset
    assert model.max_latents == 4  # --set beats the file
    assert model.adapter_options == {"rotary_fraction": 0.25}
    assert plan.data_config.batch_size == 4 and plan.data_config.max_seq_len == 64
    assert plan.optimizer_config.lr == 1e-3 and plan.trainer_config.max_steps == 3  # the option beats the file
    assert "done at step 3" in err


def test_config_file_trains_for_real(run, text_file, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        f"data: {{name: text, data_path: {text_file}, batch_size: 2}}\n"
        f"model: {{preset: clm-tiny}}\n"
        f"trainer: {{max_steps: 2, val_check_interval: 2, limit_val_batches: 1, progress: false, "
        f"output_dir: {tmp_path / 'out'}}}\n"
    )
    code, _, err = run("train", "clm", "--config", str(config))
    assert code == 0, err
    assert "done at step 2" in err and (tmp_path / "out" / "model" / "model.safetensors").exists()


# ---------------------------------------------------------------------------------------------------------------
#  Components that do not fit together
# ---------------------------------------------------------------------------------------------------------------


class MisfitPlugin:
    @hookimpl
    def register_adapters(self, register):
        register("toy-pixels", "torch.nn:Identity", description="reads images", modality="image", input="image")
        register("toy-audio", "torch.nn:Identity", description="reads audio", modality="audio", input="tokens")

    @hookimpl
    def register_models(self, register):
        register("toy-other-task", {}, task="toy-task", description="a preset of another task")
        register("toy-audio-clm", {"adapter": "toy-audio"}, task="clm", description="a preset naming its adapter")


def test_adapter_task_misfit(run, add_plugin):
    add_plugin(MisfitPlugin(), package="perceiver-misfits")
    code, _, err = run("train", "clm", "--data", "text", "--adapter", "toy-pixels")
    one_error_line(code, err, "task 'clm' accepts tokens input, but adapter 'toy-pixels' produces image input")


def test_dataset_adapter_modality_misfit(run, add_plugin):
    add_plugin(MisfitPlugin(), package="perceiver-misfits")
    code, _, err = run("train", "clm", "--data", "text", "--adapter", "toy-audio")
    one_error_line(code, err, "data set 'text' holds text data, but adapter 'toy-audio' reads audio")


def test_preset_of_another_task(run, add_plugin):
    add_plugin(MisfitPlugin(), package="perceiver-misfits")
    code, _, err = run("train", "clm", "--data", "text", "--model", "toy-other-task")
    one_error_line(code, err, "model preset 'toy-other-task' is for task 'toy-task', not 'clm'")


# ---------------------------------------------------------------------------------------------------------------
#  Start-up stays light: no torch for --help, list, plugins
# ---------------------------------------------------------------------------------------------------------------

PROBE = (
    "import sys, time; t = time.perf_counter(); from perceiver.cli import main; main(sys.argv[1:]); "
    "heavy = sorted(m for m in ('torch', 'numpy', 'pytorch_lightning', 'transformers', 'datasets') "
    "if m in sys.modules); "
    "print('HEAVY', heavy, file=sys.stderr)"
)


LIGHT_COMMANDS = [["--help"], ["list"], ["plugins"], ["train", "--help"], ["show", "--help"], ["plot", "--help"]]


@pytest.mark.parametrize("plugins_enabled", [False, True], ids=["no-plugins", "plugins"])
@pytest.mark.parametrize("args", LIGHT_COMMANDS, ids=" ".join)
def test_help_and_list_do_not_import_torch(args, plugins_enabled):
    env = dict(os.environ)
    if plugins_enabled:
        env.pop("PERCEIVER_DISABLE_PLUGINS", None)
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stderr, result.stderr


def test_models_import_without_lightning_and_their_lightning_modules_live_in_one_place():
    probe = (
        "import sys; import perceiver.tasks.clm as clm, perceiver.tasks.mlm as mlm, perceiver.tasks.clf as clf; "
        "print('LIGHT', sorted(m for m in ('pytorch_lightning', 'lightning', 'transformers') if m in sys.modules)); "
        "print([name for m in (clm, mlm, clf) for name in dir(m) if name.startswith('Lit')])"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["LIGHT []", "[]"]
    from perceiver.training import lightning_module

    assert {"LitCausalLanguageModel", "LitMaskedLanguageModel", "LitClassifier"} <= set(dir(lightning_module))


def test_adapter_precedence_set_and_preset_beat_the_datasets_default(run, add_plugin):
    """The data set's adapter is only a default: --set adapter=... and a preset's adapter are not dropped."""
    from perceiver.training.plan import plan_training

    add_plugin(MisfitPlugin(), package="perceiver-misfits")
    code, _, err = run("train", "clm", "--data", "text", "--set", "adapter=text-byte")
    one_error_line(code, err, "unknown adapter 'text-byte'", "did you mean 'text-bytes'")
    code, _, err = run("train", "clm", "--data", "text", "--model", "toy-audio-clm")
    one_error_line(code, err, "adapter 'toy-audio' reads audio")
    assert plan_training("clm", "text", preset="toy-audio-clm", adapter="text-bytes").adapter == "text-bytes"
    assert plan_training("clm", "text", sets=["model.adapter=text-bytes"]).model_config.adapter == "text-bytes"
