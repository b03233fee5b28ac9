"""``perceiver eval``: validation metrics of a trained model on a registered data set."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from perceiver.devices import DEVICE_HELP


def evaluate(
    model: Path = typer.Option(..., "--model", "-m", help="Model directory, training output directory or .ckpt file."),
    data: str = typer.Option(..., "--data", "-d", help="Registered data set (see `perceiver list datasets`)."),
    data_path: Optional[str] = typer.Option(
        None, "--data-path", help="File or directory for data sets that read files."
    ),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Batch size."),
    max_batches: Optional[int] = typer.Option(None, "--max-batches", help="Evaluate at most this many batches."),
    sets: List[str] = typer.Option([], "--set", help="Data option as key=value (repeatable)."),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    dtype: str = typer.Option("float32", "--dtype", help="Weights in float32, bfloat16 or float16."),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="int8: int8 linear layers (CPU)."),
) -> None:
    """Print validation loss and task metrics (bits per byte and perplexity for [bold]clm[/])."""
    from rich.console import Console
    from rich.table import Table

    from perceiver import registry
    from perceiver.checkpoint import load_model
    from perceiver.compatibility import check_model_fits_data
    from perceiver.config_fields import field_types, parse_value
    from perceiver.devices import check_device
    from perceiver.training.evaluate import evaluate as run_evaluation
    from perceiver.training.plan import parse_sets

    check_device(device)
    dataset = registry.get("dataset", data)
    from perceiver import inference

    inference.check(dtype, quantize)
    lm = inference.prepare(load_model(model, map_location=device), dtype, quantize, device)
    check_model_fits_data(lm, dataset)
    config_class = dataset.config_class()
    types = field_types(config_class)
    values = {"data_path": data_path, "batch_size": batch_size}
    for section, key, value in parse_sets(sets):
        if section not in (None, "data") or key not in types:
            raise typer.BadParameter(f"unknown data option {key!r}", param_hint="--set")
        values[key] = parse_value(f"data.{key}", value, types[key])
    for key in types:  # sizes the model was trained with
        if key not in values and hasattr(lm.config, key):
            values[key] = getattr(lm.config, key)
    from perceiver.tokenizers import is_bytes, model_tokenizer

    tokenizer = model_tokenizer(model, lm, "eval")
    if "tokenizer" in types and values.get("tokenizer") is None and not is_bytes(tokenizer):
        values["tokenizer"] = str(model)  # the data is read with the model's own tokenizer
    datamodule = dataset.load()(dataset.build_config(**{k: v for k, v in values.items() if k in types}))
    _check_model_facts(dataset.load(), datamodule.config, lm, data)
    datamodule.setup("validate")
    metrics = run_evaluation(lm, datamodule.val_dataloader(), lm.task, max_batches=max_batches, device=device)

    table = Table(title=f"{lm.task} model on {data} (validation)", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:,.0f}" if key == "predictions" else f"{value:.4f}")
    Console().print(table)


def _check_model_facts(datamodule_class, data_config, model, data: str) -> None:
    """A data set that decides model options (e.g. a classifier's labels) must agree with the trained model."""
    facts_of = getattr(datamodule_class, "model_facts", None)
    if not callable(facts_of):
        return
    for key, value in facts_of(data_config).items():
        trained = getattr(model.config, key, None)
        if trained is not None and trained != value:
            raise ValueError(
                f"data set {data!r} does not fit the model: its {key} is {value}, the model's is {trained}"
            )


def register(app: typer.Typer) -> None:
    app.command("eval", rich_help_panel="Use")(evaluate)
