"""UTF-8 byte tokenizer, id-compatible with ``transformers.PerceiverTokenizer`` (ids 0-5 special, byte b -> b + 6).

Pure Python: no download, no transformers import.
"""

from __future__ import annotations

import codecs
from typing import Iterable, List, Optional, Sequence, Tuple, Union

PAD_ID, BOS_ID, EOS_ID, MASK_ID, CLS_ID, SEP_ID = range(6)
SPECIAL_TOKENS = ("[PAD]", "[BOS]", "[EOS]", "[MASK]", "[CLS]", "[SEP]")
NUM_SPECIAL = len(SPECIAL_TOKENS)
VOCAB_SIZE = 256 + NUM_SPECIAL


class ByteTokenizer:
    """Text <-> byte token ids. ``decode`` skips special tokens and replaces invalid UTF-8 (never raises)."""

    vocab_size = VOCAB_SIZE
    pad_token_id = PAD_ID
    mask_token_id = MASK_ID

    def __init__(self, padding_side: str = "left"):
        self.padding_side = padding_side

    def encode(self, text: Union[str, bytes]) -> List[int]:
        data = text.encode("utf-8") if isinstance(text, str) else text
        return [b + NUM_SPECIAL for b in data]

    def to_bytes(self, ids: Iterable[int]) -> bytes:
        return bytes(int(i) - NUM_SPECIAL for i in ids if NUM_SPECIAL <= int(i) < VOCAB_SIZE)

    def decode(self, ids: Iterable[int]) -> str:
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        return self.to_bytes(ids).decode("utf-8", errors="replace")

    def stream_decoder(self) -> "StreamDecoder":
        return StreamDecoder(self)


class StreamDecoder:
    """Decodes token ids one by one into text, holding back incomplete UTF-8 sequences."""

    def __init__(self, tokenizer: ByteTokenizer):
        self.tokenizer = tokenizer
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def __call__(self, ids: Iterable[int]) -> str:
        return self.decoder.decode(self.tokenizer.to_bytes(ids))

    def flush(self) -> str:
        return self.decoder.decode(b"", final=True)


class TextPreprocessor:
    """Texts -> left-padded ``(input_ids (B, N), pad_mask (B, N))`` tensors for Perceiver AR.

    Texts longer than ``max_seq_len`` tokens keep their last ``max_seq_len`` tokens; ``truncated`` lists which.
    ``tokenizer``: the byte tokenizer (default) or anything with its interface
    (:class:`perceiver.tokenizers.SubwordTokenizer`); padding uses id ``PAD_ID`` under the pad mask.
    """

    def __init__(self, max_seq_len: int, padding_side: str = "left", tokenizer: Optional[ByteTokenizer] = None):
        self.max_seq_len = max_seq_len
        self.tokenizer = tokenizer or ByteTokenizer(padding_side)
        self.tokenizer.padding_side = padding_side
        self.truncated: List[int] = []

    def preprocess_batch(self, texts: Sequence[str]) -> Tuple["torch.Tensor", "torch.Tensor"]:  # noqa: F821
        import torch

        encoded = [self.tokenizer.encode(text) for text in texts]
        self.truncated = [i for i, ids in enumerate(encoded) if len(ids) > self.max_seq_len]
        encoded = [ids[-self.max_seq_len:] for ids in encoded]
        length = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), length), PAD_ID, dtype=torch.long)
        pad_mask = torch.ones(len(encoded), length, dtype=torch.bool)
        for row, ids in enumerate(encoded):
            if not ids:
                continue
            if self.tokenizer.padding_side == "left":
                input_ids[row, length - len(ids):] = torch.tensor(ids)
                pad_mask[row, length - len(ids):] = False
            else:
                input_ids[row, : len(ids)] = torch.tensor(ids)
                pad_mask[row, : len(ids)] = False
        return input_ids, pad_mask
