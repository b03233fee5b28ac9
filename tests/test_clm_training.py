"""Training behaviour of the clm task: memorisation, save/load round trips, loading errors."""

import json

import pytest
import torch
import torch.nn.functional as F

from perceiver.checkpoint import ModelLoadError, load_model, save_model
from perceiver.data.corpus import collate_windows
from perceiver.data.tokenizer import ByteTokenizer
from perceiver.tasks.clm import CausalLanguageModel, CausalLanguageModelConfig
from perceiver.training.lightning_module import LitCausalLanguageModel

TEXT = "Perceiver AR reads a long prefix and predicts its latents. "


def tiny_config(**overrides):
    values = dict(max_seq_len=64, max_latents=16, num_channels=64, num_heads=4, num_self_attention_layers=2,
                  cross_attention_dropout=0.0)
    values.update(overrides)
    return CausalLanguageModelConfig(**values)


def test_tiny_model_memorizes_a_short_text():
    """Trained on random (and randomly truncated) windows of a text, a tiny model reproduces it from a prompt."""
    torch.manual_seed(0)
    config = tiny_config()
    model = CausalLanguageModel(config).train()
    ids = torch.tensor(ByteTokenizer().encode(TEXT * 4))
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(250):
        windows = []
        for _ in range(8):
            length = int(torch.randint(17, 66, (1,), generator=generator))
            start = int(torch.randint(0, len(ids) - length, (1,), generator=generator))
            windows.append(ids[start : start + length])
        labels, input_ids, pad_mask = collate_windows(windows)
        num_latents = min(16, input_ids.shape[1])
        logits = model(input_ids, prefix_len=input_ids.shape[1] - num_latents, pad_mask=pad_mask)
        loss = F.cross_entropy(logits.transpose(1, 2), labels[:, -num_latents:], ignore_index=-100)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-20:]) / 20 < 0.1
    model.eval()
    continuation = model.generate(ids[None, :20], num_tokens=40, num_latents=4, temperature=0)
    assert torch.equal(continuation[0], ids[20:60])  # latents grow past max_latents, then the prefix grows


def test_save_load_round_trip_gives_identical_logits(tmp_path):
    torch.manual_seed(0)
    model = CausalLanguageModel(tiny_config(adapter_options={"rotary_fraction": 0.25})).eval()
    save_model(model, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    x = torch.randint(6, 262, (2, 64))
    assert torch.equal(model(x, prefix_len=48), loaded(x, prefix_len=48))
    assert loaded.config == model.config
    assert json.loads((tmp_path / "model" / "config.json").read_text())["task"] == "clm"


def test_lightning_checkpoint_loads_with_weights_only(tmp_path):
    import pytorch_lightning as pl

    lit = LitCausalLanguageModel(tiny_config())
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.strategy.connect(lit)
    path = tmp_path / "x.ckpt"
    trainer.save_checkpoint(path, weights_only=False)
    torch.load(path, weights_only=True)  # no pickled objects
    loaded = load_model(path)
    x = torch.randint(6, 262, (1, 64))
    assert torch.equal(loaded(x, prefix_len=48), lit.model.eval()(x, prefix_len=48))
    # and through Lightning's own API, as in the getting-started guide
    model = LitCausalLanguageModel.load_from_checkpoint(path, weights_only=True).model.eval()
    assert torch.equal(model(x, prefix_len=48), loaded(x, prefix_len=48))


def test_loading_reports_missing_corrupt_and_mismatched_models(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nothing")
    save_model(CausalLanguageModel(tiny_config()), tmp_path / "model")

    (tmp_path / "model" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="corrupt"):
        load_model(tmp_path / "model")

    save_model(CausalLanguageModel(tiny_config(num_channels=32)), tmp_path / "other")
    meta = json.loads((tmp_path / "other" / "config.json").read_text())
    meta["config"]["num_channels"] = 64
    (tmp_path / "other" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="shape mismatch"):
        load_model(tmp_path / "other")

    meta["task"] = "no-such-task"
    (tmp_path / "other" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="unknown task"):
        load_model(tmp_path / "other")

    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="cannot read checkpoint"):
        load_model(tmp_path / "bad.ckpt")


def test_checkpoint_write_that_fails_midway_leaves_the_previous_checkpoint(tmp_path):
    from perceiver.training.checkpoint_io import AtomicCheckpointIO

    class Unsavable:
        def __reduce__(self):
            raise RuntimeError("killed mid-write")

    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)
    with pytest.raises(RuntimeError, match="mid-write"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "bad": Unsavable()}, path)
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
