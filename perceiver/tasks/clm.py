"""Task ``clm``: causal language modeling with Perceiver AR.

``CausalLanguageModel`` is a plain ``nn.Module``: a token input adapter (an instance, or one registered by name,
default ``text-bytes``), the Perceiver AR core and an output adapter (default: logits tied to the input embedding).
``perceiver.training.lightning_module.LitCausalLanguageModel`` trains it with PyTorch Lightning.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from perceiver import registry
from perceiver.adapters.base import TokenInputAdapter, check_adapter_fits, legacy_keys_hook
from perceiver.adapters.output import TokenLogitsAdapter
from perceiver.config_checks import ConfigError, check_ranges
from perceiver.core.init import init_parameters
from perceiver.core.perceiver_ar import PerceiverAR, PerceiverARConfig
from perceiver.core.position import positions
from perceiver.data.tokenizer import VOCAB_SIZE
from perceiver.publishing import HubMethods
from perceiver.tasks.sampling import sample_next, validate_sampling


@dataclass
class CausalLanguageModelConfig(PerceiverARConfig):
    """The Perceiver AR options (inherited from :class:`~perceiver.core.perceiver_ar.PerceiverARConfig`) plus the
    language model's own: vocabulary, input adapter, output norm and initialisation."""

    vocab_size: int = 262
    """Size of the token vocabulary (262 = 256 bytes + 6 special tokens)."""
    init_scale: float = 0.02
    """Standard deviation of the normal weight initialisation."""
    adapter: str = "text-bytes"
    """Registered token input adapter that embeds the input and produces logits."""
    adapter_options: Dict[str, Any] = field(default_factory=dict)
    """Options of the adapter (--set adapter.key=value; see perceiver show adapter NAME)."""
    output_norm: bool = True
    """LayerNorm on the latents' outputs before the logits."""

    def __post_init__(self):
        check_ranges(self, {"vocab_size": ">= 2", "init_scale": "> 0"}, ConfigError)
        self.validate()


class CausalLanguageModel(HubMethods, nn.Module):
    """Perceiver AR language model: token input adapter -> :class:`PerceiverAR` -> output norm -> output adapter.

    ``forward(input_ids (B, N), prefix_len, pad_mask (B, N) True at padding) -> logits (B, N - prefix_len, V)``;
    with ``logits_to_keep=k`` only the last k positions' logits (B, k, V).

    ``input_adapter`` (a :class:`~perceiver.adapters.base.TokenInputAdapter` instance) replaces the registered adapter
    that ``config.adapter`` names; ``output_adapter`` (an :class:`~perceiver.adapters.base.OutputAdapter`) replaces
    the default, logits tied to the input adapter's embedding.
    """

    task = "clm"
    LEGACY_KEYS = {"adapter.": "input_adapter."}
    """Key prefixes of weights saved before the adapter vocabulary (old: new), renamed on load."""

    def __init__(
        self,
        config: CausalLanguageModelConfig,
        input_adapter: Optional[TokenInputAdapter] = None,
        output_adapter: Optional[nn.Module] = None,
    ):
        super().__init__()
        self.config = config
        if input_adapter is None:
            input_adapter = registry.create(
                "adapter",
                config.adapter,
                vocab_size=config.vocab_size,
                max_seq_len=config.max_seq_len,
                num_channels=config.num_channels,
                num_heads=config.num_heads,
                **config.adapter_options,
            )
        check_adapter_fits(input_adapter, config.num_channels, config.vocab_size)
        self.input_adapter = input_adapter
        self.perceiver_ar = PerceiverAR(config)
        self.out_norm = nn.LayerNorm(config.num_channels) if config.output_norm else nn.Identity()
        self.output_adapter = output_adapter if output_adapter is not None else TokenLogitsAdapter(None, input_adapter)
        init_parameters(self.perceiver_ar, config.init_scale)
        self.register_load_state_dict_pre_hook(legacy_keys_hook(self.LEGACY_KEYS))

    @classmethod
    def create(cls, config: CausalLanguageModelConfig) -> "CausalLanguageModel":
        return cls(config)

    def forward(self, input_ids: Tensor, prefix_len: int, pad_mask: Optional[Tensor] = None,
                logits_to_keep: int = 0) -> Tensor:
        batch_size, seq_len = input_ids.shape
        if seq_len > self.config.max_seq_len:
            raise ValueError(f"input of {seq_len} tokens is longer than max_seq_len {self.config.max_seq_len}")
        pos = positions(pad_mask, batch_size, seq_len, device=input_ids.device)
        x = self.input_adapter.embed(input_ids, pos)
        hidden = self.perceiver_ar(x, prefix_len, pad_mask, self.input_adapter.rotary(pos))
        return self._logits(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)

    def _logits(self, hidden: Tensor) -> Tensor:
        """(B, M, C) -> (B, M, V) logits, computed in fp32 (a no-op cast for fp32 weights or under autocast, which
        runs the LayerNorm in fp32): with bf16/fp16 weights, sampling and losses still see fp32 logits."""
        return self.output_adapter(self.out_norm(hidden).float())

    # ---------------------------------------------------------------------------------------------------------
    #  Generation
    # ---------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        prompt: Tensor,
        pad_mask: Optional[Tensor] = None,
        num_tokens: int = 256,
        num_latents: int = 1,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        temperature: float = 1.0,
        use_cache: bool = True,
        generator: Union[None, torch.Generator, Sequence[torch.Generator]] = None,
    ) -> Tensor:
        """Continue ``prompt`` (B, N), left-padded where ``pad_mask`` (B, N) is True; return new tokens (B, num_tokens).

        The first ``num_latents`` positions to predict from are the prompt's last tokens; every new token adds a
        latent until ``max_latents``, then the prefix grows until ``max_seq_len``, then the window slides: the
        layout the model was trained on. ``temperature=0`` decodes greedily. The KV cache (``use_cache``) gives
        the same tokens as recomputing every step. ``generator``: one for the batch, or one per row (then a row's
        tokens do not depend on the rows it is batched with, up to float rounding: padding changes no result).
        """
        steps = self.generate_stream(
            prompt, pad_mask, num_tokens, num_latents, top_k, top_p, temperature, use_cache, generator
        )
        tokens = list(steps)
        if not tokens:
            return prompt.new_empty(prompt.shape[0], 0)
        return torch.cat(tokens, dim=1)

    @torch.no_grad()
    def generate_stream(
        self,
        prompt: Tensor,
        pad_mask: Optional[Tensor] = None,
        num_tokens: int = 256,
        num_latents: int = 1,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        temperature: float = 1.0,
        use_cache: bool = True,
        generator: Union[None, torch.Generator, Sequence[torch.Generator]] = None,
    ) -> Iterator[Tensor]:
        """Like :meth:`generate`, but yields each new token (B, 1) as soon as it is sampled."""
        config = self.config
        if prompt.dim() != 2 or prompt.shape[1] == 0:
            raise ValueError("prompt must be a non-empty (batch, length) tensor of token ids")
        if prompt.shape[1] > config.max_seq_len:
            raise ValueError(f"prompt of {prompt.shape[1]} tokens is longer than max_seq_len {config.max_seq_len}")
        if not 1 <= num_latents <= config.max_latents:
            raise ValueError(f"num_latents must be in 1..{config.max_latents} (max_latents), got {num_latents}")
        if num_tokens < 0:
            raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
        validate_sampling(top_k, top_p, temperature)
        if self.training:
            warnings.warn("generate() called in training mode: prefix dropout is active; call model.eval() first")

        x_like = next(self.perceiver_ar.parameters())  # dtype and device of the cache
        ids = prompt
        pad = pad_mask if pad_mask is not None else torch.zeros_like(prompt, dtype=torch.bool)
        num_latents = min(num_latents, ids.shape[1])
        pos = positions(pad, *ids.shape)
        cache = None
        new_ids, new_pos = ids, pos
        for _ in range(num_tokens):
            if use_cache:
                if cache is None:
                    new_ids, new_pad, new_pos = ids, pad, pos
                    cache = self.perceiver_ar.empty_cache(ids.shape[0], x_like, self.input_adapter.num_rotary_channels)
                else:
                    new_pad = pad[:, -1:]
                x = self.input_adapter.embed(new_ids, new_pos)
                rotary = self.input_adapter.rotary(new_pos)
                hidden = self.perceiver_ar.forward_cached(x, cache, num_latents, new_pad, rotary)
            else:
                x = self.input_adapter.embed(ids, pos)
                hidden = self.perceiver_ar(x, ids.shape[1] - num_latents, pad, self.input_adapter.rotary(pos))
            logits = self._logits(hidden[:, -1])
            next_ids = sample_next(logits, top_k, top_p, temperature, generator)
            yield next_ids

            new_ids, new_pos = next_ids, pos[:, -1:] + 1
            ids = torch.cat([ids, next_ids], dim=1)
            pad = torch.cat([pad, pad.new_zeros(pad.shape[0], 1)], dim=1)
            pos = torch.cat([pos, new_pos], dim=1)
            num_latents = min(num_latents + 1, config.max_latents)
            if ids.shape[1] > config.max_seq_len:  # slide the window: positions restart, the cache is rebuilt
                ids, pad = ids[:, 1:], pad[:, 1:]
                pos = positions(pad, *ids.shape)
                cache = None


def batch_metrics(model: CausalLanguageModel, batch) -> Dict[str, Tensor]:
    """Loss and bits per byte of a batch ``(labels, input_ids, pad_mask)``; labels are -100 where no prediction is
    wanted. Cross-entropy on the latent positions, which are the last ``min(max_latents, N)`` ones. A model whose
    vocabulary is not the byte tokenizer's reads subword tokens: its bits are per token (``bits_per_token``)."""
    labels, input_ids, pad_mask = batch
    num_latents = min(model.config.max_latents, input_ids.shape[1])
    logits = model(input_ids, prefix_len=input_ids.shape[1] - num_latents, pad_mask=pad_mask)
    labels = labels[:, -num_latents:]
    loss = F.cross_entropy(logits.transpose(1, 2).float(), labels, ignore_index=-100)
    bits = "bpb" if model.config.vocab_size == VOCAB_SIZE else "bits_per_token"
    return {"loss": loss, bits: loss / math.log(2), "count": (labels != -100).sum()}



__all__ = ["CausalLanguageModel", "CausalLanguageModelConfig", "batch_metrics"]
