"""Train a Perceiver AR language model with the Lightning Trainer from Python.

The defaults are the getting-started model: 30.6M parameters, 4096 bytes of context, 512 latents, WikiText-103
(downloaded on first use; needs a GPU to train in reasonable time). Smaller runs:

    python examples/train_lightning.py --data wikipedia-offline --preset clm-small --max-steps 500 --accelerator cpu
"""

import argparse

import pytorch_lightning as pl
from torch.optim import Adam

from perceiver import registry
from perceiver.tasks.clm import CausalLanguageModelConfig
from perceiver.training.lightning_module import LitCausalLanguageModel
from perceiver.training.schedules import CosineWithWarmupLR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="wikitext", help="registered data set")
    parser.add_argument("--data-path", default=None, help="file or directory for --data text")
    parser.add_argument("--preset", default="clm-30m", help="model preset")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-steps", type=int, default=5000)
    parser.add_argument("--warmup-steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--accumulate-grad-batches", type=int, default=4)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--devices", default="auto")
    parser.add_argument("--output-dir", default="runs/lightning")
    args = parser.parse_args()

    def configure_optimizers(self):
        optimizer = Adam(self.parameters(), lr=args.lr)
        scheduler = CosineWithWarmupLR(optimizer, training_steps=args.max_steps, warmup_steps=args.warmup_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    # Replace the built-in optimizer setup (AdamW + cosine, see OptimizerConfig) with our own.
    LitCausalLanguageModel.configure_optimizers = configure_optimizers

    config = CausalLanguageModelConfig(**registry.get("model", args.preset).load())
    data = registry.create("dataset", args.data, max_seq_len=config.max_seq_len, batch_size=args.batch_size,
                           data_path=args.data_path)
    lit_model = LitCausalLanguageModel.create(config)
    trainer = pl.Trainer(
        accelerator=args.accelerator,
        devices=args.devices,
        max_steps=args.max_steps,
        accumulate_grad_batches=args.accumulate_grad_batches,
        default_root_dir=args.output_dir,
        enable_progress_bar=False,
    )
    trainer.fit(lit_model, datamodule=data)  # prepares (downloads, caches) the data set on first use
    trainer.save_checkpoint(f"{args.output_dir}/last.ckpt")
    print(f"trained model: lit_model.model ({sum(p.numel() for p in lit_model.model.parameters()):,} parameters)")


if __name__ == "__main__":
    main()
