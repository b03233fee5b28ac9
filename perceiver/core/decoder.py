"""Perceiver IO decoder: output queries cross-attend to the latents; and the query providers that make the queries.

Shapes: B batch, M latents, D latent channels, Q output queries, E query channels.

A query provider returns the output queries, ``(1, Q, E)`` when they are the same for every example (broadcast over
the batch, so their normalisation and projection run once) or ``(B, Q, E)``. The number of queries sets the length of
the decoder's output. Providers:

* :class:`TrainableQueryProvider` -- Q learned queries (also the encoder's latent array).
* :class:`PositionQueryProvider` -- one learned query per input position, as in Perceiver IO's masked language model:
  the first N for an input of N positions, or the queries of selected positions.
* :class:`FourierQueryProvider` -- fixed Fourier position features of an output grid (queries derived from positions,
  e.g. one query per pixel for dense image outputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from perceiver.config_checks import check_ranges
from perceiver.core.attention_dropout import KeptDropout
from perceiver.core.init import init_parameters
from perceiver.core.layers import CrossAttentionLayer, set_activation_checkpointing
from perceiver.core.position import fourier_features


class QueryProvider(nn.Module):
    """Base of the query providers: ``forward(x, positions) -> queries (1 or B, Q, E)``.

    :param x: the adapted input (B, N, C), for providers that derive queries from it; may be None otherwise
    :param positions: (B, Q) indices of the outputs wanted, for providers with one query per position
    """

    num_query_channels: int

    def forward(self, x: Optional[Tensor] = None, positions: Optional[Tensor] = None) -> Tensor:
        raise NotImplementedError


class TrainableQueryProvider(QueryProvider):
    """``num_queries`` learned queries of ``num_channels`` channels: ``forward() -> (1, Q, E)``."""

    def __init__(self, num_queries: int, num_channels: int, init_scale: float = 0.02):
        super().__init__()
        self.num_query_channels = num_channels
        self.query = nn.Parameter(torch.empty(num_queries, num_channels))
        nn.init.normal_(self.query, std=init_scale)

    @property
    def num_queries(self) -> int:
        return self.query.shape[0]

    def forward(self, x: Optional[Tensor] = None, positions: Optional[Tensor] = None) -> Tensor:
        return self.query[None]


class PositionQueryProvider(TrainableQueryProvider):
    """One learned query per input position, up to ``num_queries`` positions.

    ``forward(x (B, N, C)) -> (1, N, E)``: the queries of positions 0..N-1.
    ``forward(x, positions (B, Q)) -> (B, Q, E)``: the queries of the given positions only (e.g. the masked ones).
    """

    def forward(self, x: Optional[Tensor] = None, positions: Optional[Tensor] = None) -> Tensor:
        if positions is not None:
            return self.query[positions]  # (B, Q, E)
        if x is None:
            return self.query[None]
        if x.shape[1] > self.num_queries:
            raise ValueError(f"input of {x.shape[1]} positions is longer than the {self.num_queries} output queries")
        return self.query[None, : x.shape[1]]


class FourierQueryProvider(QueryProvider):
    """Fixed Fourier position features of a grid of ``spatial_shape``: ``forward() -> (1, prod(spatial_shape), E)``
    with E = len(spatial_shape) * (2 * num_bands + 1). No parameters."""

    def __init__(self, spatial_shape: Sequence[int], num_bands: int, max_resolution: Optional[Sequence[int]] = None):
        super().__init__()
        features = fourier_features(tuple(spatial_shape), num_bands, max_resolution)
        self.num_query_channels = features.shape[1]
        self.register_buffer("features", features, persistent=False)

    def forward(self, x: Optional[Tensor] = None, positions: Optional[Tensor] = None) -> Tensor:
        if positions is not None:
            return self.features[positions]
        return self.features[None]


@dataclass
class PerceiverDecoderConfig:
    """Sizes of a :class:`PerceiverDecoder`. ``num_qk_channels`` defaults to the query channels, ``num_v_channels``
    to the qk channels."""

    num_latent_channels: int
    num_query_channels: int
    num_heads: int = 1
    num_qk_channels: Optional[int] = None
    num_v_channels: Optional[int] = None
    widening_factor: int = 1
    query_residual: bool = True
    """Add the attention output to the queries (off when queries only carry positions, e.g. Perceiver IO's MLM)."""
    attention_dropout: float = 0.0
    residual_dropout: float = 0.0
    init_scale: float = 0.02
    activation_checkpointing: bool = False

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        check_ranges(
            self,
            {"num_latent_channels": ">= 1", "num_query_channels": ">= 1", "num_heads": ">= 1",
             "num_qk_channels": ">= 1", "num_v_channels": ">= 1", "widening_factor": ">= 1",
             "attention_dropout": "[0, 1)", "residual_dropout": "[0, 1)", "init_scale": "> 0"},
        )
        qk = self.num_qk_channels or self.num_query_channels
        v = self.num_v_channels or qk
        if qk % self.num_heads or v % self.num_heads:
            raise ValueError(
                f"decoder qk ({qk}) and v ({v}) channels must be divisible by num_heads ({self.num_heads})"
            )


class PerceiverDecoder(nn.Module):
    """Output queries cross-attend to the latents: ``forward(latents (B, M, D), x, positions) -> (B, Q, E)``.

    The queries come from ``query_provider(x, positions)``; their number Q sets the output length.
    """

    def __init__(self, config: PerceiverDecoderConfig, query_provider: QueryProvider):
        super().__init__()
        config.validate()
        if query_provider.num_query_channels != config.num_query_channels:
            raise ValueError(
                f"query provider gives {query_provider.num_query_channels} channels, "
                f"the decoder expects num_query_channels={config.num_query_channels}"
            )
        self.config = config
        self.query_provider = query_provider
        self.cross_attention = CrossAttentionLayer(
            num_heads=config.num_heads,
            num_q_channels=config.num_query_channels,
            num_kv_channels=config.num_latent_channels,
            num_qk_channels=config.num_qk_channels,
            num_v_channels=config.num_v_channels,
            widening_factor=config.widening_factor,
            attention_dropout=config.attention_dropout,
            residual_dropout=config.residual_dropout,
            attention_residual=config.query_residual,
        )
        init_parameters(self.cross_attention, config.init_scale)
        set_activation_checkpointing(self, config.activation_checkpointing)

    def forward(self, latents: Tensor, x: Optional[Tensor] = None, positions: Optional[Tensor] = None) -> Tensor:
        """
        :param latents: encoder output (B, M, D)
        :param x: the adapted input (B, N, C), passed to the query provider
        :param positions: (B, Q) output positions, passed to the query provider
        :return: (B, Q, E)
        """
        queries = self.query_provider(x, positions)  # (1 or B, Q, E)
        out = self.cross_attention(queries, latents)
        return out.expand(latents.shape[0], -1, -1) if out.shape[0] != latents.shape[0] else out


# -------------------------------------------------------------------------------------------------------------
#  Decoding with a row-sparse backward pass
# -------------------------------------------------------------------------------------------------------------


class _RowSparseDecode(torch.autograd.Function):
    """Decode all rows without autograd; in the backward pass, recompute and differentiate only the rows whose
    output gradient is not zero (decoder rows are independent given the latents, so this is the dense gradient up
    to float rounding; under bf16 autocast the recomputed rows are rounded anew in bfloat16)."""

    @staticmethod
    def forward(ctx, decode, computed, latents: Tensor, x: Optional[Tensor], *params: Tensor) -> Tensor:
        out, kept = computed.pop()  # computed outside (module hooks, e.g. of profilers, must see ordinary calls)
        ctx.decode, ctx.x, ctx.kept = decode, x, kept
        ctx.save_for_backward(latents, *params)
        return out

    @staticmethod
    @once_differentiable  # not differentiable itself: a second derivative raises
    def backward(ctx, grad_out: Tensor):
        latents, *params = ctx.saved_tensors
        rows = grad_out.ne(0).flatten(2).any(dim=2)  # (B, N): rows that receive gradient
        counts = rows.sum(dim=1)
        num = max(int(counts.max()), 1)
        positions = torch.argsort((~rows).to(torch.int8), dim=1, stable=True)[:, :num]  # (B, Q) those rows first
        valid = torch.arange(num, device=rows.device)[None, :] < counts[:, None]
        positions = positions.masked_fill(~valid, 0)
        kept = ctx.kept.rows(positions) if ctx.kept.drop is not None else ctx.kept  # (B, H, Q, K) of the rows
        with torch.enable_grad():
            lat = latents.detach().requires_grad_(latents.requires_grad)
            out, _ = ctx.decode(lat, ctx.x, positions, kept)
            index = positions.view(*positions.shape, *([1] * (grad_out.dim() - 2))).expand(-1, -1, *grad_out.shape[2:])
            grad = grad_out.gather(1, index) * valid.view(*valid.shape, *([1] * (grad_out.dim() - 2)))
            inputs = ([lat] if lat.requires_grad else []) + list(params)
            grads = list(torch.autograd.grad(out, inputs, grad, allow_unused=True))
        grad_latents = grads.pop(0) if lat.requires_grad else None
        return (None, None, grad_latents, None, *grads)


def decode_row_sparse(decoder: "PerceiverDecoder", latents: Tensor, x: Optional[Tensor],
                      output_adapter: Optional[nn.Module], params) -> Tensor:
    """``output_adapter(decoder(latents, x))`` with a backward pass that only touches output rows with nonzero
    gradient (for losses on a few positions, e.g. masked language modeling: about 15% of the rows).

    Gradients equal the dense backward pass's up to float rounding, also with attention dropout (the forward
    pass's dropout masks are kept); under bf16 autocast the recomputation rounds in bfloat16, so they agree only to
    that precision. The output
    adapter must act row by row (e.g. token logits), and the queries may depend on the shape of ``x`` but not on its
    values (no gradient flows to ``x``). ``params``: every parameter the decoder and output adapter use (those that
    require grad receive gradients). Requires ``residual_dropout == 0``.

    :return: the output adapter's output for all rows, (B, N, ...)
    """
    if decoder.config.residual_dropout > 0:
        raise ValueError("row-sparse decoding needs residual_dropout == 0")

    output = output_adapter.forward if isinstance(output_adapter, nn.Module) else output_adapter

    def decode(lat, x_in, positions, kept):
        # The decoder's own layer, through ``_forward`` (not activation checkpointing: the backward pass recomputes
        # anyway). Its attention dropout draws into ``kept``, so that the rows recomputed in the backward pass drop
        # what the forward pass dropped. Without autograd, the queries are a no-grad view of a parameter: detach it.
        queries = decoder.query_provider.forward(x_in, positions)
        if not torch.is_grad_enabled():
            queries = queries.detach()
        hidden = decoder.cross_attention._forward(queries, lat, kept_dropout=kept)  # (B, Q, E)
        return (output(hidden) if output is not None else hidden), kept

    params = [p for p in params if p.requires_grad]
    with torch.no_grad():
        computed = [decode(latents, x, None, KeptDropout())]
    return _RowSparseDecode.apply(decode, computed, latents, x, *params)


__all__ = [
    "FourierQueryProvider",
    "PerceiverDecoder",
    "PerceiverDecoderConfig",
    "PositionQueryProvider",
    "QueryProvider",
    "TrainableQueryProvider",
    "decode_row_sparse",
]
