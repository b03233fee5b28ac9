"""``perceiver convert``: DeepMind's Perceiver weights (Hugging Face transformers format), or a model saved by
krasserm's perceiver-io, -> a model of this project."""

from __future__ import annotations

from pathlib import Path

import typer


def convert(
    source: str = typer.Argument(
        ..., help="Local directory of a transformers Perceiver model (or a hub id in the local cache), or of a "
        "model saved by krasserm's perceiver-io."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write the converted model to."),
    image_size: int = typer.Option(224, "--image-size", help="Height and width the converted image classifier reads."),
    force: bool = typer.Option(
        False, "--force", help="Replace an earlier export in --output (files perceiver did not write are kept)."
    ),
) -> None:
    """Convert [bold]PerceiverForMaskedLM[/] (deepmind/language-perceiver -> mlm) or
    [bold]PerceiverForImageClassificationFourier[/] (deepmind/vision-perceiver-fourier -> clf).

    A directory saved by krasserm's perceiver-io (config.json model_type perceiver-ar-causal-language-model,
    perceiver-io-masked-language-model, -text-classifier or -image-classifier) converts too.

    Example: [bold]perceiver convert ~/models/language-perceiver --output models/language-perceiver[/]
    """
    from rich.console import Console

    from perceiver.checkpoint import check_export_target, save_model
    from perceiver.hf.convert import convert as convert_model
    from perceiver.hf.convert import convert_image_classifier, load_hf_model

    check_export_target(output, overwrite=force)  # before the slow part
    source_path = Path(source).expanduser()
    if _is_krasserm_directory(source_path):
        from perceiver.hf.krasserm import load_krasserm

        model = load_krasserm(source_path)
        kind = f"krasserm's {type(model).__name__}"
    else:
        hf_model = load_hf_model(source_path if source_path.exists() else source)
        if type(hf_model).__name__ == "PerceiverForImageClassificationFourier":
            model = convert_image_classifier(hf_model, image_size=image_size)
        else:
            model = convert_model(hf_model)
        kind = type(hf_model).__name__
    from perceiver.tokenizers import load_tokenizer

    save_model(model, output, overwrite=force, tokenizer=load_tokenizer(source_path) if source_path.is_dir() else None)
    params = sum(p.numel() for p in model.parameters())
    Console(stderr=True, highlight=False).print(
        f"[green]converted[/] {kind} ({params / 1e6:.1f}M parameters) -> "
        f"[bold]{output}[/] (task {model.task})"
    )


def _is_krasserm_directory(path: Path) -> bool:
    import json

    from perceiver.hf.krasserm import is_krasserm_config

    try:
        return is_krasserm_config(json.loads((path / "config.json").read_text()))
    except (OSError, ValueError):
        return False


def register(app: typer.Typer) -> None:
    app.command("convert", rich_help_panel="Use")(convert)
