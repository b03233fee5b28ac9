"""Write the krasserm test fixtures: tiny random models built with krasserm's perceiver-io 0.11 classes.

Run it in a virtualenv with krasserm's package (its import name is also ``perceiver``, so not in this project's
``.venv``), from a directory that does not hold this project's ``perceiver`` package::

    bash /path/to/setup_venvs.sh krasserm        # perceiver-io 0.11.0, transformers 4.28, torch (CPU)
    ~/.cache/perceiver-bench-anchors/venv-krasserm/bin/pip install safetensors   # for model.safetensors
    cd /tmp && ~/.cache/perceiver-bench-anchors/venv-krasserm/bin/python \
        /path/to/repo/scripts/krasserm_fixtures.py /path/to/repo/tests/fixtures/krasserm

For each model kind it writes ``<dir>/<name>/`` with what krasserm's ``save_pretrained`` writes (``config.json`` and
``model.safetensors``, or ``pytorch_model.bin`` for ``txt-clf``) and ``<dir>/<name>.expected.pt``: the inputs fed
to krasserm's model and the logits it returned (and, for the causal LMs, 32 greedily generated tokens). The weights
are perturbed after krasserm's initialisation (normal 0.02, zero biases, unit LayerNorms), whose logits are almost
uniform and would hide mapping errors.

Models (krasserm's non-default architecture choices are used where they exist):

* ``clm``: Perceiver AR (``perceiver-ar-causal-language-model``), absolute position embedding + rotary on half of
  each head, rotary in the first 2 of 3 self-attention layers, ``output_norm``, output bias. krasserm's Perceiver AR
  has no q/k/v or MLP biases and no self-attention output bias (fixed in its code).
* ``clm-rotary``: no absolute position embedding (rotary on all channels of each head), rotary in every layer
  (``-1``), no output norm, no output bias.
* ``mlm``: Perceiver IO masked LM (``perceiver-io-masked-language-model``), two cross-attention layers and two
  self-attention blocks with their own weights, self-attention qk channels != latent channels, a decoder with query
  residual and widening factor 2.
* ``txt-clf``: text classifier (``perceiver-io-text-classifier``), output query channels != latent channels, no
  decoder query residual; saved as ``pytorch_model.bin``.
* ``img-clf``: image classifier (``perceiver-io-image-classifier``) on 6x5 grey images, with the MNIST image
  processor krasserm publishes (``preprocessor_config.json``: mean 0.5, std 0.5).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

SEED = 20251202


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Replace every parameter by a random tensor of about the size a trained model's has: matrices (and the
    embeddings, latents and queries) normal with std 1/sqrt(columns), vectors normal(0, 0.2), LayerNorm weights
    normal(1, 0.2)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(noise / param.shape[-1] ** 0.5 if param.dim() > 1 else 0.2 * noise)
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.add_(1.0)


def left_pad(rows, length, generator):
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, n in enumerate(rows):
        ids[i, length - n:] = torch.randint(6, 262, (n,), generator=generator)
        mask[i, length - n:] = 1
    return ids, mask


def right_pad(rows, length, generator):
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, n in enumerate(rows):
        ids[i, :n] = torch.randint(3, 262, (n,), generator=generator)  # includes [MASK] (3), [CLS] (4), [SEP] (5)
        mask[i, :n] = 1
    return ids, mask


def causal_lm(out: Path, name: str, seed: int, **options) -> None:
    from perceiver.model.text.clm import (
        CausalLanguageModelConfig,
        PerceiverCausalLanguageModel,
        PerceiverCausalLanguageModelConfig,
    )

    backend = CausalLanguageModelConfig(
        vocab_size=262, max_seq_len=64, max_latents=40, num_channels=32, num_heads=4, num_self_attention_layers=3,
        self_attention_widening_factor=2, cross_attention_widening_factor=3, cross_attention_dropout=0.5,
        **options,
    )
    config = PerceiverCausalLanguageModelConfig(backend)
    config.is_decoder = True
    model = PerceiverCausalLanguageModel(config).eval()
    randomise(model, seed)
    model.save_pretrained(out / name, safe_serialization=True)

    generator = torch.Generator().manual_seed(seed + 1)
    # left padding that stays in the prefix: krasserm's self-attention ignores the pad mask, so padded latents
    # would differ (its generate() never has any: the first latent is the prompt's last token)
    input_ids, attention_mask = left_pad([24, 20, 13], 24, generator)
    prefix_len = 16
    with torch.no_grad():
        logits = model(input_ids, prefix_len=prefix_len, attention_mask=attention_mask).logits
        prompt, prompt_mask = left_pad([12, 9], 12, generator)
        generated = model.generate(
            input_ids=prompt, attention_mask=prompt_mask, max_new_tokens=32, num_latents=1, do_sample=False,
            pad_token_id=0,
        )[:, prompt.shape[1]:]
    torch.save(
        dict(input_ids=input_ids, pad_mask=attention_mask == 0, prefix_len=prefix_len, logits=logits,
             prompt=prompt, prompt_pad_mask=prompt_mask == 0, generated=generated, num_latents=1),
        out / f"{name}.expected.pt",
    )


def masked_lm(out: Path, seed: int) -> None:
    from perceiver.model.text.mlm import (
        MaskedLanguageModelConfig,
        PerceiverMaskedLanguageModel,
        PerceiverMaskedLanguageModelConfig,
        TextDecoderConfig,
        TextEncoderConfig,
    )

    encoder = TextEncoderConfig(
        vocab_size=262, max_seq_len=48, num_input_channels=32, num_cross_attention_heads=4,
        num_cross_attention_layers=2, first_cross_attention_layer_shared=False, cross_attention_widening_factor=2,
        num_self_attention_heads=4, num_self_attention_qk_channels=16, num_self_attention_layers_per_block=2,
        num_self_attention_blocks=2, first_self_attention_block_shared=False, self_attention_widening_factor=2,
        dropout=0.1,
    )
    decoder = TextDecoderConfig(
        vocab_size=262, max_seq_len=48, num_cross_attention_heads=4, cross_attention_widening_factor=2,
        cross_attention_residual=True, dropout=0.1,
    )
    config = PerceiverMaskedLanguageModelConfig(
        MaskedLanguageModelConfig(encoder, decoder, num_latents=8, num_latent_channels=24)
    )
    model = PerceiverMaskedLanguageModel(config).eval()
    randomise(model, seed)
    model.save_pretrained(out / "mlm", safe_serialization=True)
    generator = torch.Generator().manual_seed(seed + 1)
    input_ids, attention_mask = right_pad([30, 22, 9], 30, generator)
    with torch.no_grad():
        logits = model(input_ids, attention_mask=attention_mask).logits
    torch.save(dict(input_ids=input_ids, pad_mask=attention_mask == 0, logits=logits), out / "mlm.expected.pt")


def text_classifier(out: Path, seed: int) -> None:
    from perceiver.model.core import ClassificationDecoderConfig
    from perceiver.model.text.classifier import (
        PerceiverTextClassifier,
        PerceiverTextClassifierConfig,
        TextClassifierConfig,
        TextEncoderConfig,
    )

    encoder = TextEncoderConfig(
        vocab_size=262, max_seq_len=40, num_input_channels=16, num_cross_attention_heads=2,
        num_cross_attention_v_channels=16, num_self_attention_heads=2, num_self_attention_layers_per_block=2,
        cross_attention_widening_factor=2, self_attention_widening_factor=2,
    )
    decoder = ClassificationDecoderConfig(
        num_output_queries=1, num_output_query_channels=20, num_classes=3, num_cross_attention_heads=2,
        cross_attention_residual=False,
    )
    config = PerceiverTextClassifierConfig(
        TextClassifierConfig(encoder, decoder, num_latents=6, num_latent_channels=24),
        id2label={0: "negative", 1: "neutral", 2: "positive"},
        label2id={"negative": 0, "neutral": 1, "positive": 2},
    )
    model = PerceiverTextClassifier(config).eval()
    randomise(model, seed)
    model.save_pretrained(out / "txt-clf", safe_serialization=False)  # pytorch_model.bin
    generator = torch.Generator().manual_seed(seed + 1)
    input_ids, attention_mask = right_pad([33, 17, 5, 33], 33, generator)
    with torch.no_grad():
        logits = model(input_ids, attention_mask=attention_mask).logits
    torch.save(dict(input_ids=input_ids, pad_mask=attention_mask == 0, logits=logits), out / "txt-clf.expected.pt")


def image_classifier(out: Path, seed: int) -> None:
    from perceiver.model.core import ClassificationDecoderConfig
    from perceiver.model.vision.image_classifier import (
        ImageClassifierConfig,
        ImageEncoderConfig,
        PerceiverImageClassifier,
        PerceiverImageClassifierConfig,
        PerceiverImageClassifierInputProcessor,
    )
    from PIL import Image

    encoder = ImageEncoderConfig(
        image_shape=(6, 5, 1), num_frequency_bands=3, num_cross_attention_heads=3, num_self_attention_heads=4,
        num_self_attention_layers_per_block=2, cross_attention_widening_factor=2, self_attention_widening_factor=2,
    )
    decoder = ClassificationDecoderConfig(
        num_output_queries=1, num_output_query_channels=16, num_classes=10, num_cross_attention_heads=2,
    )
    config = PerceiverImageClassifierConfig(
        ImageClassifierConfig(encoder, decoder, num_latents=6, num_latent_channels=24),
        id2label={i: str(i) for i in range(10)}, label2id={str(i): i for i in range(10)},
    )
    model = PerceiverImageClassifier(config).eval()
    randomise(model, seed)
    model.save_pretrained(out / "img-clf", safe_serialization=True)
    # the image processor of krasserm/perceiver-io-img-clf-mnist (see convert_mnist_classifier_checkpoint)
    processor = PerceiverImageClassifierInputProcessor(
        single_channel=True, do_center_crop=False, do_resize=False, image_mean=0.5, image_std=0.5
    )
    processor.save_pretrained(out / "img-clf")
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(3, 6, 5), dtype=np.uint8)  # (B, H, W) grey
    pixel_values = processor([Image.fromarray(image) for image in images], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model(pixel_values=pixel_values).logits
    torch.save(
        dict(images=torch.from_numpy(images)[..., None], pixel_values=pixel_values, logits=logits),
        out / "img-clf.expected.pt",
    )


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    causal_lm(out, "clm", SEED, num_self_attention_rotary_layers=2, output_norm=True, output_bias=True,
              abs_pos_emb=True)
    causal_lm(out, "clm-rotary", SEED + 10, num_self_attention_rotary_layers=-1, output_norm=False,
              output_bias=False, abs_pos_emb=False)
    masked_lm(out, SEED + 20)
    text_classifier(out, SEED + 30)
    image_classifier(out, SEED + 40)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUTPUT_DIR")
    main(Path(sys.argv[1]))
