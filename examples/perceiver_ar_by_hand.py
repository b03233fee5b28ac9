"""Perceiver AR composed by hand: input adapter -> PerceiverAR -> LayerNorm -> output adapter, plain training loop.

The model learns a few sentences byte by byte, then continues a prompt greedily. Every piece is a plain ``nn.Module``
built from its own config; ``perceiver train clm`` (``perceiver.tasks.clm.CausalLanguageModel``) builds the same
pieces by name and adds cached decoding.

    python examples/perceiver_ar_by_hand.py                # ~1 minute on a laptop CPU
    python examples/perceiver_ar_by_hand.py --tiny --steps 200
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from perceiver.adapters import TextAdapterConfig, TextBytesAdapter, TokenLogitsAdapter
from perceiver.core import PerceiverAR, PerceiverARConfig, positions
from perceiver.data.tokenizer import ByteTokenizer

SENTENCES = [
    "Perceiver AR attends from a few latents to a long prefix.",
    "The latents are the last positions of the sequence.",
]


class ByteLanguageModel(nn.Module):
    """``forward(input_ids (B, N), num_latents) -> logits (B, num_latents, 262)`` of the last ``num_latents``
    positions, each predicting the next byte."""

    def __init__(self, max_seq_len: int, max_latents: int, channels: int, layers: int):
        super().__init__()
        # 1. input side: bytes -> token + position embeddings (B, N, C), and rotary angles for the attention
        self.input_adapter = TextBytesAdapter(
            TextAdapterConfig(vocab_size=262, max_seq_len=max_seq_len, num_channels=channels, num_heads=2)
        )
        # 2. core: the latents cross-attend causally to prefix + latents, then self-attend causally
        self.perceiver_ar = PerceiverAR(
            PerceiverARConfig(num_channels=channels, num_heads=2, max_seq_len=max_seq_len, max_latents=max_latents,
                              num_self_attention_layers=layers, cross_attention_dropout=0.0)
        )
        self.norm = nn.LayerNorm(channels)
        # 3. output side: logits tied to the input embedding -> (B, M, 262)
        self.output_adapter = TokenLogitsAdapter(None, self.input_adapter)

    def forward(self, input_ids: Tensor, num_latents: int) -> Tensor:
        pos = positions(None, *input_ids.shape)  # (B, N): 0, 1, 2, ... (no padding here)
        x = self.input_adapter.embed(input_ids, pos)
        hidden = self.perceiver_ar(x, input_ids.shape[1] - num_latents, rotary=self.input_adapter.rotary(pos))
        return self.output_adapter(self.norm(hidden))

    @torch.no_grad()
    def continue_greedily(self, prompt: Tensor, num_tokens: int) -> Tensor:
        """(B, P + 1) prompt -> (B, num_tokens) new ids. The first P positions stay the prefix and every new token
        adds a latent (up to ``max_latents``, within ``max_seq_len``): the layout of the training windows. The
        whole window is recomputed for every token (``CausalLanguageModel.generate`` keeps a KV cache instead)."""
        prefix_len = prompt.shape[1] - 1
        ids = prompt
        for _ in range(num_tokens):
            logits = self(ids, num_latents=ids.shape[1] - prefix_len)
            ids = torch.cat([ids, logits[:, -1:].argmax(dim=-1)], dim=1)
        return ids[:, prompt.shape[1]:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--tiny", action="store_true", help="a very small model (for tests)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    tokenizer = ByteTokenizer()
    encoded = [tokenizer.encode(s) for s in SENTENCES]
    length = min(len(ids) for ids in encoded)
    data = torch.tensor([ids[:length] for ids in encoded])  # (2, length): the sentences, cut to one length
    inputs, labels = data[:, :-1], data[:, 1:]
    num_latents = inputs.shape[1] // 2  # the second half of every sentence gets predictions

    channels, layers = (32, 1) if args.tiny else (128, 2)
    model = ByteLanguageModel(max_seq_len=inputs.shape[1], max_latents=num_latents, channels=channels, layers=layers)
    print(f"model: {sum(p.numel() for p in model.parameters()):,} parameters")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(1, args.steps + 1):
        logits = model(inputs, num_latents)  # (2, M, 262)
        loss = F.cross_entropy(logits.transpose(1, 2), labels[:, -num_latents:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % max(1, args.steps // 5) == 0:
            print(f"step {step}: loss {loss.item():.3f}")

    model.eval()
    prompt_len = inputs.shape[1] - num_latents + 1  # the prefix of the training windows + their first latent
    new = model.continue_greedily(data[:, :prompt_len], num_tokens=data.shape[1] - prompt_len)
    for row in range(len(data)):
        print("prompt:   ", tokenizer.decode(data[row, :prompt_len]))
        print("continued:", tokenizer.decode(new[row]))


if __name__ == "__main__":
    main()
