"""How ``perceiver train`` plans and resumes a run: the stored plan (run.yaml), what options given again may change,
and errors found while planning, which leave no directory behind.

Commands run in-process through ``perceiver.cli.main``. The resumed runs start from a copy of one tiny trained run
whose stored plan says 4 steps while its checkpoint is at step 2: a run that was interrupted halfway.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch
import yaml
from cli_runner import cli

from perceiver.cli import main

TINY = ["--model", "clm-tiny", "--batch-size", "2", "--val-check-interval", "2", "--limit-val-batches", "1",
        "--no-progress", "--warmup-steps", "1", "--lr", "0.003"]


def one_error_line(code, err, *fragments):
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error:"), err
    for fragment in fragments:
        assert fragment in lines[0], err


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    previous = os.environ.get("PERCEIVER_CACHE_DIR")
    os.environ["PERCEIVER_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("PERCEIVER_CACHE_DIR", None)
    else:
        os.environ["PERCEIVER_CACHE_DIR"] = previous


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "story.txt"
    path.write_text("A tiny story about a Perceiver that reads bytes and predicts more bytes. " * 40)
    return path


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, text_file, cache_dir):
    """A run at step 2 (its checkpoint) whose stored plan says 4 steps."""
    out = tmp_path_factory.mktemp("runs") / "clm"
    try:
        main(["train", "clm", "--data", "text", "--data-path", str(text_file), *TINY, "--max-steps", "2",
              "--output-dir", str(out)])
    except SystemExit as exit:
        assert not exit.code
    record = yaml.safe_load((out / "run.yaml").read_text())
    assert record["trainer"]["max_steps"] == 2
    record["trainer"]["max_steps"] = 4
    (out / "run.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    return out


@pytest.fixture
def run_dir(interrupted, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(interrupted, copy)
    record = yaml.safe_load((copy / "run.yaml").read_text())
    record["trainer"]["output_dir"] = str(copy)
    (copy / "run.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    return copy


def checkpoint(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def stored(run_dir):
    return yaml.safe_load((run_dir / "run.yaml").read_text())


# ---------------------------------------------------------------------------------------------------------------
#  --resume continues the stored run
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--output-dir", "{run}", "--resume"],
        ["train", "--resume", "{run}"],
        ["train", "clm", "--output-dir", "{run}", "--resume"],
        ["train", "clm", "--resume", "{run}"],
    ],
    ids=["output-dir", "resume-path", "task-output-dir", "task-resume-path"],
)
def test_resume_with_no_options_continues_the_stored_run(capsys, run_dir, args):
    before = stored(run_dir)
    code, _, err = cli(capsys, *[str(run_dir) if a == "{run}" else a for a in args])
    assert code == 0, err
    assert f"resuming {run_dir} with its stored settings" in err and "done at step 4" in err
    saved = checkpoint(run_dir)
    assert saved["global_step"] == 4  # continued from step 2 to the stored max_steps
    model = {k: v for k, v in before["model"].items()}
    assert {k: saved["hyper_parameters"]["config"][k] for k in model} == model  # the stored model, not defaults
    assert saved["hyper_parameters"]["optimizer"]["lr"] == 0.003 and before["data"]["batch_size"] == 2
    assert stored(run_dir) == before


def test_resume_takes_a_new_max_steps_and_says_so(capsys, run_dir):
    code, _, err = cli(capsys, "train", "--resume", run_dir, "--max-steps", "3")
    assert code == 0, err
    assert f"resuming {run_dir} with trainer.max_steps 4 -> 3" in err and "done at step 3" in err
    assert checkpoint(run_dir)["global_step"] == 3
    assert stored(run_dir)["trainer"]["max_steps"] == 3  # the next resume continues with it


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--lr", "0.01"], ["with --lr", "optimizer.lr from 0.003 to 0.01", "--allow-change optimizer.lr"]),
        (["--data", "wikipedia-offline"], ["with --data", "changes data from 'text' to 'wikipedia-offline'"]),
        (["--batch-size", "4"], ["with --batch-size", "data.batch_size from 2 to 4"]),
        (["--warmup-steps", "3"], ["with --warmup-steps", "optimizer.warmup_steps from 1 to 3"]),
        (["--set", "model.num_channels=64"], ["with model.num_channels", "from 32 to 64"]),
        (["--seed", "1"], ["with --seed", "trainer.seed from 0 to 1"]),
    ],
    ids=["lr", "data", "batch-size", "schedule", "model", "seed"],
)
def test_resume_refuses_an_option_that_changes_the_run(capsys, run_dir, args, fragments):
    before, step = (run_dir / "run.yaml").read_bytes(), checkpoint(run_dir)["global_step"]
    code, _, err = cli(capsys, "train", "--resume", run_dir, *args)
    one_error_line(code, err, f"cannot resume {run_dir}", *fragments)
    assert (run_dir / "run.yaml").read_bytes() == before and checkpoint(run_dir)["global_step"] == step


def test_allow_change_lets_the_option_through_and_the_optimizer_takes_it(capsys, run_dir):
    code, _, err = cli(capsys, "train", "--resume", run_dir, "--lr", "0.01", "--allow-change", "optimizer.lr")
    assert code == 0, err
    assert "optimizer.lr 0.003 -> 0.01" in err and "done at step 4" in err
    assert stored(run_dir)["optimizer"]["lr"] == 0.01
    saved = checkpoint(run_dir)
    assert saved["lr_schedulers"][0]["base_lrs"] == [0.01, 0.01]  # not the checkpoint's 0.003
    assert {group["initial_lr"] for group in saved["optimizer_states"][0]["param_groups"]} == {0.01}


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--resume", "{run}", "--allow-change", "optimizer.lrr"], ["--allow-change optimizer.lrr", "optimizer.lr?"]),
        (["clm", "--data", "text", "--allow-change", "optimizer.lr"], ["--allow-change only applies", "--resume"]),
        (["mlm", "--resume", "{run}"], ["is a 'clm' run, not 'mlm'"]),
        (["--resume", "{run}", "--output-dir", "elsewhere"], ["name different runs"]),
        (["--resume", "{empty}"], ["holds no stored run (run.yaml)", "name the task"]),
        (["clm", "--resume", "{empty}"], ["nothing to resume"]),
        (["--resume"], ["needs the run", "--resume RUN"]),
    ],
    ids=["unknown-key", "without-resume", "other-task", "two-runs", "no-run-no-task", "no-run", "no-run-dir"],
)
def test_resume_misuse_is_one_line(capsys, run_dir, tmp_path, args, fragments):
    (tmp_path / "empty").mkdir()
    args = [a.replace("{run}", str(run_dir)).replace("{empty}", str(tmp_path / "empty")) for a in args]
    code, _, err = cli(capsys, "train", *args)
    one_error_line(code, err, *fragments)


def test_the_stored_plan_is_a_config_file_for_the_same_run(run_dir):
    from perceiver.training.plan import plan_training, run_record

    plan = plan_training("clm", config_file=str(run_dir / "run.yaml"))
    assert run_record(plan) == stored(run_dir)


# ---------------------------------------------------------------------------------------------------------------
#  Planning errors blame the option, and leave no directory behind
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--set", "adapter.rotary_fraction=2.5"], ["adapter.rotary_fraction must be in [0, 1], got 2.5"]),
        (["--num-heads", "0"], ["model.num_heads must be >= 1, got 0"]),
        (["--attention-dropout", "1"], ["model.attention_dropout must be in [0, 1), got 1.0"]),
        (["--set", "data.random_train_truncation=2"], ["data.random_train_truncation must be in [0, 1], got 2.0"]),
        (["--num-workers", "-1"], ["data.num_workers must be >= 0, got -1"]),
        (["--beta2", "1.5"], ["optimizer.beta2 must be in [0, 1), got 1.5"]),
        (["--limit-val-batches", "-1"], ["trainer.limit_val_batches must be >= 0, got -1"]),
        (["--set", "vocab_size=100"], ["model.vocab_size must be >= 262", "data set 'text'; got 100"]),
        (["--data", "wikipedia-offline"], ["data set 'wikipedia-offline' does not take --data-path"]),
    ],
    ids=["adapter", "model", "model-dropout", "data", "data-workers", "optimizer", "trainer", "vocab", "data-path"],
)
def test_planning_errors_name_the_option_and_leave_no_directory(capsys, tmp_path, text_file, cache_dir, args,
                                                                fragments):
    out = tmp_path / "runs" / "bad"
    code, _, err = cli(capsys, "train", "clm", "--data", "text", "--data-path", text_file, *TINY, "--max-steps", "2",
                       "--output-dir", out, *args)
    one_error_line(code, err, *fragments)
    assert not (tmp_path / "runs").exists()


def test_tensorboard_without_the_package_names_the_extra(capsys, tmp_path, text_file, cache_dir, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboard", "tensorboardX") else find_spec(name, *a))
    out = tmp_path / "tb"
    code, _, err = cli(capsys, "train", "clm", "--data", "text", "--data-path", text_file, *TINY, "--logger",
                       "tensorboard", "--output-dir", out)
    one_error_line(code, err, "--logger tensorboard needs TensorBoard", "pip install 'perceiver[tensorboard]'")
    assert not out.exists()


@pytest.mark.parametrize("warmup, warned", [("3", True), ("2", False)])
def test_a_warmup_as_long_as_the_run_is_a_one_line_warning(capsys, tmp_path, text_file, cache_dir, monkeypatch,
                                                           warmup, warned):
    import perceiver.training.fit as fit_module

    monkeypatch.setattr(fit_module, "fit", lambda plan, callbacks=None: {"metrics": {}, "model_dir": "m", "step": 0})
    code, _, err = cli(capsys, "train", "clm", "--data", "text", "--data-path", text_file, "--model", "clm-tiny",
                       "--max-steps", "3", "--warmup-steps", warmup, "--output-dir", tmp_path / "w")
    assert code == 0, err
    warning = [line for line in err.splitlines() if line.startswith("warning:")]
    expected = ["warning: --warmup-steps 3 >= --max-steps 3: the learning rate never leaves warm-up"]
    assert warning == (expected if warned else [])


@pytest.mark.parametrize("failing_step, kept", [(0, False), (1, True)])
def test_a_run_that_fails_before_its_first_step_leaves_no_directory(capsys, tmp_path, text_file, cache_dir,
                                                                    monkeypatch, failing_step, kept):
    from perceiver.training.lightning_module import LitTask

    step = LitTask.training_step

    def failing(self, batch, batch_idx):
        if batch_idx == failing_step:
            raise RuntimeError("broken step")
        return step(self, batch, batch_idx)

    monkeypatch.setattr(LitTask, "training_step", failing)
    args = ["train", "clm", "--data", "text", "--data-path", text_file, *TINY, "--max-steps", "4"]
    code, _, err = cli(capsys, *args, "--output-dir", tmp_path / "new" / "run")
    assert code == 1 and err.strip().splitlines()[-1].startswith("error: broken step"), err
    assert (tmp_path / "new").exists() == kept  # what a run did after its first step stays

    existing = tmp_path / "existing"
    existing.mkdir()
    code, _, err = cli(capsys, *args, "--output-dir", existing)
    assert code == 1 and "broken step" in err
    assert existing.is_dir()  # never removed: it was there before the run


def test_an_option_the_data_set_does_not_read_is_refused_unless_at_its_default():
    from perceiver.training.plan import PlanError, plan_training

    with pytest.raises(PlanError, match=r"data set 'wikitext' does not take --set data.val_fraction"):
        plan_training("clm", "wikitext", preset="clm-tiny", sets=["data.val_fraction=0.1"])
    plan = plan_training("clm", "wikitext", preset="clm-tiny", sets=["data.val_fraction=0.05"])  # as in a run.yaml
    assert plan.data_config.val_fraction == 0.05
