"""``perceiver fill-mask``: fill the ``[MASK]`` bytes of a text with a trained masked language model."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from perceiver.devices import DEVICE_HELP


def fill_mask(
    texts: List[str] = typer.Argument(..., help="Texts with [MASK] placeholders, one per byte to fill."),
    model: Path = typer.Option(..., "--model", "-m", help="mlm model directory, training output directory or .ckpt."),
    top_k: int = typer.Option(5, "--top-k", "-k", help="Number of candidates per text."),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    dtype: str = typer.Option("float32", "--dtype", help="Weights in float32, bfloat16 or float16."),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="int8: int8 linear layers (CPU)."),
) -> None:
    """Print the most likely fillings of each text's [bold][MASK][/] bytes, with their probabilities.

    Example: [bold]perceiver fill-mask --model runs/mlm "The capital of France is [MASK][MASK][MASK][MASK][MASK]."[/]
    """
    from rich.console import Console
    from rich.markup import escape

    if top_k < 1:
        raise typer.BadParameter(f"must be >= 1, got {top_k}", param_hint="--top-k")
    from perceiver import inference
    from perceiver.checkpoint import load_model
    from perceiver.compatibility import check_model_reads
    from perceiver.devices import check_device

    check_device(device)
    inference.check(dtype, quantize)
    lm = inference.prepare(load_model(model, task="mlm", map_location=device), dtype, quantize, device)
    check_model_reads(lm, ("text",), "fill-mask")
    from perceiver.tokenizers import model_tokenizer

    model_tokenizer(model, lm, "fill-mask", bytes_only=True)
    results = lm.fill_mask(texts, top_k=top_k)
    console = Console(highlight=False, soft_wrap=True)
    for text, candidates in zip(texts, results):
        if len(texts) > 1:
            console.print(f"[bold]{escape(text)}[/]")
        for rank, candidate in enumerate(candidates, 1):
            details = f"fill {candidate.fill!r}, p={candidate.probability:.3g}"
            console.print(f"{rank}. {escape(candidate.text)}  [dim]({escape(details)})[/]")


def register(app: typer.Typer) -> None:
    app.command("fill-mask", rich_help_panel="Use")(fill_mask)
