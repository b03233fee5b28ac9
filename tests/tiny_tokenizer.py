"""A small subword tokenizer trained in seconds from a text, saved as a transformers tokenizer directory."""

from __future__ import annotations

from pathlib import Path

TEXT = (
    "The Perceiver reads a long sequence through a small set of latents. Perceiver AR predicts the next token from "
    "the tokens before it, and the latents attend to the whole prefix. A subword tokenizer turns words into pieces; "
    "frequent words become single tokens, rare ones are spelled out. "
)


def train_tokenizer(directory: Path, text: str = TEXT * 20, vocab_size: int = 300) -> Path:
    """A byte-level BPE tokenizer of ``vocab_size`` tokens (``<pad>`` = 0, ``<eos>`` = 1) saved in ``directory``
    with ``PreTrainedTokenizerFast.save_pretrained``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator([text], trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>")
    wrapped.save_pretrained(str(directory))
    return Path(directory)
