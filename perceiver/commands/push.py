"""``perceiver push``: any model ``load_model`` reads -> a Hub repo, as an export with a generated model card."""

from __future__ import annotations

from typing import Optional

import typer


def push(
    source: str = typer.Argument(
        ..., help="Export directory, training output directory, .ckpt file or krasserm directory."
    ),
    repo: str = typer.Option(..., "--repo", help="Hub repo to upload to, ORG/NAME (created if it does not exist)."),
    private: bool = typer.Option(
        False, "--private", help="Create the repo as private (an existing repo keeps its visibility)."
    ),
    revision: Optional[str] = typer.Option(
        None, "--revision", help="Branch to commit to (created if needed); default: main."
    ),
    token: Optional[str] = typer.Option(
        None, "--token", help="Hub token with write access; default: HF_TOKEN or the one `hf auth login` saved."
    ),
    license: str = typer.Option(
        "apache-2.0", "--license", help="License in the model card's metadata (a Hub license id)."
    ),
    message: Optional[str] = typer.Option(None, "--message", help="Commit message."),
) -> None:
    """Upload [bold]SOURCE[/] to the Hugging Face Hub: [bold]config.json[/] + [bold]model.safetensors[/], its
    tokenizer's files and a model card [bold]README.md[/] (task, sizes, parameters and, for a training run, its data
    set, steps, command and final metrics). A README.md of your own beside an export is uploaded instead of the card.
    Nothing is written locally but a temporary directory.

    Example: [bold]perceiver push runs/my-clm --repo me/my-clm[/]
    """
    from rich.console import Console

    from perceiver.checkpoint import ModelLoadError, load_model, resolve_model_path
    from perceiver.model_card import CARD_FILE, is_own_card
    from perceiver.publishing import check_repo_id, find_token, push_model
    from perceiver.tokenizers import load_tokenizer
    from perceiver.training.lora import is_lora_dir

    check_repo_id(repo)
    token = find_token(token)  # before loading: a missing token is said at once
    path = resolve_model_path(source)
    if is_lora_dir(path):
        raise ModelLoadError(f"{source} is a LoRA run: write it as a plain model first (perceiver export {source} "
                             "--merge --output DIR), then push DIR")
    model = load_model(path)
    tokenizer = load_tokenizer(source)
    readme = path / CARD_FILE if path.is_dir() else None
    readme = readme if readme is not None and readme.is_file() and not is_own_card(readme) else None
    url = push_model(model, repo, private=private, revision=revision, token=token, tokenizer=tokenizer,
                     license=license, commit_message=message, source=path, readme=readme)
    params = sum(p.numel() for p in model.parameters())
    Console(stderr=True, highlight=False).print(
        f"[green]pushed[/] {source} ({params / 1e6:.1f}M parameters, task {model.task}) -> [bold]{repo}[/] {url}"
    )


def register(app: typer.Typer) -> None:
    app.command("push", rich_help_panel="Use")(push)
