"""Task clf: image and text classifiers, starting from an mlm encoder, the image adapter, labelled data sets, and
model facts flowing from the data set into the model config."""

import numpy as np
import pytest
import torch

from perceiver import registry
from perceiver.adapters.image import ImageAdapter, ImageAdapterConfig
from perceiver.checkpoint import ModelLoadError, load_model, save_model
from perceiver.config_checks import ConfigError
from perceiver.tasks.clf import Classifier, ClassifierConfig, batch_metrics, init_encoder_from
from perceiver.tasks.mlm import MaskedLanguageModel, MaskedLanguageModelConfig
from perceiver.training.lightning_module import LitClassifier


def tiny(**overrides):
    values = dict(registry.get("model", "clf-tiny").load())
    values.update(overrides)
    return ClassifierConfig(**values)


def image_classifier(**overrides):
    return Classifier(tiny(adapter="image", image_shape=[8, 8, 1], num_classes=3, **overrides))


def test_tiny_image_classifier_overfits_a_few_images():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (6, 8, 8, 1), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    model = image_classifier(attention_dropout=0.0).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(150):
        out = batch_metrics(model, (labels, images))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
    model.eval()
    out = batch_metrics(model, (labels, images))
    assert out["accuracy"].item() == 1.0 and out["loss"].item() < 0.1 and out["count"].item() == 6


def test_image_adapter_normalises_and_appends_positions():
    adapter = ImageAdapter(ImageAdapterConfig(image_shape=[4, 6, 3], num_frequency_bands=2, mean=[0.5, 0.25, 0.0],
                                              std=[0.5, 0.25, 1.0]))
    images = torch.full((2, 4, 6, 3), 255, dtype=torch.uint8)
    split, pad = adapter(images)
    x = split.full()
    assert pad is None and x.shape == (2, 24, 3 + 2 * (2 * 2 + 1)) and adapter.num_input_channels == x.shape[2]
    assert split.shape == x.shape
    assert torch.allclose(x[0, 0, :3], torch.tensor([1.0, 3.0, 1.0]))
    assert torch.equal(x[0, :, 3:], x[1, :, 3:])
    assert torch.allclose(adapter(images.float() / 255)[0].full(), x)  # float input in [0, 1] is the same image


def test_encoder_gives_the_same_latents_and_gradients_for_split_and_full_input():
    from perceiver.core.encoder import PerceiverEncoder, PerceiverEncoderConfig, SplitInput

    torch.manual_seed(0)
    encoder = PerceiverEncoder(PerceiverEncoderConfig(num_input_channels=2 + 9, num_latents=4, num_latent_channels=16,
                                                      num_cross_attention_heads=2, num_cross_attention_layers=2,
                                                      num_self_attention_blocks=2, num_self_attention_heads=2,
                                                      num_self_attention_layers_per_block=1)).double()
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(0.3 * torch.randn_like(p))
    own = torch.randn(3, 7, 2, dtype=torch.double, requires_grad=True)  # the in-place products must keep its gradient
    split = SplitInput(own, torch.randn(7, 9, dtype=torch.double))
    out_split = encoder(split)
    out_split.pow(2).sum().backward()
    grads = {n: p.grad.clone() for n, p in encoder.named_parameters()}
    own_grad, own.grad = own.grad.clone(), None
    encoder.zero_grad()
    out_full = encoder(split.full())
    out_full.pow(2).sum().backward()
    assert torch.allclose(out_split, out_full, atol=1e-10)
    for name, p in encoder.named_parameters():
        assert torch.allclose(grads[name], p.grad, atol=1e-9), name
    assert torch.allclose(own_grad, own.grad, atol=1e-9)


def test_split_layer_norm_is_accurate_in_float32_when_channels_sit_far_from_zero():
    from perceiver.core.split import SplitInput, norm_and_project

    torch.manual_seed(0)
    own, shared = 100 + 0.1 * torch.randn(2, 5, 3), 100 + 0.1 * torch.randn(5, 6)
    norm, projection = torch.nn.LayerNorm(9), torch.nn.Linear(9, 4)
    (split,) = norm_and_project(norm, [projection], SplitInput(own, shared))
    x = SplitInput(own, shared).full().double()
    expected = projection.double()(norm.double()(x))
    # E[x^2] - E[x]^2 in float32 loses the variance (0.01 next to 1e4) and gives errors of order 1
    assert torch.allclose(split.double(), expected, atol=1e-3)


def test_wrong_image_shape_is_a_clear_error():
    model = image_classifier().eval()
    with pytest.raises(ValueError, match=r"expected images of shape \(batch, 8, 8, 1\).*got \(2, 8, 8, 3\)"):
        model(torch.zeros(2, 8, 8, 3, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="image_shape"):
        Classifier(tiny(adapter="image", num_classes=3))


def test_text_classifier_ignores_padding_and_predicts_probabilities():
    torch.manual_seed(0)
    model = Classifier(tiny(num_classes=4, class_names=["a", "b", "c", "d"])).eval()
    ids, pad = model.encode_texts(["short", "a longer text"])
    assert pad[0].sum() == len("a longer text") - len("short")
    logits = model(ids, pad)
    alone = model(*model.encode_texts(["short"]))
    assert torch.allclose(logits[0], alone[0], atol=1e-5)
    probs = model.predict_proba(["short", "a longer text"])
    assert probs.shape == (2, 4) and torch.allclose(probs.sum(-1), torch.ones(2))
    with pytest.raises(ValueError, match="empty"):
        model.predict_proba(["  "])
    assert model.config.labels() == ["a", "b", "c", "d"]


def test_config_checks():
    with pytest.raises(ConfigError, match="num_classes is not set"):
        ClassifierConfig()
    with pytest.raises(ConfigError, match="2 class_names for num_classes=3"):
        ClassifierConfig(num_classes=3, class_names=["x", "y"])
    with pytest.raises(ConfigError, match="freeze_encoder needs encoder_from"):
        ClassifierConfig(num_classes=2, freeze_encoder=True)
    assert ClassifierConfig(class_names=["x", "y"]).num_classes == 2


@pytest.fixture
def mlm_dir(tmp_path):
    torch.manual_seed(1)
    values = dict(registry.get("model", "mlm-tiny").load())
    model = MaskedLanguageModel(MaskedLanguageModelConfig(**values))
    return save_model(model, tmp_path / "mlm"), model


def test_encoder_from_an_mlm_model_copies_and_freezes_the_encoder(mlm_dir, tmp_path):
    path, mlm = mlm_dir
    facts = ClassifierConfig.model_facts({"encoder_from": str(path)})
    assert facts["num_latents"] == mlm.config.num_latents and facts["max_seq_len"] == 64
    config = ClassifierConfig(**{**facts, "num_classes": 2, "max_seq_len": 32, "encoder_from": str(path),
                                 "freeze_encoder": True})
    lit = LitClassifier(config)
    model = lit.model
    assert torch.equal(model.encoder.cross_attention_1.attention.k_proj.weight,
                       mlm.encoder.cross_attention_1.attention.k_proj.weight)
    assert torch.equal(model.input_adapter.position_embedding.weight,
                       mlm.input_adapter.position_embedding.weight[:32])
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.decoder.parameters())
    # frozen parameters are left out of the optimizer: its groups hold exactly the trainable ones
    import pytorch_lightning as pl

    lit.trainer = pl.Trainer(max_steps=10, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False)
    optimizer = lit.configure_optimizers()["optimizer"]
    in_groups = [id(p) for group in optimizer.param_groups for p in group["params"]]
    trainable = {id(p) for p in lit.parameters() if p.requires_grad}
    assert len(in_groups) == len(set(in_groups)) and set(in_groups) == trainable
    assert 0 < len(trainable) < len(list(lit.parameters()))
    assert not {id(p) for p in model.encoder.parameters()} & set(in_groups)


def test_encoder_from_errors(mlm_dir, tmp_path):
    path, _ = mlm_dir
    other = save_model(image_classifier(), tmp_path / "clf")
    with pytest.raises(ConfigError, match="is a 'clf' model; it must be a trained mlm model"):
        ClassifierConfig.model_facts({"encoder_from": str(other)})
    with pytest.raises(ModelLoadError, match="expected a 'mlm' model"):
        init_encoder_from(Classifier(tiny(num_classes=2)), other)
    with pytest.raises(ConfigError, match="needs a text classifier"):
        init_encoder_from(image_classifier(), path)
    with pytest.raises(ConfigError, match="does not fit"):
        init_encoder_from(Classifier(tiny(num_classes=2, num_latent_channels=64)), path)
    with pytest.raises(ModelLoadError, match="does not exist"):
        ClassifierConfig.model_facts({"encoder_from": str(tmp_path / "missing")})


def test_save_and_load_keep_labels_and_image_shape(tmp_path):
    model = image_classifier(class_names=["x", "y", "z"])
    loaded = load_model(save_model(model, tmp_path / "m"), task="clf")
    assert loaded.config.class_names == ["x", "y", "z"] and loaded.input_adapter.image_shape == (8, 8, 1)
    images = torch.randint(0, 256, (2, 8, 8, 1), dtype=torch.uint8)
    assert torch.allclose(loaded(images), model.eval()(images))


# ---------------------------------------------------------------------------------------------------------------
#  Data
# ---------------------------------------------------------------------------------------------------------------


def test_mnist_offline_has_4000_train_and_1000_val_real_digits():
    from perceiver.data.image import ImageDataConfig, MnistOfflineDataModule

    data = MnistOfflineDataModule(ImageDataConfig(batch_size=16))
    train_x, train_y, val_x, val_y = data.arrays()
    assert train_x.shape == (4000, 28, 28, 1) and val_x.shape == (1000, 28, 28, 1) and train_x.dtype == np.uint8
    assert sorted(np.unique(train_y)) == list(range(10))
    assert np.bincount(np.concatenate([train_y, val_y])).tolist() == [500] * 10
    assert 0.1 < (train_x > 0).mean() < 0.3  # digits: mostly black background
    labels, images = next(iter(data.val_dataloader()))
    assert images.shape == (16, 28, 28, 1) and labels.shape == (16,)
    assert MnistOfflineDataModule.model_facts() == {"num_classes": 10, "class_names": [str(i) for i in range(10)],
                                                    "image_shape": [28, 28, 1]}


def test_bbc_news_has_2225_articles_in_5_topics():
    from perceiver.data.textclf import BbcNewsDataModule, TextClassificationDataConfig

    data = BbcNewsDataModule(TextClassificationDataConfig(max_seq_len=128, batch_size=8))
    data.setup()
    assert len(data.train_set) + len(data.val_set) == 2225
    assert len(data.val_set) == pytest.approx(445, abs=5)
    labels, ids, pad = next(iter(data.train_dataloader()))
    assert ids.shape[0] == 8 and ids.shape[1] <= 128 and pad.dtype == torch.bool
    assert set(label for label, _ in data.val_set.items) == set(range(5))


def test_plan_takes_classes_and_image_shape_from_the_data_set():
    from perceiver.training.plan import plan_training

    plan = plan_training("clf", "mnist-offline", preset="clf-mnist")
    assert plan.adapter == "image" and plan.model_config.image_shape == [28, 28, 1]
    assert plan.model_config.num_classes == 10
    plan = plan_training("clf", "bbc-news", preset="clf-tiny", options={"model": {"max_seq_len": "48"}})
    assert plan.model_config.class_names[0] == "business" and plan.data_config.max_seq_len == 48
    plan = plan_training("clf", "bbc-news", preset="clf-tiny", options={"model": {"num_classes": "5"}})
    assert plan.model_config.num_classes == 5


# The hub is unreachable here: the online loaders get data sets built locally with the `datasets` library, in the
# layout the hub serves, so that everything after `load_dataset` runs as it does for users.


def _hub_stand_in(monkeypatch, expected_name, dataset_dict):
    datasets = pytest.importorskip("datasets")
    calls = []

    def load_dataset(name, split=None, **kwargs):
        assert name == expected_name
        calls.append(split)
        return dataset_dict[split] if split else dataset_dict

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_mnist_loader_converts_the_hub_layout_once_and_caches_it(monkeypatch, tmp_path):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    from perceiver.data.image import ImageDataConfig, MnistDataModule

    rng = np.random.default_rng(0)

    def split(n):
        pixels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
        rows = {"image": [Image.fromarray(p) for p in pixels], "label": [i % 10 for i in range(n)]}
        return datasets.Dataset.from_dict(rows, features=features), pixels

    (train, train_pixels), (test, test_pixels) = split(30), split(12)
    calls = _hub_stand_in(monkeypatch, "ylecun/mnist", datasets.DatasetDict(train=train, test=test))
    data = MnistDataModule(ImageDataConfig(batch_size=5, cache_dir=str(tmp_path)))
    train_x, train_y, val_x, val_y = data.arrays()
    assert train_x.shape == (30, 28, 28, 1) and val_x.shape == (12, 28, 28, 1)
    assert np.array_equal(train_x[..., 0], train_pixels) and np.array_equal(val_x[..., 0], test_pixels)
    assert train_y.tolist() == [i % 10 for i in range(30)]
    data.arrays()  # a second use reads the cache
    assert len(calls) == 1
    batches = list(data.val_dataloader())
    assert all(images.dtype == torch.uint8 for _, images in batches)
    assert torch.cat([labels for labels, _ in batches]).tolist() == [i % 10 for i in range(12)]  # each digit once


def test_imdb_loader_reads_both_splits_and_cleans_line_breaks(monkeypatch):
    datasets = pytest.importorskip("datasets")
    from perceiver.data.textclf import ImdbDataModule, TextClassificationDataConfig

    def split(texts):
        return datasets.Dataset.from_dict({"text": texts, "label": [i % 2 for i in range(len(texts))]})

    hub = datasets.DatasetDict(
        train=split(["bad film<br />really", "great", "dull", "fun"]), test=split(["meh", "loved it<br />yes"])
    )
    calls = _hub_stand_in(monkeypatch, "stanfordnlp/imdb", hub)
    data = ImdbDataModule(TextClassificationDataConfig(max_seq_len=16, batch_size=4))
    data.setup()
    assert sorted(calls) == ["test", "train"]
    assert len(data.train_set) == 4 and len(data.val_set) == 2
    assert bytes(t - 6 for t in data.train_set[0][1].tolist()) == b"bad film\nreally"
    assert [label for label, _ in data.val_set.items] == [0, 1]
    assert ImdbDataModule.model_facts()["class_names"] == ["neg", "pos"]


def test_online_loaders_without_the_hub_say_what_to_use_instead(monkeypatch, tmp_path):
    datasets = pytest.importorskip("datasets")
    from perceiver.data.corpus import DataError
    from perceiver.data.image import ImageDataConfig, MnistDataModule
    from perceiver.data.textclf import ImdbDataModule

    def unreachable(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(DataError, match="mnist-offline"):
        MnistDataModule(ImageDataConfig(cache_dir=str(tmp_path))).arrays()
    with pytest.raises(DataError, match="bbc-news"):
        ImdbDataModule().setup()


@pytest.mark.parametrize("world_size", [2, 3])
def test_classification_validation_is_split_exactly_between_ranks(world_size):
    from perceiver.data.distributed import EvenBatchSampler
    from perceiver.data.textclf import BbcNewsDataModule, TextClassificationDataConfig

    data = BbcNewsDataModule(TextClassificationDataConfig(max_seq_len=32, batch_size=16))
    data.setup()
    seen = []
    for rank in range(world_size):
        sampler = EvenBatchSampler(data.val_set, 16, num_replicas=world_size, rank=rank)
        seen.extend(i for batch in sampler for i in batch)
    assert sorted(seen) == list(range(len(data.val_set)))  # every article once: no repeats, none dropped
    assert isinstance(data.val_dataloader().sampler, EvenBatchSampler)


def test_training_reads_random_windows_of_long_texts_and_validation_their_start():
    from perceiver.data.textclf import LabelledTexts

    text = "".join(chr(ord("a") + i % 26) for i in range(40))
    decode = lambda ids: bytes(i - 6 for i in ids.tolist()).decode()  # noqa: E731
    training = LabelledTexts([(3, text), (1, "short")], max_seq_len=8, random_crop=True)
    windows = {decode(training[0][1]) for _ in range(60)}
    assert len(windows) > 10 and all(len(w) == 8 and w in text for w in windows)
    label, ids = training[1]
    assert label == 1 and decode(ids) == "short"  # shorter texts are whole
    validation = LabelledTexts([(3, text)], max_seq_len=8)
    assert {decode(validation[0][1]) for _ in range(5)} == {text[:8]}
