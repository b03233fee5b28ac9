"""Train a Perceiver AR language model with a plain PyTorch loop (no Trainer), then save its weights.

    python examples/train_pytorch_loop.py --data wikipedia-offline --preset clm-small --steps 200
"""

import argparse

import torch
import torch.nn.functional as F
from torch.optim import Adam

from perceiver import registry
from perceiver.checkpoint import save_model
from perceiver.tasks.clm import CausalLanguageModel, CausalLanguageModelConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="wikitext")
    parser.add_argument("--data-path", default=None)
    parser.add_argument("--preset", default="clm-30m")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--output-dir", default="runs/loop/model")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the prefix dropout")
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    model_config = CausalLanguageModelConfig(**registry.get("model", args.preset).load())
    data = registry.create("dataset", args.data, max_seq_len=model_config.max_seq_len, batch_size=args.batch_size,
                           data_path=args.data_path)
    data.prepare_data()
    data.setup()

    model = CausalLanguageModel(config=model_config)
    model.train()
    optim = Adam(model.parameters(), lr=args.lr)

    step = 0
    while step < args.steps:
        for labels_ids, input_ids, pad_mask in data.train_dataloader():
            # the last max_latents positions are the latents; everything before them is the prefix
            num_latents = min(model_config.max_latents, input_ids.shape[1])
            logits = model(input_ids, prefix_len=input_ids.shape[1] - num_latents, pad_mask=pad_mask)
            loss = F.cross_entropy(logits.permute(0, 2, 1), labels_ids[:, -num_latents:], ignore_index=-100)
            loss.backward()
            optim.step()
            optim.zero_grad()
            step += 1
            if step % 10 == 0 or step == args.steps:
                print(f"step {step} loss {loss.item():.4f}")
            if step == args.steps:
                break

    # config.json + model.safetensors; or plain weights: torch.save(model.state_dict(), "model.pt")
    save_model(model, args.output_dir)
    print(f"saved to {args.output_dir}")


if __name__ == "__main__":
    main()
