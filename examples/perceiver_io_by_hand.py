"""Perceiver IO composed by hand: input adapter -> encoder -> decoder -> output adapter, trained with a plain loop.

The model fills in masked bytes (a miniature masked language model) on a few sentences. Every piece is a plain
``nn.Module`` built from its own config; ``perceiver train mlm`` builds the same pieces by name.

    python examples/perceiver_io_by_hand.py                # ~1 minute on a laptop CPU
    python examples/perceiver_io_by_hand.py --tiny --steps 20
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from perceiver.adapters.output import TokenLogitsAdapter
from perceiver.adapters.text import TextAdapterConfig, TextBytesAdapter
from perceiver.core.decoder import PerceiverDecoder, PerceiverDecoderConfig, PositionQueryProvider
from perceiver.core.encoder import PerceiverEncoder, PerceiverEncoderConfig
from perceiver.core.perceiver_io import PerceiverIO
from perceiver.data.tokenizer import MASK_ID, ByteTokenizer
from perceiver.tasks.mlm import mask_tokens

SENTENCES = [
    "The Perceiver reads bytes, pixels or sounds through a small latent array.",
    "Cross-attention maps a long input onto a few latents; self-attention refines them.",
    "Output queries ask the latents for exactly the outputs they need.",
    "A masked language model predicts the bytes hidden behind mask tokens.",
]


def build(max_seq_len: int, channels: int, latents: int, latent_channels: int, layers: int) -> PerceiverIO:
    # 1. input adapter: UTF-8 bytes -> token + position embeddings (B, N, C)
    input_adapter = TextBytesAdapter(
        TextAdapterConfig(vocab_size=262, max_seq_len=max_seq_len, num_channels=channels, num_heads=4,
                          rotary_fraction=0.0)
    )
    # 2. encoder: trainable latents (M, D) cross-attend to the input, then self-attend
    encoder = PerceiverEncoder(
        PerceiverEncoderConfig(
            num_input_channels=input_adapter.num_input_channels,
            num_latents=latents,
            num_latent_channels=latent_channels,
            num_cross_attention_heads=4,
            num_self_attention_heads=4,
            num_self_attention_layers_per_block=layers,
        )
    )
    # 3. decoder: one learned query per input position cross-attends to the latents -> (B, N, C)
    queries = PositionQueryProvider(max_seq_len, channels)
    decoder = PerceiverDecoder(
        PerceiverDecoderConfig(num_latent_channels=latent_channels, num_query_channels=channels, num_heads=4,
                               query_residual=False),
        queries,
    )
    # 4. output adapter: logits tied to the input embedding -> (B, N, 262)
    output_adapter = TokenLogitsAdapter(None, input_adapter)
    return PerceiverIO(input_adapter, encoder, decoder, output_adapter)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--tiny", action="store_true", help="a very small model (for tests)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    tokenizer = ByteTokenizer()
    encoded = [tokenizer.encode(s) for s in SENTENCES]
    max_seq_len = max(len(ids) for ids in encoded)
    ids = torch.zeros(len(encoded), max_seq_len, dtype=torch.long)
    pad = torch.ones(len(encoded), max_seq_len, dtype=torch.bool)
    for row, sentence in enumerate(encoded):
        ids[row, : len(sentence)] = torch.tensor(sentence)
        pad[row, : len(sentence)] = False

    sizes = (16, 8, 32, 1) if args.tiny else (64, 32, 128, 2)
    model = build(max_seq_len, *sizes)
    print(f"model: {sum(p.numel() for p in model.parameters()):,} parameters")
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for step in range(1, args.steps + 1):
        corrupted, labels = mask_tokens(ids, pad, mask_prob=0.15)
        logits = model(corrupted, pad)  # (B, N, 262)
        loss = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % max(1, args.steps // 5) == 0:
            print(f"step {step}: loss {loss.item():.3f}")

    model.eval()
    probe = ids[:1].clone()
    hidden = torch.arange(4, 12)  # mask bytes 4..11 of the first sentence
    probe[0, hidden] = MASK_ID
    with torch.no_grad():
        filled = model(probe, pad[:1]).argmax(dim=-1)
    probe[0, hidden] = filled[0, hidden]
    print("masked:", SENTENCES[0][:4] + "_" * len(hidden) + SENTENCES[0][12:])
    print("filled:", tokenizer.decode(probe[0][~pad[0]]))


if __name__ == "__main__":
    main()
