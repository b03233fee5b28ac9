"""The one Lightning module (LitTask) trains any registered task through its ``metrics``; validation and
``perceiver eval`` aggregate them the same way (count-weighted means), eval without Lightning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import toy_task

from perceiver.training.evaluate import evaluate

ROOT = Path(__file__).resolve().parent.parent


def old_weighted_means(batch_metrics, model, batches):
    """The aggregation before torchmetrics, written out: sum(value * count) / sum(count), in Python floats."""
    totals, count = {}, 0.0
    with torch.no_grad():
        for batch in batches:
            out = batch_metrics(model, batch)
            weight = float(out.pop("count"))
            count += weight
            for key, value in out.items():
                totals[key] = totals.get(key, 0.0) + float(value) * weight
    return {key: value / count for key, value in totals.items()}, count


def quiet_trainer(**kwargs):
    import pytorch_lightning as pl

    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kwargs)


def test_a_plugin_task_trains_with_the_generic_module_and_validates_as_eval_does(add_plugin):
    from perceiver.training.lightning_module import LitTask

    add_plugin(toy_task.TASK_PLUGIN, package="perceiver-toy-lookup")
    torch.manual_seed(0)
    lit = LitTask({"num_classes": 4}, {"lr": 0.1, "warmup_steps": 0, "schedule": "constant"}, task="toy-lookup")
    assert lit.throughput_unit == "lookups/s" and lit.hparams["task"] == "toy-lookup"
    train, val = toy_task.toy_batches(16, 4), toy_task.toy_batches(10, 3)  # val batches of 3, 3, 3 and 1
    before = evaluate(lit.model, val, "toy-lookup", progress=False)
    trainer = quiet_trainer(max_steps=40, val_check_interval=4, log_every_n_steps=10)
    trainer.fit(lit, train_dataloaders=train, val_dataloaders=val)
    after = evaluate(lit.model, val, "toy-lookup", progress=False)
    assert before["accuracy"] < 0.75 and after["accuracy"] == 1.0 and after["loss"] < before["loss"] / 4
    assert after["predictions"] == 10
    logged = trainer.callback_metrics
    assert set(logged) >= {"val_loss", "val_accuracy", "train_loss"}
    assert float(logged["val_loss"]) == pytest.approx(after["loss"], rel=1e-5)
    assert float(logged["val_accuracy"]) == after["accuracy"]


def test_validation_and_eval_give_the_weighted_means_they_gave_before(add_plugin):
    """Unequal batches, so that weighting matters; accuracy also equals torchmetrics' Accuracy over all items."""
    from torchmetrics.classification import MulticlassAccuracy

    from perceiver.training.lightning_module import LitTask

    add_plugin(toy_task.TASK_PLUGIN, package="perceiver-toy-lookup")
    torch.manual_seed(1)
    lit = LitTask({"num_classes": 4}, task="toy-lookup")
    with torch.no_grad():  # tokens 0 and 1 get their label, 2 and 3 are taken for themselves
        lit.model.embedding.weight.copy_(torch.eye(4, 8))
        lit.model.head.weight.zero_()
        lit.model.head.bias.zero_()
        for token, predicted in enumerate([1, 2, 2, 3]):
            lit.model.head.weight[predicted, token] = 2.0 + token
    batches = toy_task.toy_batches(13, 5)  # 5, 5 and 3 items
    old, count = old_weighted_means(toy_task.toy_metrics, lit.model, batches)
    unweighted = sum(float(toy_task.toy_metrics(lit.model, b)["loss"]) for b in batches) / len(batches)
    assert abs(unweighted - old["loss"]) > 1e-3  # the data tells weighted from unweighted means apart

    new = evaluate(lit.model, batches, "toy-lookup", progress=False)
    assert new["predictions"] == count == 13
    assert new["loss"] == pytest.approx(old["loss"], rel=1e-12) and new["accuracy"] == pytest.approx(old["accuracy"])
    validated = quiet_trainer().validate(lit, dataloaders=batches, verbose=False)[0]
    assert validated["val_loss"] == pytest.approx(old["loss"], rel=1e-6)
    assert validated["val_accuracy"] == pytest.approx(old["accuracy"], rel=1e-6)

    accuracy = MulticlassAccuracy(num_classes=4, average="micro")
    with torch.no_grad():
        for labels, tokens in batches:
            accuracy.update(lit.model(tokens), labels)
    assert 0 < float(accuracy.compute()) < 1
    assert new["accuracy"] == pytest.approx(float(accuracy.compute()), rel=1e-6)


def test_the_named_modules_are_the_generic_one_for_one_task(tmp_path):
    import pytorch_lightning as pl

    from perceiver.tasks.clm import CausalLanguageModelConfig
    from perceiver.training.lightning_module import LitCausalLanguageModel, LitClassifier, LitTask

    config = CausalLanguageModelConfig(max_seq_len=16, max_latents=4, num_channels=16, num_heads=2,
                                       num_self_attention_layers=1)
    named = LitCausalLanguageModel.create(config)
    assert isinstance(named, LitTask) and named.task == "clm" and named.throughput_unit == "tok/s"
    with pytest.raises(ValueError, match="LitClassifier trains task 'clf', not 'clm'"):
        LitClassifier(config, task="clm")
    with pytest.raises(TypeError, match="LitTask needs the task"):
        LitTask(config)

    generic = LitTask(config, task="clm")
    path = tmp_path / "generic.ckpt"
    torch.save({"state_dict": generic.state_dict(), "hyper_parameters": dict(generic.hparams),
                "pytorch-lightning_version": pl.__version__}, path)
    for cls in (LitTask, LitCausalLanguageModel):
        loaded = cls.load_from_checkpoint(path, weights_only=True)
        assert loaded.task == "clm" and loaded.model.config == config
        for (name, mine), theirs in zip(generic.model.state_dict().items(), loaded.model.state_dict().values()):
            assert torch.equal(mine, theirs), name


EVAL_WITHOUT_LIGHTNING = """
import sys
import toy_task
from perceiver import plugins, registry
from perceiver.training.evaluate import evaluate

registry.list("task")
plugins.add_plugin(toy_task.TASK_PLUGIN, "toy", "perceiver-toy-lookup", "0.0.1")
plugins.call_register_hooks(registry.REGISTRY, ["toy"])
model = registry.create("task", "toy-lookup")
metrics = evaluate(model, toy_task.toy_batches(10, 3), "toy-lookup", progress=False)
print(sorted(metrics), sorted(m for m in ("pytorch_lightning", "lightning") if m in sys.modules))
"""


def test_eval_of_a_plugin_task_does_not_import_lightning():
    env = {**__import__("os").environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}
    result = subprocess.run([sys.executable, "-c", EVAL_WITHOUT_LIGHTNING], capture_output=True, text=True,
                            cwd=ROOT, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['accuracy', 'loss', 'predictions'] []"


def test_a_task_without_metrics_is_refused_in_one_line(add_plugin, capsys):
    from cli_runner import cli

    from perceiver import hookimpl

    class NoMetrics:
        @hookimpl
        def register_tasks(self, register):
            register("toy-silent", toy_task.ToyModel, config=toy_task.ToyTaskConfig, inputs=("tokens",))

    add_plugin(NoMetrics(), package="perceiver-toy-silent")
    code, _, err = cli(capsys, "train", "toy-silent", "--data", "text", "--max-steps", "1")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: task 'toy-silent' registers no metrics function (metadata 'metrics'): it cannot be "
                          "trained"), err
