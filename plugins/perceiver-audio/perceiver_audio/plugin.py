"""The entry point of perceiver-audio (``[project.entry-points.perceiver] audio = "perceiver_audio.plugin"``).

Components are registered as ``"module:attribute"`` strings: listing them imports neither torch nor this
package's model code.
"""

from perceiver import hookimpl

AUDIO = dict(modality="audio", input="tokens")


@hookimpl
def register_adapters(register):
    register(
        "mulaw",
        "perceiver_audio.adapter:MuLawAdapter",
        config="perceiver_audio.adapter:MuLawAdapterConfig",
        description="8-bit mu-law waveform samples: code embedding + amplitude features + sinusoidal sample "
        "positions, rotary, untied output head",
        **AUDIO,
    )


@hookimpl
def register_datasets(register):
    register(
        "audio-synth",
        "perceiver_audio.data:SynthAudioDataModule",
        config="perceiver_audio.data:SynthAudioDataConfig",
        description="Synthesized tones, chords and chirps at 8 kHz (offline, deterministic; "
        "every 10th clip is validation)",
        adapter="mulaw",
        batch="windows",
        **AUDIO,
    )
    register(
        "wav",
        "perceiver_audio.data:WavDataModule",
        config="perceiver_audio.data:WavDataConfig",
        description="Your own recordings: --data-path FILE_OR_DIR (.wav), mono, resampled to sample_rate",
        adapter="mulaw",
        batch="windows",
        **AUDIO,
    )


@hookimpl
def register_models(register):
    register(
        "audio-clm-tiny",
        dict(max_seq_len=128, max_latents=32, num_channels=32, num_heads=2, num_self_attention_layers=1,
             cross_attention_dropout=0.25, adapter="mulaw"),
        task="clm",
        description="A 44k-parameter mu-law audio Perceiver AR for tests and smoke runs",
    )
    register(
        "audio-clm-small",
        dict(max_seq_len=2048, max_latents=256, num_channels=256, num_heads=4, num_self_attention_layers=4,
             cross_attention_dropout=0.5, adapter="mulaw"),
        task="clm",
        description="4.1M mu-law audio Perceiver AR: 256 ms of context at 8 kHz",
    )


@hookimpl
def register_commands(app):
    from perceiver_audio.command import audio_synth

    app.command("audio-synth", rich_help_panel="Audio (perceiver-audio)")(audio_synth)
