"""Task ``mlm``: masked language modeling with Perceiver IO (byte level, as DeepMind's language Perceiver).

``MaskedLanguageModel`` = token input adapter (default ``text-bytes``) -> encoder -> decoder with one learned query per
position -> logits tied to the input embedding. :func:`mask_tokens` implements the masking (80% ``[MASK]``, 10% a
random byte, 10% unchanged; optionally whole words); ``LitMaskedLanguageModel`` trains on any byte corpus.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from perceiver.adapters.base import TokenInputAdapter, check_adapter_fits, legacy_keys_hook
from perceiver.adapters.output import TokenLogitsAdapter
from perceiver.config_checks import ConfigError, check_ranges
from perceiver.core.decoder import PositionQueryProvider, decode_row_sparse
from perceiver.core.linear import is_plain_tree
from perceiver.core.perceiver_io import PerceiverIO
from perceiver.data.tokenizer import CLS_ID, MASK_ID, NUM_SPECIAL, PAD_ID, SEP_ID, VOCAB_SIZE, ByteTokenizer
from perceiver.publishing import HubMethods
from perceiver.tasks.perceiver_io_options import (
    PerceiverIOOptions,
    build_encoder_decoder,
    create_input_adapter,
)

WHITESPACE_IDS = tuple(b + NUM_SPECIAL for b in b" \t\n\r\x0b\x0c")
MASK_TEXT = "[MASK]"


@dataclass
class MaskedLanguageModelConfig(PerceiverIOOptions):
    vocab_size: int = VOCAB_SIZE
    """Size of the token vocabulary (262 = 256 bytes + 6 special tokens)."""
    max_seq_len: int = 2048
    """Longest input; the decoder has one query per position."""
    num_input_channels: int = 768
    """Channels of the token embedding (the decoder's query channels)."""
    mask_prob: float = 0.15
    """Share of tokens (or words) selected for prediction in training."""
    whole_word_masking: bool = False
    """Select whole words (runs of non-whitespace bytes) instead of single bytes."""
    special_tokens: bool = False
    """fill-mask wraps texts in [CLS] ... [SEP] (how DeepMind's language Perceiver was trained; set by the
    converter)."""
    row_sparse_backward: bool = True
    """When logits of all positions are computed in training (``model(input_ids)``), backpropagate through the
    decoder only at positions whose logits receive gradient (the dense gradient up to float rounding; much faster
    when the loss covers few positions). ``perceiver train mlm`` decodes only the masked positions and never takes
    this path."""

    def __post_init__(self):
        check_ranges(
            self,
            {"vocab_size": f"> {NUM_SPECIAL}", "max_seq_len": ">= 1", "num_input_channels": ">= 1",
             "mask_prob": "(0, 1)"},
            ConfigError,
        )
        self.validate_io()


class MaskedLanguageModel(HubMethods, PerceiverIO):
    """Perceiver IO masked language model.

    ``forward(input_ids (B, N), pad_mask (B, N) True at padding) -> logits (B, N, V)``;
    ``forward(input_ids, pad_mask, positions (B, Q)) -> logits (B, Q, V)`` of the given positions only (the decoder
    then runs Q queries instead of N: training decodes only the masked positions).
    """

    task = "mlm"
    LEGACY_KEYS = {"input_adapter.adapter.": "input_adapter."}
    """Key prefixes of weights saved before the adapter vocabulary (old: new), renamed on load."""

    def __init__(
        self,
        config: MaskedLanguageModelConfig,
        input_adapter: Optional[TokenInputAdapter] = None,
        output_adapter: Optional[nn.Module] = None,
    ):
        """``input_adapter`` (an instance) replaces the registered adapter ``config.adapter`` names;
        ``output_adapter`` replaces the default, logits tied to the input adapter's embedding."""
        if input_adapter is None:
            input_adapter = create_input_adapter(
                config.adapter,
                config.adapter_options,
                rotary_fraction=0.0,  # the encoder has no rotary embedding
                vocab_size=config.vocab_size,
                max_seq_len=config.max_seq_len,
                num_channels=config.num_input_channels,
                num_heads=config.num_cross_attention_heads,
            )
        check_adapter_fits(input_adapter, config.num_input_channels, config.vocab_size)
        query_provider = PositionQueryProvider(config.max_seq_len, input_adapter.num_input_channels, config.init_scale)
        encoder, decoder = build_encoder_decoder(config, input_adapter, query_provider, query_residual=False)
        if output_adapter is None:
            output_adapter = TokenLogitsAdapter(None, input_adapter)
        super().__init__(input_adapter, encoder, decoder, output_adapter)
        self.config = config
        self.register_load_state_dict_pre_hook(legacy_keys_hook(self.LEGACY_KEYS))

    def forward(self, input_ids: Tensor, pad_mask: Optional[Tensor] = None, positions: Optional[Tensor] = None):
        if input_ids.shape[1] > self.config.max_seq_len:
            raise ValueError(
                f"input of {input_ids.shape[1]} tokens is longer than max_seq_len {self.config.max_seq_len}"
            )
        cfg = self.config
        if positions is None and self.training and torch.is_grad_enabled() and cfg.row_sparse_backward \
                and cfg.residual_dropout == 0 and is_plain_tree(self.decoder) and is_plain_tree(self.output_adapter):
            latents, x, _ = self.encode(input_ids, pad_mask)
            params = list(self.decoder.parameters()) + list(self.input_adapter.parameters())
            return decode_row_sparse(self.decoder, latents, x, self.output_adapter, params)
        return super().forward(input_ids, pad_mask, positions)

    @torch.no_grad()
    def fill_mask(self, texts: Sequence[str], top_k: int = 5) -> List[List["Candidate"]]:
        """Fill every ``[MASK]`` in each text (one byte per ``[MASK]``); return the ``top_k`` most likely fillings.

        Candidates rank all masked bytes of a text jointly (product of the per-position probabilities, exact k-best
        search), best first.
        """
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        encoded = [encode_masked(text) for text in texts]
        if self.config.special_tokens:
            encoded = [[CLS_ID, *ids, SEP_ID] for ids in encoded]
        for text, ids in zip(texts, encoded):
            if len(ids) > self.config.max_seq_len:
                raise ValueError(f"text of {len(ids)} bytes is longer than max_seq_len {self.config.max_seq_len}")
            if MASK_ID not in ids:
                raise ValueError(f"no {MASK_TEXT} in {text!r}")
        device = next(self.parameters()).device
        length = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), length), PAD_ID, dtype=torch.long, device=device)
        pad_mask = torch.ones(len(encoded), length, dtype=torch.bool, device=device)
        for row, ids in enumerate(encoded):
            input_ids[row, : len(ids)] = torch.tensor(ids, device=device)
            pad_mask[row, : len(ids)] = False
        logits = self(input_ids, pad_mask).float()
        logits[..., :NUM_SPECIAL] = float("-inf")  # fill with bytes only
        log_probs = logits.log_softmax(dim=-1)
        results = []
        for row, ids in enumerate(encoded):
            masked = [i for i, token in enumerate(ids) if token == MASK_ID]
            best = _k_best(log_probs[row, masked], top_k)
            results.append([_candidate(ids, masked, fill, score) for fill, score in best])
        return results


@dataclass
class Candidate:
    """One filling of a text's masks: the completed ``text``, the filled bytes as text, and their probability."""

    text: str
    fill: str
    probability: float


def encode_masked(text: str) -> List[int]:
    """Byte token ids of ``text`` with every ``[MASK]`` replaced by the mask token."""
    if not text:
        raise ValueError("the text is empty")
    tokenizer = ByteTokenizer()
    ids: List[int] = []
    for index, part in enumerate(text.split(MASK_TEXT)):
        if index:
            ids.append(MASK_ID)
        ids.extend(tokenizer.encode(part))
    return ids


def _k_best(log_probs: Tensor, k: int) -> List[Tuple[List[int], float]]:
    """The k most likely token sequences under independent per-position log-probabilities (P, V)."""
    beams: List[Tuple[List[int], float]] = [([], 0.0)]
    for position in log_probs:
        values, indices = position.topk(min(k, position.shape[0]))
        merged = [(seq + [int(i)], score + float(v)) for seq, score in beams for v, i in zip(values, indices)]
        beams = sorted(merged, key=lambda item: -item[1])[:k]
    return beams


def _candidate(ids: List[int], masked: List[int], fill: List[int], score: float) -> Candidate:
    tokenizer = ByteTokenizer()
    filled = list(ids)
    for position, token in zip(masked, fill):
        filled[position] = token
    return Candidate(tokenizer.decode(filled), tokenizer.decode(fill), math.exp(score))  # decode drops [CLS]/[SEP]


# -------------------------------------------------------------------------------------------------------------
#  Masking
# -------------------------------------------------------------------------------------------------------------


def mask_tokens(
    input_ids: Tensor,
    pad_mask: Optional[Tensor],
    mask_prob: float = 0.15,
    whole_word: bool = False,
    generator: Optional[torch.Generator] = None,
) -> Tuple[Tensor, Tensor]:
    """Select positions for prediction and corrupt them: 80% -> ``[MASK]``, 10% -> a random byte, 10% unchanged.

    Only byte tokens are selected (never padding or special tokens). With ``whole_word``, each word (a maximal run
    of non-whitespace bytes) is selected with probability ``mask_prob``, all its bytes together. At least one
    position per batch is selected.

    :param input_ids: (B, N) token ids
    :param pad_mask: (B, N), True at padding
    :return: corrupted ids (B, N), labels (B, N): the original id at selected positions, -100 elsewhere
    """
    device = input_ids.device
    candidates = input_ids >= NUM_SPECIAL
    if pad_mask is not None:
        candidates &= ~pad_mask

    def uniform(*shape):
        return torch.rand(*shape, generator=generator, device=device)

    if whole_word:
        in_word = candidates & ~torch.isin(input_ids, torch.tensor(WHITESPACE_IDS, device=device))
        previous = torch.nn.functional.pad(in_word[:, :-1], (1, 0), value=False)
        word_index = (in_word & ~previous).long().cumsum(dim=1)  # (B, N): 1, 2, ... per word, 0 before the first
        chosen_words = uniform(input_ids.shape[0], input_ids.shape[1] + 1) < mask_prob  # one draw per word index
        selected = in_word & chosen_words.gather(1, word_index)
    else:
        selected = candidates & (uniform(*input_ids.shape) < mask_prob)
    if not selected.any() and candidates.any():
        flat = candidates.flatten().nonzero().squeeze(1)
        pick = flat[torch.randint(len(flat), (1,), generator=generator, device=device)]
        selected = selected.flatten().index_fill(0, pick, True).view_as(selected)

    labels = input_ids.masked_fill(~selected, -100)
    action = uniform(*input_ids.shape)
    corrupted = input_ids.masked_fill(selected & (action < 0.8), MASK_ID)
    random_bytes = torch.randint(NUM_SPECIAL, VOCAB_SIZE, input_ids.shape, generator=generator, device=device)
    replace = selected & (action >= 0.8) & (action < 0.9)
    corrupted = torch.where(replace, random_bytes, corrupted)
    return corrupted, labels


def selected_positions(labels: Tensor) -> Tuple[Tensor, Tensor]:
    """Positions of the labelled tokens of each row, left-aligned: (positions (B, Q), valid (B, Q)) with Q the
    largest count in a row; padding entries point at position 0 and are not valid."""
    selected = labels != -100
    counts = selected.sum(dim=1)
    num = max(int(counts.max()), 1)
    order = torch.argsort((~selected).to(torch.int8), dim=1, stable=True)[:, :num]  # selected positions first
    valid = torch.arange(num, device=labels.device)[None, :] < counts[:, None]
    return order.masked_fill(~valid, 0), valid


def batch_metrics(model: MaskedLanguageModel, batch) -> Dict[str, Tensor]:
    """Loss and masked-token accuracy of a byte-corpus batch ``(labels, input_ids, pad_mask)`` (labels, the
    next-token targets, are ignored): masks the batch, decodes the masked positions only, cross-entropy on them.
    Masks are random in training and fixed (seed 0) in eval mode, so validation numbers are comparable."""
    _, input_ids, pad_mask = batch
    generator = None
    if not model.training:
        generator = torch.Generator(device=input_ids.device).manual_seed(0)
    corrupted, labels = mask_tokens(
        input_ids, pad_mask, model.config.mask_prob, model.config.whole_word_masking, generator
    )
    positions, valid = selected_positions(labels)
    logits = model(corrupted, pad_mask, positions)  # (B, Q, V)
    targets = labels.gather(1, positions).masked_fill(~valid, -100)
    loss = F.cross_entropy(logits.transpose(1, 2).float(), targets, ignore_index=-100)
    correct = (logits.argmax(dim=-1) == targets) & valid
    count = valid.sum()
    return {"loss": loss, "accuracy": correct.sum() / count.clamp(min=1), "count": count}



__all__ = [
    "Candidate",
    "MaskedLanguageModel",
    "MaskedLanguageModelConfig",
    "batch_metrics",
    "encode_masked",
    "mask_tokens",
    "selected_positions",
]
