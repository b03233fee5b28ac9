"""Tests of perceiver-audio, run with the package installed (``pip install -e plugins/perceiver-audio``).

They follow the recipe of perceiver's docs/plugins.md: unit tests of the pieces, the hooks checked through
perceiver's own plugin loading (entry point group ``perceiver``), and the command run through ``perceiver.cli.main``.
"""

from __future__ import annotations

import wave

import numpy as np
import pytest
import torch
from perceiver_audio import mulaw, synth
from perceiver_audio.adapter import MuLawAdapter, MuLawAdapterConfig
from perceiver_audio.data import SynthAudioDataConfig, SynthAudioDataModule, WavDataConfig, WavDataModule
from perceiver_audio.wav import read_wav, resample, write_wav

from perceiver import plugins, registry
from perceiver.data.tokenizer import NUM_SPECIAL

TINY_MODEL = dict(max_seq_len=64, max_latents=16, num_channels=32, num_heads=2, num_self_attention_layers=1,
                  adapter="mulaw")


@pytest.fixture
def with_plugins(monkeypatch):
    """perceiver's registry with the installed plugins loaded through their entry points (fresh each test)."""
    monkeypatch.delenv("PERCEIVER_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("PERCEIVER_LOAD_PLUGINS", raising=False)
    plugins._reset_for_tests()
    yield registry
    plugins._reset_for_tests()


# -- mu-law, synthesis, WAV -------------------------------------------------------------------------------------


def test_mulaw_round_trip_is_fine_for_quiet_and_coarse_for_loud_samples():
    x = np.linspace(-1, 1, 10001)
    codes = mulaw.encode(x)
    assert codes.dtype == np.uint8 and codes.min() == 0 and codes.max() == 255
    assert np.all(np.diff(codes.astype(int)) >= 0)  # monotonic
    error = np.abs(mulaw.decode(codes) - x)
    assert error[np.abs(x) < 0.01].max() < 0.001 and error.max() < 0.04
    assert mulaw.encode(np.array([0.0]))[0] == mulaw.SILENCE and abs(mulaw.decode(mulaw.SILENCE)) < 1e-3
    assert np.array_equal(mulaw.encode(mulaw.decode(np.arange(256))), np.arange(256))


def test_synthesized_clips_are_deterministic_and_independent_of_the_corpus_size():
    a = synth.clip(7, 8000, 0.25, synth.KINDS, seed=3)
    assert np.array_equal(a, synth.clip(7, 8000, 0.25, synth.KINDS, seed=3))
    assert not np.array_equal(a, synth.clip(8, 8000, 0.25, synth.KINDS, seed=3))
    assert a.dtype == np.float32 and len(a) == 2000 and 0.3 <= np.abs(a).max() <= 0.9 + 1e-6
    for kind in synth.KINDS:
        assert np.isfinite(synth.clip(0, 8000, 0.1, kind=kind)).all()
    with pytest.raises(ValueError, match="unknown clip kind"):
        synth.parse_kinds("tone,noise")


def test_chirp_sweeps_its_frequency():
    rng = np.random.default_rng(0)
    up = synth.chirp(8000, 8000, rng)
    crossings = [int(np.sum(np.diff(np.sign(part)) != 0)) for part in np.split(up, 4)]
    assert crossings == sorted(crossings) or crossings == sorted(crossings, reverse=True)  # a monotonic sweep
    assert crossings[0] != crossings[-1]


def test_wav_round_trip_and_resampling(tmp_path):
    tone = synth.clip(0, 8000, 0.1, kind="tone")
    path = write_wav(tmp_path / "tone.wav", tone, 8000)
    read, rate = read_wav(path)
    assert rate == 8000 and np.abs(read - tone).max() < 1e-3
    assert len(resample(read, 8000, 16000)) == 1600
    stereo = tmp_path / "stereo8.wav"
    with wave.open(str(stereo), "wb") as f:
        f.setnchannels(2)
        f.setsampwidth(1)
        f.setframerate(4000)
        f.writeframes(bytes([128, 255] * 100))
    mono, rate = read_wav(stereo)
    assert rate == 4000 and mono.shape == (100,) and np.allclose(mono, 127 / 256)


# -- data ---------------------------------------------------------------------------------------------------------


def test_synth_data_module_batches_are_clm_batches_of_mulaw_tokens():
    dm = SynthAudioDataModule(SynthAudioDataConfig(max_seq_len=64, batch_size=4, num_clips=20, clip_seconds=0.1))
    labels, input_ids, pad_mask = next(iter(dm.train_dataloader()))
    assert input_ids.shape == labels.shape == pad_mask.shape and input_ids.shape[0] == 4
    real = input_ids[~pad_mask]
    assert real.min() >= NUM_SPECIAL and real.max() < NUM_SPECIAL + 256
    assert torch.equal(labels[:, :-1][~pad_mask[:, 1:]], input_ids[:, 1:][~pad_mask[:, 1:]])  # shifted by one
    val = next(iter(dm.val_dataloader()))
    assert val[1].shape[1] == 64


def test_validation_clips_are_held_out():
    cfg = SynthAudioDataConfig(num_clips=20, clip_seconds=0.05, val_fraction=0.25)
    dm = SynthAudioDataModule(cfg)
    train, val = dm.codes("train"), dm.codes("val")
    gap = int(0.05 * cfg.sample_rate)
    assert len(val) == 5 * 400 + 4 * gap and len(train) == 15 * 400 + 14 * gap


def test_wav_data_module_reads_a_directory(tmp_path):
    for i in range(4):
        write_wav(tmp_path / f"clip{i}.wav", synth.clip(i, 16000, 0.1), 16000)
    dm = WavDataModule(WavDataConfig(max_seq_len=32, batch_size=2, data_path=str(tmp_path), val_fraction=0.25))
    dm.setup()
    assert len(dm.codes("val")) == 800  # one file, resampled from 16 kHz to 8 kHz
    with pytest.raises(ValueError, match="needs --data-path"):
        WavDataModule(WavDataConfig()).setup()


# -- adapter ------------------------------------------------------------------------------------------------------


def test_adapter_shapes_amplitudes_and_special_tokens():
    adapter = MuLawAdapter(MuLawAdapterConfig(max_seq_len=32, num_channels=16, num_heads=2))
    ids = torch.randint(NUM_SPECIAL, 262, (2, 10))
    positions = torch.arange(10).expand(2, 10)
    assert adapter.embed(ids, positions).shape == (2, 10, 16)
    assert torch.allclose(adapter.amplitudes(ids), torch.from_numpy(mulaw.decode((ids - NUM_SPECIAL).numpy())))
    logits = adapter.logits(torch.randn(2, 3, 16))
    assert logits.shape == (2, 3, 262)
    assert logits.softmax(-1)[..., :NUM_SPECIAL].max() == 0  # special ids are never predicted
    cos, sin = adapter.rotary(positions)
    assert cos.shape == (2, 1, 10, adapter.num_rotary_channels)
    assert "head.weight" in adapter.state_dict() and "amplitude_table" not in adapter.state_dict()
    with pytest.raises(ValueError, match="vocab_size 262"):
        MuLawAdapterConfig(vocab_size=100)


# -- registration and the CLI ---------------------------------------------------------------------------------------


def test_the_plugin_registers_through_its_entry_point(with_plugins):
    reg = with_plugins
    names = [("adapter", "mulaw"), ("dataset", "audio-synth"), ("dataset", "wav"), ("model", "audio-clm-tiny")]
    for kind, name in names:
        assert reg.get(kind, name).package == "perceiver-audio"
    assert reg.get("adapter", "mulaw").metadata == {"modality": "audio", "input": "tokens"}
    info = {p.name: p for p in plugins.list_plugins()}["audio"]
    assert info.error is None and "register_commands" in info.hooks


def test_tiny_model_trains_on_synth_audio(with_plugins):
    from perceiver.tasks.clm import batch_metrics

    torch.manual_seed(0)
    model = with_plugins.create("task", "clm", **TINY_MODEL, cross_attention_dropout=0.0)
    dm = SynthAudioDataModule(SynthAudioDataConfig(max_seq_len=64, batch_size=8, num_clips=8, clip_seconds=0.2,
                                                   kinds="tone", random_train_truncation=0.0))
    batch = next(iter(dm.train_dataloader()))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = batch_metrics(model, batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 5.0 and losses[-1] < losses[0] - 1.0


def test_audio_synth_command_writes_a_wav(with_plugins, tmp_path, capsys):
    from perceiver.checkpoint import save_model
    from perceiver.cli import main

    model = with_plugins.create("task", "clm", **TINY_MODEL)
    save_model(model, tmp_path / "model")
    out = tmp_path / "out.wav"
    main(["audio-synth", "--model", str(tmp_path / "model"), "--output", str(out), "--prompt", "chirp",
          "--prompt-seconds", "0.01", "--seconds", "0.005", "--top-k", "8"])
    assert "wrote" in capsys.readouterr().err
    with wave.open(str(out)) as f:
        # the 80-sample prompt keeps its last max_seq_len (64) samples, then 40 generated ones follow
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes()) == (1, 2, 8000, 64 + 40)
    written = out.read_bytes()
    args = ["audio-synth", "--model", str(tmp_path / "model"), "--output", str(out), "--seconds", "0.001"]
    with pytest.raises(SystemExit):  # an existing file is not replaced without --force
        main(args)
    assert "exists; pass --force" in capsys.readouterr().err and out.read_bytes() == written
    main([*args, "--force"])
    assert out.read_bytes() != written and sorted(p.name for p in tmp_path.iterdir()) == ["model", "out.wav"]
