"""``perceiver convert``: DeepMind's Perceiver weights (Hugging Face transformers format) -> a model of this project."""

from __future__ import annotations

from pathlib import Path

import typer


def convert(
    source: str = typer.Argument(
        ..., help="Local directory of a transformers Perceiver model (or a hub id in the local cache)."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write the converted model to."),
    image_size: int = typer.Option(224, "--image-size", help="Height and width the converted image classifier reads."),
    force: bool = typer.Option(
        False, "--force", help="Replace an earlier export in --output (files perceiver did not write are kept)."
    ),
) -> None:
    """Convert [bold]PerceiverForMaskedLM[/] (deepmind/language-perceiver -> mlm) or
    [bold]PerceiverForImageClassificationFourier[/] (deepmind/vision-perceiver-fourier -> clf).

    Example: [bold]perceiver convert ~/models/language-perceiver --output models/language-perceiver[/]
    """
    from rich.console import Console

    from perceiver.checkpoint import check_export_target, save_model
    from perceiver.hf.convert import convert as convert_model
    from perceiver.hf.convert import convert_image_classifier, load_hf_model

    check_export_target(output, overwrite=force)  # before the slow part
    source_path = Path(source).expanduser()
    hf_model = load_hf_model(source_path if source_path.exists() else source)
    if type(hf_model).__name__ == "PerceiverForImageClassificationFourier":
        model = convert_image_classifier(hf_model, image_size=image_size)
    else:
        model = convert_model(hf_model)
    save_model(model, output, overwrite=force)
    params = sum(p.numel() for p in model.parameters())
    Console(stderr=True, highlight=False).print(
        f"[green]converted[/] {type(hf_model).__name__} ({params / 1e6:.1f}M parameters) -> "
        f"[bold]{output}[/] (task {model.task})"
    )


def register(app: typer.Typer) -> None:
    app.command("convert", rich_help_panel="Use")(convert)
