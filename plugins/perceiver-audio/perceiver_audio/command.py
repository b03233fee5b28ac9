"""``perceiver audio-synth``: continue a prompt waveform with a trained ``mulaw`` model and write a WAV file.

Only typer is imported at module level, so ``perceiver --help`` stays fast with the plugin installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from perceiver.devices import DEVICE_HELP

PROMPT_HELP = "A synthesized prompt (tone, chord or chirp) or a .wav file to continue."


def audio_synth(
    model: Path = typer.Option(..., "--model", "-m", help="Model directory, training output directory or .ckpt file."),
    output: Path = typer.Option(Path("continuation.wav"), "--output", "-o", help="WAV file to write (16-bit mono)."),
    prompt: str = typer.Option("chord", "--prompt", "-p", help=PROMPT_HELP),
    prompt_seconds: float = typer.Option(0.1, "--prompt-seconds", help="Prompt length (a file's last part)."),
    seconds: float = typer.Option(0.5, "--seconds", "-s", help="Length of the generated continuation."),
    sample_rate: int = typer.Option(8000, "--sample-rate", help="Sample rate the model was trained at."),
    temperature: float = typer.Option(1.0, "--temperature", "-t", help="Softmax temperature; 0 = greedy."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Sample from the k most likely codes."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Nucleus sampling threshold in (0, 1]."),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthesized prompt and of sampling."),
    with_prompt: bool = typer.Option(True, "--with-prompt/--without-prompt", help="Write the prompt first."),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    force: bool = typer.Option(False, "--force", help="Replace --output if it exists."),
) -> None:
    """Continue an audio prompt with a trained [bold]mulaw[/] model and write [bold]--output[/] (WAV)."""
    from rich.console import Console

    from perceiver_audio import synth

    err = Console(stderr=True, highlight=False)
    if seconds <= 0 or prompt_seconds <= 0:
        raise typer.BadParameter("--seconds and --prompt-seconds must be > 0")
    if output.exists() and not force:
        raise typer.BadParameter(f"{output} exists; pass --force to replace it", param_hint="--output")
    if prompt in synth.GENERATORS:
        waveform = synth.clip(seed, sample_rate, prompt_seconds, kind=prompt, seed=seed)
    else:
        from perceiver_audio.wav import read_wav, resample

        path = Path(prompt)
        if not path.is_file():
            raise typer.BadParameter(f"{prompt!r} is neither a clip kind ({', '.join(synth.KINDS)}) nor a file",
                                     param_hint="--prompt")
        waveform, rate = read_wav(path)
        waveform = resample(waveform, rate, sample_rate)[-max(1, int(prompt_seconds * sample_rate)):]

    import numpy as np
    import torch

    from perceiver.checkpoint import load_model
    from perceiver.data.tokenizer import NUM_SPECIAL
    from perceiver.devices import check_device
    from perceiver_audio import mulaw
    from perceiver_audio.wav import write_wav

    check_device(device)
    lm = load_model(model, task="clm", map_location=device)
    if lm.config.adapter != "mulaw":
        raise typer.BadParameter(f"{model} uses adapter {lm.config.adapter!r}, not mulaw", param_hint="--model")
    codes = mulaw.encode(waveform)[-lm.config.max_seq_len:]
    prompt_ids = torch.from_numpy(codes.astype(np.int64) + NUM_SPECIAL)[None].to(device)
    num_tokens = max(1, int(round(seconds * sample_rate)))
    generator = torch.Generator(device=device).manual_seed(seed)
    new_ids = lm.generate(
        prompt_ids, num_tokens=num_tokens, num_latents=min(lm.config.max_latents, prompt_ids.shape[1]),
        top_k=top_k, top_p=top_p, temperature=temperature, generator=generator,
    )
    new_codes = (new_ids[0].cpu().numpy() - NUM_SPECIAL).clip(0, mulaw.MU)
    audio = mulaw.decode(np.concatenate([codes, new_codes]) if with_prompt else new_codes)
    write_wav(output, audio, sample_rate)
    err.print(f"wrote {output}: {len(audio) / sample_rate:.2f} s at {sample_rate} Hz "
              f"({len(codes) if with_prompt else 0} prompt + {len(new_codes)} generated samples)")
