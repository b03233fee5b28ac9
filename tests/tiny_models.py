"""Tiny models of every kind and a batch for each, shared by the tests that run all model kinds."""

import torch
import torch.nn.functional as F

from perceiver import registry
from perceiver.tasks.clf import Classifier, ClassifierConfig
from perceiver.tasks.clm import CausalLanguageModel, CausalLanguageModelConfig
from perceiver.tasks.mlm import MaskedLanguageModel, MaskedLanguageModelConfig


def preset(name, **overrides):
    values = dict(registry.get("model", name).load())
    values.update(overrides)
    return values


def clm():
    return CausalLanguageModel(CausalLanguageModelConfig(**preset("clm-tiny", cross_attention_dropout=0.0)))


def mlm():
    return MaskedLanguageModel(MaskedLanguageModelConfig(**preset("mlm-tiny")))


def text_clf():
    return Classifier(ClassifierConfig(**preset("clf-tiny", adapter="text-bytes", num_classes=3)))


def image_clf():
    return Classifier(ClassifierConfig(**preset("clf-tiny", adapter="image", image_shape=[8, 8, 1], num_classes=3)))


MODELS = {"clm": clm, "mlm": mlm, "text-clf": text_clf, "image-clf": image_clf}


def inputs(kind):
    """``(args, loss_of)``: positional arguments of the model's forward for a batch of 2, and
    ``loss_of(output, rows=slice(None))``, the mean loss of those rows of the batch given their output."""
    torch.manual_seed(1)
    if kind in ("clm", "mlm"):
        ids = torch.randint(6, 262, (2, 24))
        if kind == "clm":
            labels = ids[:, 8:]
            return (ids, 8), lambda out, rows=slice(None): F.cross_entropy(out.flatten(0, 1), labels[rows].flatten())
        labels = torch.full_like(ids, -100)
        labels[:, ::5] = ids[:, ::5]  # a few masked positions: the row-sparse backward would apply
        return (ids,), lambda out, rows=slice(None): F.cross_entropy(out.flatten(0, 1), labels[rows].flatten())
    labels = torch.tensor([0, 2])
    x = torch.randint(6, 262, (2, 24)) if kind == "text-clf" else torch.randint(0, 256, (2, 8, 8, 1), dtype=torch.uint8)
    return (x,), lambda out, rows=slice(None): F.cross_entropy(out, labels[rows])
