"""transformers' Auto classes and pipelines on this project's exports and krasserm's directories
(:mod:`perceiver.hf.auto`): the same logits as ``load_model``, pipelines that answer what the model computes, and
text generation that decodes as ``perceiver generate`` does."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tiny_models
import torch
from cli_runner import cli
from PIL import Image
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    StoppingCriteria,
    StoppingCriteriaList,
    pipeline,
)

from perceiver.checkpoint import load_model, save_model
from perceiver.data.tokenizer import ByteTokenizer
from perceiver.hf.auto import save_pipeline_files  # importing it registers the Auto classes
from perceiver.tasks.mlm import encode_masked

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "krasserm"
AUTO = {"clm": AutoModelForCausalLM, "mlm": AutoModelForMaskedLM, "text-clf": AutoModelForSequenceClassification,
        "image-clf": AutoModelForImageClassification}
KRASSERM = {"clm": "clm", "clm-rotary": "clm", "mlm": "mlm", "txt-clf": "text-clf", "img-clf": "image-clf"}
PRINTABLE = range(6 + 32, 6 + 127)
"""Ids of the printable ASCII bytes."""


def spread(model, seed=0):
    """Weights far from their initialisation, so that the logits differ clearly (a new model's are near uniform)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """An export of each kind with its pipeline files; the clm writes printable ASCII only (its output bias is
    -100 elsewhere), so that text compares exactly."""
    root = tmp_path_factory.mktemp("exports")
    paths = {}
    for kind, build in tiny_models.MODELS.items():
        model = spread(build())
        if kind == "clm":
            with torch.no_grad():
                keep = torch.zeros_like(model.input_adapter.output_bias, dtype=torch.bool)
                keep[list(PRINTABLE)] = True
                model.input_adapter.output_bias.masked_fill_(~keep, -100.0)
        paths[kind] = save_model(model, root / kind, pipeline_files=True)
    return paths


def krasserm_copy(name, tmp_path):
    target = tmp_path / name
    shutil.copytree(FIXTURES / name, target)
    return target


def text_ids(texts, special=False):
    """Right-padded byte ids (B, N) and attention mask (B, N) of ``texts``, optionally in [CLS] ... [SEP]."""
    encoded = [([4] if special else []) + ByteTokenizer().encode(text) + ([5] if special else []) for text in texts]
    width = max(len(ids) for ids in encoded)
    ids = torch.zeros(len(texts), width, dtype=torch.long)
    mask = torch.zeros(len(texts), width, dtype=torch.long)
    for row, row_ids in enumerate(encoded):
        ids[row, : len(row_ids)] = torch.tensor(row_ids)
        mask[row, : len(row_ids)] = 1
    return ids, mask


# -------------------------------------------------------------------------------------------------------------
#  Auto classes: the same logits as load_model
# -------------------------------------------------------------------------------------------------------------


def project_logits(model, kind, ids=None, mask=None, images=None):
    with torch.no_grad():
        if kind == "clm":
            num_latents = min(ids.shape[1], model.config.max_latents)
            return model(ids, ids.shape[1] - num_latents, mask == 0)
        if kind == "image-clf":
            return model(images)
        return model(ids, mask == 0)


def wrapper_logits(wrapper, kind, ids=None, mask=None, images=None):
    with torch.no_grad():
        if kind == "image-clf":
            return wrapper(pixel_values=images.permute(0, 3, 1, 2).float() / 255).logits
        return wrapper(input_ids=ids, attention_mask=mask).logits


def check_same_logits(path, kind):
    model = load_model(path)
    wrapper = AUTO[kind].from_pretrained(str(path))
    assert type(AutoConfig.from_pretrained(str(path))) is type(wrapper.config)
    assert not wrapper.training and wrapper.model.task == model.task
    torch.manual_seed(3)
    if kind == "image-clf":
        images = torch.randint(0, 256, (2, *model.config.image_shape), dtype=torch.uint8)
        expected, got = project_logits(model, kind, images=images), wrapper_logits(wrapper, kind, images=images)
    else:
        ids, mask = text_ids(["hello world", "abc"])
        expected, got = project_logits(model, kind, ids, mask), wrapper_logits(wrapper, kind, ids, mask)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", list(AUTO))
def test_auto_classes_load_exports_with_load_models_logits(exports, kind):
    check_same_logits(exports[kind], kind)


@pytest.mark.parametrize("name", list(KRASSERM))
def test_auto_classes_load_krasserm_directories_with_load_models_logits(name):
    check_same_logits(FIXTURES / name, KRASSERM[name])


def test_auto_config_dispatches_on_model_type(exports):
    assert json.loads((exports["clm"] / "config.json").read_text())["model_type"] == "perceiver-clm"
    config = AutoConfig.from_pretrained(str(exports["text-clf"]))
    assert config.model_type == "perceiver-clf" and config.task == "clf"
    assert config.id2label == {0: "0", 1: "1", 2: "2"}
    krasserm = AutoConfig.from_pretrained(str(FIXTURES / "txt-clf"))
    assert krasserm.id2label == {0: "negative", 1: "neutral", 2: "positive"}


def test_wrong_auto_class_is_refused(exports):
    with pytest.raises(ValueError, match="Unrecognized configuration class"):
        AutoModelForCausalLM.from_pretrained(str(exports["mlm"]))
    with pytest.raises(ValueError, match="reads images"):
        AutoModelForSequenceClassification.from_pretrained(str(exports["image-clf"]))


def test_the_saved_byte_tokenizer_adds_no_cls_or_sep(exports, tmp_path):
    """The project's byte models read texts without [CLS] ... [SEP] (PerceiverTokenizer adds them); a masked LM
    trained with them (special_tokens) keeps PerceiverTokenizer."""
    from perceiver.tokenizers import load_tokenizer

    for kind in ("clm", "mlm", "text-clf"):
        tokenizer = AutoTokenizer.from_pretrained(str(exports[kind]))
        assert type(tokenizer).__name__ == "PerceiverBytesTokenizer"
        assert tokenizer("héllo")["input_ids"] == ByteTokenizer().encode("héllo")
        assert tokenizer.decode(tokenizer("héllo")["input_ids"]) == "héllo"
        assert isinstance(load_tokenizer(exports[kind]), ByteTokenizer)  # the project reads it as bytes
        assert tokenizer.padding_side == ("left" if kind == "clm" else "right")  # as the project pads batches
    assert type(AutoTokenizer.from_pretrained(str(FIXTURES / "clm"))).__name__ == "PerceiverBytesTokenizer"
    model = tiny_models.mlm()
    model.config.special_tokens = True
    save_model(model, tmp_path / "special", pipeline_files=True)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "special"))
    assert tokenizer("ab")["input_ids"] == [4, 103, 104, 5]


def test_from_pretrained_takes_dtype_device_and_what_load_model_reads(exports, tmp_path):
    from perceiver.hf.models import PerceiverForMaskedLM

    wrapper = AutoModelForMaskedLM.from_pretrained(str(exports["mlm"]), dtype=torch.bfloat16, device_map="cpu")
    assert {p.dtype for p in wrapper.parameters()} == {torch.bfloat16}
    with pytest.raises(ValueError, match="one device"):
        AutoModelForMaskedLM.from_pretrained(str(exports["mlm"]), device_map={"": "cpu"})
    shutil.copytree(exports["mlm"], tmp_path / "run" / "model")  # a training run's layout: RUN/model
    wrapper = PerceiverForMaskedLM.from_pretrained(str(tmp_path / "run"))
    assert wrapper.config.model_type == "perceiver-mlm" and not wrapper.training


def test_save_pretrained_writes_an_export(exports, tmp_path):
    wrapper = AutoModelForMaskedLM.from_pretrained(str(exports["mlm"]))
    wrapper.save_pretrained(tmp_path / "copy")
    ids, mask = text_ids(["hello"])
    torch.testing.assert_close(project_logits(load_model(tmp_path / "copy"), "mlm", ids, mask),
                               project_logits(load_model(exports["mlm"]), "mlm", ids, mask))


# -------------------------------------------------------------------------------------------------------------
#  Pipelines
# -------------------------------------------------------------------------------------------------------------


def test_pipeline_files_are_saved_by_the_export(exports, tmp_path, capsys):
    config = json.loads((exports["clm"] / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PerceiverBytesTokenizer"
    assert json.loads((exports["image-clf"] / "preprocessor_config.json").read_text())["size"] == {"height": 8,
                                                                                                  "width": 8}
    code, _, err = cli(capsys, "export", exports["mlm"], "--output", tmp_path / "out", "--pipeline-files")
    assert code == 0, err
    assert (tmp_path / "out" / "tokenizer_config.json").is_file()
    code, _, err = cli(capsys, "export", exports["mlm"], "--output", tmp_path / "plain")
    assert code == 0 and not (tmp_path / "plain" / "tokenizer_config.json").exists()


def test_fill_mask_pipeline_ranks_the_models_logits(exports, tmp_path):
    fill = pipeline("fill-mask", model=str(exports["mlm"]))
    text = "The cat [MASK]at on the mat"
    results = fill(text, top_k=3)
    model = load_model(exports["mlm"])
    ids = torch.tensor([encode_masked(text)])
    with torch.no_grad():
        logits = model(ids)[0, ids[0].tolist().index(3)]
    top = logits.softmax(-1).topk(3)
    assert [r["token"] for r in results] == top.indices.tolist()
    assert [r["score"] for r in results] == pytest.approx(top.values.tolist(), rel=1e-5)
    assert results[0]["sequence"] == text.replace("[MASK]", results[0]["token_str"])


def test_fill_mask_pipeline_on_krasserm(tmp_path):
    directory = krasserm_copy("mlm", tmp_path)
    assert save_pipeline_files(directory) == ["tokenizer_config.json"]
    text = "a [MASK]ig dog"
    result = pipeline("fill-mask", model=str(directory))(text, top_k=1)[0]
    ids = torch.tensor([encode_masked(text)])
    with torch.no_grad():
        logits = load_model(directory)(ids)[0, 2]
    assert result["token"] == int(logits.argmax())


def test_text_classification_pipeline_gives_the_models_argmax_class(exports, tmp_path):
    classify = pipeline("text-classification", model=str(exports["text-clf"]))
    texts = ["a fine day", "terrible, awful, no good", "x"]
    model = load_model(exports["text-clf"])
    probs = model.predict_proba(texts)
    for text, row in zip(texts, probs):
        result = classify(text, top_k=None)
        assert result[0]["label"] == str(int(row.argmax()))
        assert {r["label"]: r["score"] for r in result} == pytest.approx(
            {str(i): float(p) for i, p in enumerate(row)}, rel=1e-5)
    directory = krasserm_copy("txt-clf", tmp_path)
    save_pipeline_files(directory)
    krasserm = load_model(directory)
    label = pipeline("text-classification", model=str(directory))("so so")[0]["label"]
    assert label == krasserm.config.labels()[int(krasserm.predict_proba(["so so"]).argmax())]


def test_image_classification_pipeline_gives_the_models_argmax_class(exports, tmp_path):
    from perceiver.commands.predict import load_image

    classify = pipeline("image-classification", model=str(exports["image-clf"]))
    model = load_model(exports["image-clf"])
    pixels = np.random.RandomState(0).randint(0, 256, (12, 10, 3), dtype=np.uint8)  # RGB, not the model's size
    Image.fromarray(pixels).save(tmp_path / "x.png")
    array, notes = load_image(str(tmp_path / "x.png"), model.config.image_shape)  # what perceiver predict reads
    assert notes
    probs = model.predict_proba(torch.from_numpy(array)[None])[0]
    result = classify(Image.open(tmp_path / "x.png"), top_k=3)
    assert [r["label"] for r in result] == [str(i) for i in probs.argsort(descending=True).tolist()]
    assert [r["score"] for r in result] == pytest.approx(probs.sort(descending=True).values.tolist(), rel=1e-5)
    krasserm = load_model(FIXTURES / "img-clf")
    image = np.random.RandomState(1).randint(0, 256, (6, 5), dtype=np.uint8)
    expected = krasserm.predict_proba(torch.from_numpy(image)[None, :, :, None])[0]
    result = pipeline("image-classification", model=str(FIXTURES / "img-clf"))(Image.fromarray(image), top_k=1)
    assert result[0]["label"] == krasserm.config.labels()[int(expected.argmax())]
    assert result[0]["score"] == pytest.approx(float(expected.max()), rel=1e-5)


# -------------------------------------------------------------------------------------------------------------
#  Text generation
# -------------------------------------------------------------------------------------------------------------

PROMPT = "Once upon a time, in a"  # 22 bytes: more than max_latents (16) of the tiny clm


@pytest.fixture(scope="module")
def generator(exports):
    return pipeline("text-generation", model=str(exports["clm"]))


@pytest.mark.parametrize("length", [3, 22, 70])
def test_next_token_logits_use_perceiver_generates_layout(exports, length):
    """The last min(N, max_latents) positions are latents and the last max_seq_len tokens are read (16 and 64 for
    the tiny clm): shorter, longer than max_latents, longer than max_seq_len."""
    model, wrapper = load_model(exports["clm"]), AutoModelForCausalLM.from_pretrained(str(exports["clm"]))
    torch.manual_seed(length)
    ids = torch.randint(6, 262, (2, length))
    window = ids[:, -64:]
    with torch.no_grad():
        expected = model(window, window.shape[1] - min(window.shape[1], 16))[:, -1]
        got = wrapper(input_ids=ids, logits_to_keep=1).logits
        every = wrapper(input_ids=ids).logits
    assert got.shape == (2, 1, 262) and every.shape == (2, min(length, 16), 262)
    torch.testing.assert_close(got[:, 0], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(every[:, -1], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_tokens", [5, 60])  # 22 + 60 > max_seq_len 64: the window slides
def test_greedy_text_generation_equals_perceiver_generate(exports, generator, capsys, num_tokens):
    code, out, err = cli(capsys, "generate", "-m", exports["clm"], "-p", PROMPT, "-n", num_tokens, "-t", "0")
    assert code == 0, err
    text = generator(PROMPT, max_new_tokens=num_tokens, do_sample=False)[0]["generated_text"]
    assert text == out[:-1] and len(text) == len(PROMPT) + num_tokens


def test_batched_prompts_generate_as_the_cli_does_each(exports, generator, capsys):
    prompts = ["Hi", PROMPT]
    assert generator.tokenizer.padding_side == "left"  # saved so
    texts = [r[0]["generated_text"] for r in generator(prompts, max_new_tokens=8, do_sample=False, batch_size=2)]
    for prompt, text in zip(prompts, texts):
        code, out, _ = cli(capsys, "generate", "-m", exports["clm"], "-p", prompt, "-n", 8, "-t", "0")
        assert text == out[:-1]


def test_seeded_sampling_is_reproducible_and_equals_perceiver_generate(exports, generator, capsys):
    def sample(seed, **options):
        torch.manual_seed(seed)
        return generator(PROMPT, max_new_tokens=12, do_sample=True, **options)[0]["generated_text"]

    options = dict(top_k=20, temperature=2.0)
    first = sample(1, **options)
    assert sample(1, **options) == first and sample(2, **options) != first
    code, out, _ = cli(capsys, "generate", "-m", exports["clm"], "-p", PROMPT, "-n", 12, "--top-k", 20, "-t", 2.0,
                       "--seed", 1)
    assert first == out[:-1]
    greedy = generator(PROMPT, max_new_tokens=12, do_sample=False)[0]["generated_text"]
    assert sample(3, top_k=1, temperature=5.0) == greedy
    assert sample(4, top_p=1e-6, temperature=5.0) == greedy
    assert sample(5, temperature=1e-4) == greedy
    assert sample(6, temperature=5.0) != greedy


def greedy_ids(model, ids, steps, penalty=1.0):
    """Greedy decoding by hand from the project model's logits, with transformers' repetition penalty formula."""
    for _ in range(steps):
        num_latents = min(ids.shape[1], model.config.max_latents)
        window = ids[:, -model.config.max_seq_len:]
        with torch.no_grad():
            logits = model(window, window.shape[1] - num_latents)[:, -1]
        seen = logits.gather(1, ids)
        logits = logits.scatter(1, ids, torch.where(seen < 0, seen * penalty, seen / penalty))
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids


def test_repetition_penalty_applies_to_the_models_logits(exports):
    model, wrapper = load_model(exports["clm"]), AutoModelForCausalLM.from_pretrained(str(exports["clm"]))
    ids = torch.tensor([ByteTokenizer().encode(PROMPT)])
    plain = wrapper.generate(ids, max_new_tokens=12, do_sample=False)
    penalised = wrapper.generate(ids, max_new_tokens=12, do_sample=False, repetition_penalty=3.0)
    assert torch.equal(plain, greedy_ids(model, ids, 12))
    assert torch.equal(penalised, greedy_ids(model, ids, 12, penalty=3.0)) and not torch.equal(penalised, plain)


def test_beam_search_keeps_the_most_likely_continuation(exports):
    """Two steps of beam search with 4 beams: the best pair among the 4 best first tokens, by summed log-probs (for
    this prompt, not the greedy pair)."""
    model, wrapper = load_model(exports["clm"]), AutoModelForCausalLM.from_pretrained(str(exports["clm"]))
    ids = torch.tensor([ByteTokenizer().encode("abc")])  # 3 tokens: all are latents
    with torch.no_grad():
        first = model(ids, 0)[0, -1].log_softmax(-1)
        candidates = first.topk(4).indices
        rows = torch.cat([ids.expand(4, -1), candidates[:, None]], dim=1)
        second = model(rows, 0)[:, -1].log_softmax(-1)
    totals = first[candidates][:, None] + second
    best = int(totals.flatten().argmax())
    expected = [int(candidates[best // totals.shape[1]]), best % totals.shape[1]]
    out = wrapper.generate(ids, max_new_tokens=2, num_beams=4, do_sample=False, early_stopping=True)
    assert out[0, ids.shape[1]:].tolist() == expected
    assert expected != greedy_ids(model, ids, 2)[0, ids.shape[1]:].tolist()


def test_stopping_criteria_and_eos_end_generation(exports):
    wrapper = AutoModelForCausalLM.from_pretrained(str(exports["clm"]))
    ids = torch.tensor([ByteTokenizer().encode(PROMPT)])
    full = wrapper.generate(ids, max_new_tokens=10, do_sample=False)[0, ids.shape[1]:]
    stop_at = int(full[3])
    first = full.tolist().index(stop_at)
    out = wrapper.generate(ids, max_new_tokens=10, do_sample=False, eos_token_id=stop_at)[0, ids.shape[1]:]
    assert out.tolist() == full[: first + 1].tolist()

    class AfterSix(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), input_ids.shape[1] >= ids.shape[1] + 6, dtype=torch.bool)

    criteria = StoppingCriteriaList([AfterSix()])
    out = wrapper.generate(ids, max_new_tokens=10, do_sample=False, stopping_criteria=criteria)
    assert out[0, ids.shape[1]:].tolist() == full[:6].tolist()


def test_import_perceiver_hf_auto_only_registers(tmp_path):
    """``import perceiver`` registers nothing (it imports no transformers); ``import perceiver.hf.auto`` does."""
    import subprocess
    import sys

    code = ("import sys, perceiver, perceiver.hf.krasserm; print('transformers' in sys.modules); "
            "import perceiver.hf.auto; from transformers import AutoConfig; "
            "print(type(AutoConfig.for_model('perceiver-clm')).__name__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.stdout.split() == ["False", "PerceiverCausalLMConfig"], result.stderr
