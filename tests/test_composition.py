"""Composition in Python: task models take adapter instances (no registration), check that they fit, and still load
weights saved before the adapters were one vocabulary (``adapter.*`` and ``input_adapter.adapter.*`` keys)."""

import pytest
import tiny_models
import torch
from torch import nn

from perceiver.adapters import ClassLogitsAdapter, ClassLogitsConfig, OutputAdapter, TokenInputAdapter
from perceiver.checkpoint import load_model, save_model
from perceiver.tasks.clf import Classifier, ClassifierConfig
from perceiver.tasks.clm import CausalLanguageModel, CausalLanguageModelConfig
from perceiver.tasks.mlm import MaskedLanguageModel, MaskedLanguageModelConfig


class HashedBytes(TokenInputAdapter):
    """An unregistered token input adapter: ids -> embeddings scaled by a learned gain, no positions."""

    def __init__(self, vocab_size: int, channels: int):
        super().__init__()
        self.vocab_size, self.num_input_channels = vocab_size, channels
        self.embedding = nn.Embedding(vocab_size, channels)
        self.gain = nn.Parameter(torch.ones(()))

    def embed(self, input_ids, positions):
        return self.embedding(input_ids) * self.gain

    def logits(self, hidden):
        return hidden @ self.embedding.weight.T


class FirstQueryMean(OutputAdapter):
    """An unregistered output adapter: the mean of the first query's channels, per example."""

    def forward(self, hidden):
        return hidden[:, 0].mean(dim=-1)


def build(kind, **adapters):
    values = tiny_models.preset({"clm": "clm-tiny", "mlm": "mlm-tiny", "clf": "clf-tiny"}[kind])
    if kind == "clm":
        config = CausalLanguageModelConfig(**values)
        return CausalLanguageModel(config, **adapters), config.num_channels
    if kind == "mlm":
        config = MaskedLanguageModelConfig(**values)
        return MaskedLanguageModel(config, **adapters), config.num_input_channels
    config = ClassifierConfig(**values, num_classes=3)
    return Classifier(config, **adapters), config.num_input_channels


def forward(model, ids):
    return model(ids, prefix_len=8) if isinstance(model, CausalLanguageModel) else model(ids)


@pytest.mark.parametrize("kind", ["clm", "mlm", "clf"])
def test_task_models_take_an_input_adapter_instance(kind):
    torch.manual_seed(0)
    _, channels = build(kind)
    adapter = HashedBytes(262, channels)
    model, _ = build(kind, input_adapter=adapter)
    assert model.input_adapter is adapter
    ids = torch.randint(6, 262, (2, 16))
    before = forward(model, ids)
    with torch.no_grad():
        adapter.gain.fill_(3.0)  # the model reads its input through this adapter
    assert not torch.allclose(forward(model, ids), before)


def test_an_output_adapter_instance_replaces_the_default():
    model, _ = build("clf", output_adapter=FirstQueryMean())
    assert forward(model, torch.randint(6, 262, (2, 16))).shape == (2,)


def test_the_default_token_output_is_tied_to_the_input_adapter_instance():
    torch.manual_seed(0)
    _, channels = build("clm")
    adapter = HashedBytes(262, channels)
    model, _ = build("clm", input_adapter=adapter)
    hidden = torch.randn(1, 3, channels)
    assert torch.equal(model.output_adapter(hidden), adapter.logits(hidden))
    assert not any(name.startswith("output_adapter.") for name in model.state_dict())  # saved once, on the input


@pytest.mark.parametrize("kind, make, message", [
    ("clm", lambda channels: HashedBytes(262, 7), "HashedBytes makes 7 channels, the model has {channels}"),
    ("mlm", lambda channels: HashedBytes(300, channels), "HashedBytes reads 300 tokens, the model's vocab_size is 262"),
    ("clm", lambda channels: ClassLogitsAdapter(ClassLogitsConfig(channels, 3)),
     "ClassLogitsAdapter is not a TokenInputAdapter (token ids in; embed, rotary and logits)"),
    ("clf", lambda channels: ClassLogitsAdapter(ClassLogitsConfig(channels, 3)),
     "ClassLogitsAdapter is not an InputAdapter"),
])
def test_an_adapter_that_does_not_fit_is_one_line(kind, make, message):
    _, channels = build(kind)
    with pytest.raises(ValueError) as error:
        build(kind, input_adapter=make(channels))
    assert str(error.value) == message.format(channels=channels)


LEGACY = {"clm": ("input_adapter.", "adapter."), "mlm": ("input_adapter.", "input_adapter.adapter."),
          "text-clf": ("input_adapter.", "input_adapter.adapter.")}


@pytest.mark.parametrize("kind", sorted(LEGACY))
def test_weights_saved_before_the_adapter_vocabulary_still_load(kind, tmp_path):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    model = tiny_models.MODELS[kind]().eval()
    args, _ = tiny_models.inputs(kind)
    new, old = LEGACY[kind]
    legacy = {(old + k[len(new):] if k.startswith(new) else k): v for k, v in model.state_dict().items()}
    assert legacy.keys() != model.state_dict().keys()

    fresh = tiny_models.MODELS[kind]().eval()
    fresh.load_state_dict(legacy)  # strict: every legacy key finds its parameter
    assert torch.equal(fresh(*args), model(*args))

    save_model(model, tmp_path / "export")  # an export written with the old keys loads too
    save_file({k: v.contiguous() for k, v in legacy.items()}, tmp_path / "export" / "model.safetensors")
    assert set(load_file(tmp_path / "export" / "model.safetensors")) == set(legacy)
    assert torch.equal(load_model(tmp_path / "export").eval()(*args), model(*args))
