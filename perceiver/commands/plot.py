"""``perceiver plot RUN [RUN ...]``: training and validation curves of one or more runs, on shared axes.

Reads each run's ``logs/**/metrics.csv`` (Lightning's CSVLogger; a resumed run has one ``version_N`` directory per
start, read in order, later values winning for the same step) and draws, against the optimizer step, the loss
(training and validation) and, where the runs logged them, validation bits per byte and accuracy. Needs matplotlib
(``pip install 'perceiver[plot]'``).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Dict, List, Optional

import typer

EXTRA_METRICS = ("bpb", "bits_per_token", "accuracy")
"""Validation metrics that get their own panel when a run logged them (``val_bpb``, ``val_accuracy``)."""
MARK = "perceiver plot"
"""PNG text chunk ``Software`` of the files this command writes: only such a file is replaced without --output."""

Curves = Dict[str, Dict[int, float]]
"""Metric name -> {optimizer step: value}."""


class PlotError(ValueError):
    """A run without metrics, or an output file that is not this command's to replace."""


def _version_key(path: Path):
    match = re.search(r"version_(\d+)", str(path))
    return (int(match.group(1)) if match else -1, str(path))


def metrics_files(run: Path) -> List[Path]:
    """The run's metrics.csv files, oldest start first (``run`` may also be a metrics.csv file)."""
    if run.is_file():
        return [run]
    if not run.is_dir():
        raise PlotError(f"{run} does not exist")
    return sorted(run.glob("logs/**/metrics.csv"), key=_version_key)


def read_curves(run: Path) -> Curves:
    """Every numeric metric of a run by step. Lightning's ``step`` column counts from 0: the value logged after
    ``n`` optimizer steps has step ``n - 1``; the curves use ``n``."""
    curves: Curves = {}
    for path in metrics_files(run):
        with open(path, newline="") as file:
            for row in csv.DictReader(file):
                try:
                    step = int(float(row.get("step") or "")) + 1
                except ValueError:
                    continue
                for name, text in row.items():
                    if name in ("step", "epoch") or not text:
                        continue
                    try:
                        curves.setdefault(name, {})[step] = float(text)
                    except ValueError:
                        continue
    if "train_loss" not in curves and "val_loss" not in curves:
        raise PlotError(f"no training metrics in {run}: no logs/**/metrics.csv with train_loss or val_loss "
                        "(runs logged with --logger tensorboard are read by TensorBoard)")
    return curves


def draw(runs: Dict[str, Curves], path: Path) -> List[str]:
    """Write the curves of ``runs`` (label -> curves) to the PNG ``path`` (atomically); return the panel metrics."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError("perceiver plot needs matplotlib: pip install 'perceiver[plot]'") from None
    from perceiver import __version__

    panels = ["loss"] + [m for m in EXTRA_METRICS if any(f"val_{m}" in curves for curves in runs.values())]
    figure = Figure(figsize=(6 * len(panels), 4.5), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for ax, metric in zip(axes, panels):
        for color, (label, curves) in zip(colors, runs.items()):
            for split, style in (("train", dict(linestyle="-", alpha=0.6)), ("val", dict(linestyle="--", marker="o"))):
                points = sorted(curves.get(f"{split}_{metric}", {}).items())
                if points:
                    steps, values = zip(*points)
                    ax.plot(steps, values, color=color, label=f"{label} {split}", markersize=3, **style)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel({"loss": "loss (nats)", "bpb": "bits per byte", "bits_per_token": "bits per token",
                       "accuracy": "accuracy"}[metric])
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    from perceiver.files import atomic_write_file

    metadata = {"Software": f"{MARK} {__version__}"}
    atomic_write_file(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100, metadata=metadata))
    return panels


def written_by_us(path: Path) -> bool:
    try:
        from PIL import Image

        with Image.open(path) as image:
            return str(image.info.get("Software", "")).startswith(MARK)
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False


def plot(
    runs: List[Path] = typer.Argument(..., help="Training output directories (each with logs/**/metrics.csv)."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="PNG file to write (default: curves.png in the first run's directory)."
    ),
) -> None:
    """Plot training and validation loss (and bits per byte or accuracy) against step for one or more runs.

    Example: [bold]perceiver plot runs/small runs/longer --output curves.png[/]
    """
    from rich.console import Console

    labels = [run.name or str(run) for run in runs]
    if len(set(labels)) < len(labels):
        labels = [str(run) for run in runs]
    curves = {label: read_curves(run) for label, run in zip(labels, runs)}
    if output is None:
        first = runs[0] if runs[0].is_dir() else runs[0].parent
        path = first / "curves.png"
        if path.exists() and not written_by_us(path):
            raise PlotError(f"{path} exists and was not written by perceiver plot; choose a file with --output")
    else:
        path = output
        if path.parent and not path.parent.is_dir():
            raise PlotError(f"directory {path.parent} does not exist")
    panels = draw(curves, path)
    Console(highlight=False, soft_wrap=True).print(f"wrote {', '.join(panels)} curves of {len(runs)} run(s) to {path}")


def register(app: typer.Typer) -> None:
    app.command("plot", rich_help_panel="Inspect")(plot)
