"""The byte tokenizer as transformers' pipelines use it beside this project's models.

transformers' ``PerceiverTokenizer`` reads UTF-8 bytes with this project's ids, but wraps every text it encodes in
``[CLS] ... [SEP]`` (as DeepMind's language Perceiver was trained). This project's byte models read texts without
them, so what is saved beside them (:func:`perceiver.hf.auto.save_pipeline_files`) is
:class:`PerceiverBytesTokenizer`: the same tokenizer, adding no special tokens. A masked LM trained with them
(``special_tokens``, e.g. converted from DeepMind's) keeps ``PerceiverTokenizer``.
"""

from __future__ import annotations

from typing import List, Optional

from transformers import PerceiverTokenizer


class PerceiverBytesTokenizer(PerceiverTokenizer):
    """``PerceiverTokenizer`` whose encoding of a text (or a pair) is its bytes only: no ``[CLS]`` or ``[SEP]``."""

    def build_inputs_with_special_tokens(self, token_ids_0: List[int],
                                         token_ids_1: Optional[List[int]] = None) -> List[int]:
        return list(token_ids_0) + list(token_ids_1 or [])

    def get_special_tokens_mask(self, token_ids_0: List[int], token_ids_1: Optional[List[int]] = None,
                                already_has_special_tokens: bool = False) -> List[int]:
        if already_has_special_tokens:
            return super().get_special_tokens_mask(token_ids_0, token_ids_1, already_has_special_tokens=True)
        return [0] * (len(token_ids_0) + len(token_ids_1 or []))
