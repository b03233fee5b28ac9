"""``perceiver export``: any model ``load_model`` reads (a training run, a ``.ckpt``, a Hub repo id, krasserm's
directory, ...) -> an export of this project (``config.json`` + ``model.safetensors``, with its tokenizer)."""

from __future__ import annotations

from pathlib import Path

import typer


def export(
    source: str = typer.Argument(
        ..., help="Training output directory, .ckpt file, export, krasserm directory or Hub repo id."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write the export to."),
    force: bool = typer.Option(
        False, "--force", help="Replace an earlier export in --output (files perceiver did not write are kept)."
    ),
    merge: bool = typer.Option(
        False, "--merge", help="SOURCE is a LoRA run: write its base model with the adapter merged in."
    ),
    pipeline_files: bool = typer.Option(
        False, "--pipeline-files",
        help="Also write what transformers' pipelines read beside the model: the byte tokenizer (PerceiverTokenizer) "
        "of a byte model, the image processor of an image classifier (docs/hub.md).",
    ),
) -> None:
    """Write [bold]SOURCE[/] as an export of this project: [bold]config.json[/] + [bold]model.safetensors[/], the
    files of its tokenizer (none for byte models) and a model card [bold]README.md[/] (unless --output holds a
    README.md of your own, which is kept). A LoRA run needs [bold]--merge[/].

    Example: [bold]perceiver export runs/my-clm --output models/my-clm[/]
    """
    from rich.console import Console

    from perceiver.checkpoint import ModelLoadError, check_export_target, load_model, resolve_model_path, save_model
    from perceiver.model_card import model_card
    from perceiver.tokenizers import load_tokenizer
    from perceiver.training.lora import is_lora_dir

    path = resolve_model_path(source)
    lora = is_lora_dir(path)
    if lora != merge:
        raise ModelLoadError(f"{source} is a LoRA run: pass --merge to write a plain model with the adapter merged in"
                             if lora else f"{source} is not a LoRA run: --merge merges a LoRA adapter into its base")
    check_export_target(output, overwrite=force)
    model = load_model(source)
    tokenizer = load_tokenizer(source)
    card = model_card(model, source=path, name=Path(output).name, tokenizer=tokenizer)
    save_model(model, output, overwrite=force, tokenizer=tokenizer, card=card, pipeline_files=pipeline_files)
    params = sum(p.numel() for p in model.parameters())
    Console(stderr=True, highlight=False).print(
        f"[green]exported[/] {source} ({params / 1e6:.1f}M parameters, task {model.task}) -> [bold]{output}[/]"
    )


def register(app: typer.Typer) -> None:
    app.command("export", rich_help_panel="Use")(export)
