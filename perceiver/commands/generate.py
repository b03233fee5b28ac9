"""``perceiver generate``: continue a prompt with a trained causal language model, streaming the text."""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path
from typing import Optional

import typer

from perceiver.devices import DEVICE_HELP


def generate(
    model: Path = typer.Option(..., "--model", "-m", help="Model directory, training output directory or .ckpt file."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="Text to continue."),
    num_tokens: int = typer.Option(256, "--num-tokens", "-n", help="Number of bytes to generate."),
    num_latents: Optional[int] = typer.Option(
        None, "--num-latents",
        help="Latent positions to start with (1..max_latents). Default: every prompt byte up to max_latents, the "
        "layout the model was trained on.",
    ),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Sample from the k most likely bytes."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Nucleus sampling threshold in (0, 1]."),
    temperature: float = typer.Option(1.0, "--temperature", "-t", help="Softmax temperature; 0 = greedy."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Make sampling reproducible."),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Use the key/value cache."),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
) -> None:
    """Continue [bold]--prompt[/] with a trained [bold]clm[/] model; text is printed as it is generated."""
    from rich.console import Console

    err = Console(stderr=True, highlight=False)
    _check_options(prompt, num_tokens, top_k, top_p, temperature)

    import torch

    from perceiver.checkpoint import load_model
    from perceiver.compatibility import check_model_reads
    from perceiver.data.tokenizer import TextPreprocessor
    from perceiver.devices import check_device

    check_device(device)
    lm = load_model(model, task="clm", map_location=device)
    check_model_reads(lm, ("text",), "generate")
    max_latents, max_seq_len = lm.config.max_latents, lm.config.max_seq_len
    if num_latents is None:
        num_latents = max_latents  # generate() keeps it to the prompt's length
    if not 1 <= num_latents <= max_latents:
        raise typer.BadParameter(f"must be in 1..{max_latents} (the model's max_latents), got {num_latents}",
                                 param_hint="--num-latents")
    preprocessor = TextPreprocessor(max_seq_len=max_seq_len)
    input_ids, pad_mask = preprocessor.preprocess_batch([prompt])
    if preprocessor.truncated:
        err.print(f"[yellow]warning:[/] the prompt is longer than max_seq_len; keeping its last {max_seq_len} bytes")
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    decode = preprocessor.tokenizer.stream_decoder()
    steps = lm.generate_stream(
        input_ids.to(device), pad_mask.to(device), num_tokens=num_tokens, num_latents=num_latents, top_k=top_k,
        top_p=top_p, temperature=temperature, use_cache=cache, generator=generator,
    )
    first = next(steps)  # whatever fails in the first step fails before anything is printed
    out = sys.stdout
    out.write(preprocessor.tokenizer.decode(input_ids[0]))
    out.flush()
    for token in itertools.chain([first], steps):
        out.write(decode(token[0].tolist()))
        out.flush()
    out.write(decode.flush() + "\n")
    out.flush()


def _check_options(prompt: str, num_tokens: int, top_k: Optional[int], top_p: Optional[float],
                   temperature: float) -> None:
    """Every option whose range is known without the model, before anything is loaded or printed; each misfit is a
    usage error (exit code 2)."""
    if not prompt:
        raise typer.BadParameter("the prompt is empty", param_hint="--prompt")
    if num_tokens < 1:
        raise typer.BadParameter(f"must be >= 1, got {num_tokens}", param_hint="--num-tokens")
    if top_k is not None and top_k < 1:
        raise typer.BadParameter(f"must be >= 1, got {top_k}", param_hint="--top-k")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise typer.BadParameter(f"must be in (0, 1], got {top_p}", param_hint="--top-p")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise typer.BadParameter(f"must be a number >= 0 (0 = greedy), got {temperature}", param_hint="--temperature")


def register(app: typer.Typer) -> None:
    app.command("generate", rich_help_panel="Use")(generate)
