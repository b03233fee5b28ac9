"""``perceiver generate``: continue a prompt with a trained causal language model, streaming the text; or complete
the prompts of a file in batches, as JSON lines."""

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
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="Text to continue."),
    prompts_file: Optional[str] = typer.Option(
        None, "--prompts-file",
        help="File of prompts ('-' = stdin): one per line, or JSON lines with a 'prompt' field. Each completion is "
        "written as a JSON line (prompt, completion, num_tokens), in input order.",
    ),
    batch_size: int = typer.Option(1, "--batch-size", help="Prompts of --prompts-file decoded together."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Write the JSON lines of --prompts-file to this new file (default: stdout)."
    ),
    force: bool = typer.Option(False, "--force", help="Let --output replace an existing file."),
    num_tokens: int = typer.Option(
        256, "--num-tokens", "-n", help="Number of tokens (bytes for byte models) to generate."
    ),
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
    dtype: str = typer.Option("float32", "--dtype", help="Weights and cache in float32, bfloat16 or float16."),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="int8: int8 linear layers (CPU)."),
    compile: bool = typer.Option(
        False, "--compile/--no-compile",
        help="torch.compile the cached decoding step (compiles for minutes first; see docs/inference.md).",
    ),
) -> None:
    """Continue [bold]--prompt[/] with a trained [bold]clm[/] model; text is printed as it is generated. With
    [bold]--prompts-file[/], complete every prompt of the file (in batches of [bold]--batch-size[/])."""
    from rich.console import Console

    err = Console(stderr=True, highlight=False)
    if (prompt is None) == (prompts_file is None):
        raise typer.BadParameter("give either --prompt or --prompts-file", param_hint="--prompt")
    _check_options(prompt, num_tokens, top_k, top_p, temperature)
    if batch_size < 1:
        raise typer.BadParameter(f"must be >= 1, got {batch_size}", param_hint="--batch-size")
    if prompts_file is None and (output is not None or batch_size != 1):
        raise typer.BadParameter("--output and --batch-size go with --prompts-file", param_hint="--prompts-file")
    if compile and not cache:
        raise typer.BadParameter("compiles the cached decoding step; drop --no-cache", param_hint="--compile")
    if output is not None and output.exists() and not (force and output.is_file()):
        raise typer.BadParameter(f"{output} exists; pass --force to replace it", param_hint="--output")

    import torch

    from perceiver import inference
    from perceiver.checkpoint import load_model
    from perceiver.compatibility import check_model_reads
    from perceiver.data.tokenizer import TextPreprocessor
    from perceiver.devices import check_device

    check_device(device)
    inference.check(dtype, quantize)
    prompts = None
    if prompts_file is not None:
        from perceiver.prompts import read_prompts

        prompts = read_prompts(prompts_file)
    lm = inference.prepare(load_model(model, task="clm", map_location=device), dtype, quantize, device, compile)
    check_model_reads(lm, ("text",), "generate")
    from perceiver.tokenizers import is_bytes, model_tokenizer

    tokenizer = model_tokenizer(model, lm, "generate")
    max_latents, max_seq_len = lm.config.max_latents, lm.config.max_seq_len
    if num_latents is None:
        num_latents = max_latents  # generate() keeps it to the prompt's length
    if not 1 <= num_latents <= max_latents:
        raise typer.BadParameter(f"must be in 1..{max_latents} (the model's max_latents), got {num_latents}",
                                 param_hint="--num-latents")
    if prompts is not None:
        return _complete_file(lm, prompts, output, batch_size, num_tokens, num_latents, seed, device, err,
                              tokenizer=tokenizer, top_k=top_k, top_p=top_p, temperature=temperature, use_cache=cache)
    preprocessor = TextPreprocessor(max_seq_len=max_seq_len, tokenizer=tokenizer)
    input_ids, pad_mask = preprocessor.preprocess_batch([prompt])
    if preprocessor.truncated:
        unit = "bytes" if is_bytes(tokenizer) else "tokens"
        err.print(f"[yellow]warning:[/] the prompt is longer than max_seq_len; keeping its last {max_seq_len} {unit}")
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


def _complete_file(lm, prompts, output, batch_size, num_tokens, num_latents, seed, device, err, **sampling) -> None:
    import json

    from perceiver.prompts import complete

    def warn(indices):
        lines = ", ".join(str(i + 1) for i in indices)
        err.print(f"[yellow]warning:[/] prompts {lines} are longer than max_seq_len; keeping their last "
                  f"{lm.config.max_seq_len} tokens")

    records = complete(lm, prompts, batch_size, num_tokens, num_latents, seed, device, on_truncate=warn, **sampling)
    if output is None:
        for record in records:
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        return
    from perceiver.files import atomic_write_file, follow_umask

    lines = [json.dumps(record, ensure_ascii=False) + "\n" for record in records]

    def write(tmp):
        tmp.write_text("".join(lines), encoding="utf-8")
        follow_umask(tmp)

    atomic_write_file(output, write)
    err.print(f"wrote {len(lines)} completions to {output}")


def _check_options(prompt: Optional[str], num_tokens: int, top_k: Optional[int], top_p: Optional[float],
                   temperature: float) -> None:
    """Every option whose range is known without the model, before anything is loaded or printed; each misfit is a
    usage error (exit code 2)."""
    if prompt is not None and not prompt:
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
