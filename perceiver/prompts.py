"""Prompt files for ``perceiver generate --prompts-file``: reading them, and completing them in left-padded batches.

A prompt file holds one prompt per line, or JSON lines with a ``prompt`` field (the form is decided by the first
line: a JSON object means JSON lines). Every prompt must be non-empty; errors name the line.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Union


class PromptFileError(ValueError):
    """A prompt file that cannot be read, with the line at fault."""


def read_prompts(path: Union[str, Path]) -> List[str]:
    """The prompts of ``path`` (``"-"`` = stdin), in file order."""
    source = "stdin" if str(path) == "-" else str(path)
    if str(path) == "-":
        text = sys.stdin.read()
    else:
        file = Path(path)
        if not file.is_file():
            raise PromptFileError(f"prompts file {source!r} does not exist")
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise PromptFileError(f"cannot read prompts file {source}: {error}") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():  # trailing blank lines are the end of the file, not empty prompts
        lines.pop()
    if not lines:
        raise PromptFileError(f"prompts file {source} is empty")
    jsonl = _is_json_object(lines[0])
    prompts = []
    for number, line in enumerate(lines, 1):
        prompt = _json_prompt(line, source, number) if jsonl else line
        if not prompt:
            raise PromptFileError(f"{source} line {number}: the prompt is empty")
        prompts.append(prompt)
    return prompts


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _json_prompt(line: str, source: str, number: int) -> str:
    try:
        record = json.loads(line)
    except ValueError:
        raise PromptFileError(f"{source} line {number}: not a JSON object (the file's first line is JSON)") from None
    if not isinstance(record, dict) or "prompt" not in record:
        raise PromptFileError(f"{source} line {number}: the JSON object has no 'prompt' field")
    if not isinstance(record["prompt"], str):
        raise PromptFileError(f"{source} line {number}: 'prompt' must be a string")
    return record["prompt"]


def row_seed(seed: int, index: int) -> int:
    """Seed of the generator of prompt ``index`` (0-based, in file order): independent of the batch it is in."""
    digest = hashlib.sha256(f"perceiver-prompt:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def complete(
    model,
    prompts: List[str],
    batch_size: int,
    num_tokens: int,
    num_latents: Optional[int] = None,
    seed: Optional[int] = None,
    device: str = "cpu",
    on_truncate=None,
    tokenizer=None,
    **sampling,
) -> Iterator[Dict[str, object]]:
    """Yield ``{"prompt", "completion", "num_tokens"}`` for every prompt, in order, decoding ``batch_size`` prompts
    at a time (left-padded to the longest of the batch). With ``seed``, every prompt has its own generator
    (:func:`row_seed`), so its completion does not depend on the batch it was in.

    :param sampling: ``top_k``, ``top_p``, ``temperature``, ``use_cache`` of ``CausalLanguageModel.generate``
    :param on_truncate: called with the 0-based indices of prompts longer than ``max_seq_len`` (their last
        ``max_seq_len`` tokens are kept)
    :param tokenizer: the model's tokenizer (:func:`perceiver.tokenizers.load_tokenizer`; default: bytes)
    """
    import torch

    from perceiver.data.tokenizer import TextPreprocessor

    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    preprocessor = TextPreprocessor(max_seq_len=model.config.max_seq_len, tokenizer=tokenizer)
    num_latents = model.config.max_latents if num_latents is None else num_latents
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        input_ids, pad_mask = preprocessor.preprocess_batch(batch)
        if on_truncate is not None and preprocessor.truncated:
            on_truncate([start + i for i in preprocessor.truncated])
        generators = None
        if seed is not None:
            generators = [
                torch.Generator(device=device).manual_seed(row_seed(seed, start + i)) for i in range(len(batch))
            ]
        new_ids = model.generate(
            input_ids.to(device), pad_mask.to(device), num_tokens=num_tokens, num_latents=num_latents,
            generator=generators, **sampling,
        )
        for text, row in zip(batch, new_ids.cpu()):
            completion = preprocessor.tokenizer.decode(row.tolist())
            yield {"prompt": text, "completion": completion, "num_tokens": int(row.numel())}
