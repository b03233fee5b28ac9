"""Generate text from a trained Perceiver AR model: from a Lightning checkpoint or an exported model directory.

    python examples/generate.py runs/quickstart/checkpoints/last.ckpt \
        --prompt "A man was reading a book on a sunny day until he sudden"
"""

import argparse

import torch

from perceiver.checkpoint import load_model
from perceiver.data.tokenizer import TextPreprocessor
from perceiver.training.lightning_module import LitCausalLanguageModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="Lightning .ckpt file or exported model directory")
    parser.add_argument("--prompt", default="A man was reading a book on a sunny day until he sudden")
    parser.add_argument("--num-tokens", type=int, default=256)
    parser.add_argument("--num-latents", type=int, default=7)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.model.endswith(".ckpt"):
        # Load the model from a checkpoint written by the Lightning Trainer (weights only: nothing is unpickled)
        model = LitCausalLanguageModel.load_from_checkpoint(args.model, weights_only=True).model.eval()
    else:
        # An exported directory (config.json + model.safetensors)
        model = load_model(args.model)

    # Left padding, as Perceiver AR requires
    preproc = TextPreprocessor(max_seq_len=model.config.max_seq_len, padding_side="left")
    prompt, pad_mask = preproc.preprocess_batch([args.prompt])

    num_latents = min(args.num_latents, model.config.max_latents)
    generated = model.generate(prompt=prompt, pad_mask=pad_mask, num_tokens=args.num_tokens, num_latents=num_latents,
                               top_k=args.top_k, generator=torch.Generator().manual_seed(args.seed))
    print(args.prompt + preproc.tokenizer.decode(generated[0]))


if __name__ == "__main__":
    main()
