"""A model's tokenizer: where it is saved, how it is loaded, and the one interface the commands use.

A model directory that holds no tokenizer files reads UTF-8 bytes (:class:`~perceiver.data.tokenizer.ByteTokenizer`,
the default). One that holds a transformers tokenizer (``tokenizer_config.json``, ``tokenizer.json``,
``spiece.model``, ...) is read with ``AutoTokenizer`` and wrapped in :class:`SubwordTokenizer`, which has the byte
tokenizer's interface (``encode``, ``decode``, ``stream_decoder``, ``vocab_size``, ``pad_token_id``,
``mask_token_id``, ``padding_side``). A saved ``PerceiverTokenizer`` is the byte tokenizer (the same ids), and so is
``PerceiverBytesTokenizer`` (:mod:`perceiver.hf.tokenizer`, saved for transformers' pipelines).

A training run keeps its tokenizer in ``RUN/tokenizer/`` (so its checkpoints find it) and its export ``RUN/model/``
holds the same files beside ``config.json``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, List, Optional, Union

from perceiver.data.tokenizer import ByteTokenizer

TOKENIZER_FILES = (
    "tokenizer_config.json", "tokenizer.json", "special_tokens_map.json", "added_tokens.json", "spiece.model",
    "sentencepiece.bpe.model", "tokenizer.model", "vocab.json", "merges.txt", "vocab.txt", "chat_template.jinja",
)
"""Files a transformers tokenizer may save; an export owns those it holds."""
RUN_TOKENIZER_DIR = "tokenizer"
"""Where a training run keeps its tokenizer (beside ``checkpoints/``)."""
BYTE_TOKENIZER_CLASSES = ("PerceiverTokenizer", "PerceiverBytesTokenizer")
"""transformers tokenizer classes whose ids are the byte tokenizer's."""

Tokenizer = Union[ByteTokenizer, "SubwordTokenizer"]


class TokenizerError(ValueError):
    """A tokenizer that cannot be found or read, with the reason."""


class SubwordTokenizer:
    """A transformers tokenizer behind the byte tokenizer's interface. ``encode`` adds no special tokens."""

    def __init__(self, hf_tokenizer, padding_side: str = "left"):
        self.hf = hf_tokenizer
        self.padding_side = padding_side
        self.vocab_size = len(hf_tokenizer)
        self.pad_token_id = hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else 0
        self.mask_token_id = hf_tokenizer.mask_token_id
        self.eos_token_id = hf_tokenizer.eos_token_id

    def encode(self, text: Union[str, bytes]) -> List[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return list(self.hf(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Iterable[int]) -> str:
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        return self.hf.decode(list(ids), skip_special_tokens=True)

    def stream_decoder(self) -> "SubwordStreamDecoder":
        return SubwordStreamDecoder(self)

    def fingerprint(self) -> str:
        """Identifies the vocabulary (and so the ids a data cache holds)."""
        vocab = sorted(self.hf.get_vocab().items())
        return hashlib.sha256(json.dumps([type(self.hf).__name__, vocab]).encode()).hexdigest()[:16]

    def save(self, directory: Union[str, Path]) -> None:
        self.hf.save_pretrained(str(directory))


class SubwordStreamDecoder:
    """Token ids one by one -> text: decodes everything so far and returns what is new, holding back text that ends
    in an incomplete character (subword pieces may split one)."""

    def __init__(self, tokenizer: SubwordTokenizer):
        self.tokenizer = tokenizer
        self.ids: List[int] = []
        self.emitted = 0

    def __call__(self, ids: Iterable[int]) -> str:
        self.ids.extend(int(i) for i in ids)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        new, self.emitted = text[self.emitted:], len(text)
        return new

    def flush(self) -> str:
        text = self.tokenizer.decode(self.ids)
        new, self.emitted = text[self.emitted:], len(text)
        return new


def is_bytes(tokenizer: Tokenizer) -> bool:
    return isinstance(tokenizer, ByteTokenizer)


def has_tokenizer(directory: Union[str, Path]) -> bool:
    """True when ``directory`` holds tokenizer files."""
    directory = Path(directory)
    return any((directory / name).is_file() for name in ("tokenizer_config.json", "tokenizer.json"))


def tokenizer_files(directory: Union[str, Path]) -> List[str]:
    """The tokenizer files in ``directory``."""
    return [name for name in TOKENIZER_FILES if (Path(directory) / name).is_file()]


def read_tokenizer_dir(directory: Union[str, Path]) -> Tokenizer:
    """The tokenizer saved in ``directory`` (the byte tokenizer when it holds none, or a ``PerceiverTokenizer``)."""
    directory = Path(directory)
    if not has_tokenizer(directory):
        return ByteTokenizer()
    config_file = directory / "tokenizer_config.json"
    try:
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise TokenizerError(f"cannot read {config_file}: {error}") from None
    if isinstance(config, dict) and config.get("tokenizer_class") in BYTE_TOKENIZER_CLASSES:
        return ByteTokenizer()
    try:
        from transformers import AutoTokenizer

        return SubwordTokenizer(AutoTokenizer.from_pretrained(str(directory)))
    except Exception as error:  # transformers raises many kinds for unreadable or unknown tokenizers
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TokenizerError(f"cannot load the tokenizer in {directory}: {reason}") from None


def load_tokenizer(source: Union[str, Path]) -> Tokenizer:
    """The tokenizer of a model (any source :func:`perceiver.load_model` reads: an export, a training run, its
    ``.ckpt``, a Hub repo id, krasserm's or DeepMind's directory), or of a tokenizer directory.

    The byte tokenizer when none is saved.
    """
    from perceiver import hub
    from perceiver.checkpoint import resolve_model_path

    path = hub.download(str(source)) if hub.is_repo_id(source) else Path(source)
    if path.is_dir() and has_tokenizer(path):  # a tokenizer directory (or a model directory with one)
        return read_tokenizer_dir(path)
    resolved = resolve_model_path(path)
    if resolved.is_dir():
        if has_tokenizer(resolved):
            return read_tokenizer_dir(resolved)
        run = run_of(resolved)
        return read_tokenizer_dir(run / RUN_TOKENIZER_DIR) if run else ByteTokenizer()
    run = run_of(resolved)  # a checkpoint: its run's tokenizer
    return read_tokenizer_dir(run / RUN_TOKENIZER_DIR) if run else ByteTokenizer()


def run_of(path: Path) -> Optional[Path]:
    """The training run that ``path`` (``RUN/model`` or ``RUN/checkpoints/x.ckpt``) belongs to, if it keeps a
    tokenizer."""
    for run in (path.parent, path.parent.parent):
        if (run / RUN_TOKENIZER_DIR).is_dir() and (run / "checkpoints").is_dir():
            return run
    return None


def open_tokenizer(name_or_path: str) -> Tokenizer:
    """``--tokenizer NAME_OR_PATH``: a tokenizer directory, a model whose tokenizer to use (see
    :func:`load_tokenizer`), or a Hub repo id of a tokenizer (through transformers' cache)."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if path.is_dir() and has_tokenizer(path):
            return read_tokenizer_dir(path)
        from perceiver.checkpoint import ModelLoadError, resolve_model_path

        try:
            resolved = resolve_model_path(path)
        except ModelLoadError:
            resolved = None
        if resolved is None or (resolved.is_file() and resolved.suffix != ".ckpt"):
            raise TokenizerError(
                f"{name_or_path} is neither a tokenizer directory (tokenizer.json or tokenizer_config.json) nor a "
                "model"
            )
        return load_tokenizer(path)
    from perceiver import hub

    if not hub.is_repo_id(name_or_path) and "/" in name_or_path:
        raise TokenizerError(f"tokenizer {name_or_path!r} does not exist")
    try:
        return load_tokenizer(name_or_path)
    except TokenizerError:
        raise
    except ValueError as error:  # the Hub's one-line errors (offline, missing repo, ...)
        raise TokenizerError(f"tokenizer {name_or_path!r}: {error}") from None


def save_tokenizer(tokenizer: Tokenizer, directory: Union[str, Path]) -> List[str]:
    """Write ``tokenizer``'s files into ``directory`` (nothing for the byte tokenizer); returns their names."""
    if is_bytes(tokenizer):
        return []
    tokenizer.save(directory)
    return tokenizer_files(directory)


def check_model_vocab(tokenizer: Tokenizer, vocab_size: int, where: str) -> None:
    """A tokenizer that does not fit the model's vocabulary is refused in one line: ids past the vocabulary, or a
    model with more tokens than bytes and no tokenizer saved beside it (it would read and print bytes)."""
    if is_bytes(tokenizer) and vocab_size > tokenizer.vocab_size:
        raise TokenizerError(
            f"{where} has a {vocab_size}-token vocabulary but no tokenizer is saved with it (only byte models may "
            "leave it out): save its transformers tokenizer (tokenizer.json or tokenizer_config.json) beside "
            "config.json"
        )
    if tokenizer.vocab_size > vocab_size:
        raise TokenizerError(
            f"{where}: its tokenizer has {tokenizer.vocab_size} tokens, more than the model's vocab_size {vocab_size}"
        )


def model_tokenizer(source: Union[str, Path], model, command: str = "", bytes_only: bool = False) -> Tokenizer:
    """The tokenizer of the model loaded from ``source``, checked against its vocabulary; ``bytes_only``: the
    command reads bytes only (e.g. fill-mask) and refuses a subword model in one line."""
    tokenizer = load_tokenizer(source)
    if bytes_only and not is_bytes(tokenizer):
        raise TokenizerError(f"{command} reads bytes, but {source} has a subword tokenizer")
    vocab_size = getattr(model.config, "vocab_size", None)
    if isinstance(vocab_size, int) and (not bytes_only or is_bytes(tokenizer)):
        check_model_vocab(tokenizer, vocab_size, str(source))
    return tokenizer


def save_run_tokenizer(tokenizer: Optional[Tokenizer], run_dir: Union[str, Path]) -> None:
    """Keep a training run's tokenizer in ``RUN/tokenizer/`` (nothing for the byte tokenizer), so that the run and
    its checkpoints load with it; written atomically, replacing only an earlier copy."""
    if tokenizer is None or is_bytes(tokenizer):
        return
    from perceiver.files import replace_directory

    target = Path(run_dir) / RUN_TOKENIZER_DIR
    replace_directory(target, tokenizer.save, own=tokenizer_files(target), overwrite=True, kind="tokenizer")
