"""Lower-precision and quantized inference (``perceiver.inference``, ``--dtype``, ``--quantize``) and batched
generation from prompt files (``perceiver.prompts``, ``generate --prompts-file``)."""

import json
import math

import pytest
import torch
from torch import nn

from perceiver.checkpoint import load_model, save_model
from perceiver.cli import main
from perceiver.inference import InferenceSetupError, prepare, quantize_int8
from perceiver.tasks.clm import CausalLanguageModel, CausalLanguageModelConfig, batch_metrics
from perceiver.tasks.sampling import sample_next

TEXT = "the quick brown fox jumps over the lazy dog. a small robot reads bytes one by one. " * 40
CONFIG = dict(max_seq_len=64, max_latents=16, num_channels=64, num_heads=4, num_self_attention_layers=2,
              cross_attention_dropout=0.25)


def cli(capsys, *args, stdin=None, monkeypatch=None):
    if stdin is not None:
        import io

        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    try:
        main(list(args))
        code = 0
    except SystemExit as exit:
        code = exit.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def _windows(data: torch.Tensor, count: int, length: int, generator: torch.Generator) -> torch.Tensor:
    starts = torch.randint(0, data.numel() - length - 1, (count,), generator=generator)
    return torch.stack([data[s : s + length + 1] for s in starts.tolist()])  # (count, length + 1)


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    """A tiny clm trained for 300 steps on a repetitive text (about 20 s on one thread), exported."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny products: threads only add synchronisation (50x slower on a busy machine)
    try:
        return _train(tmp_path_factory)
    finally:
        torch.set_num_threads(threads)


def _train(tmp_path_factory):
    torch.manual_seed(0)
    data = torch.tensor(list(TEXT.encode()), dtype=torch.long) + 6
    model = CausalLanguageModel(CausalLanguageModelConfig(**CONFIG)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    length = CONFIG["max_seq_len"]
    for _ in range(300):
        window = _windows(data, 8, length, generator)
        labels, inputs = window[:, 1:], window[:, :-1]
        loss = batch_metrics(model, (labels, inputs, None))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    directory = tmp_path_factory.mktemp("model") / "clm"
    save_model(model.eval(), directory)
    return directory


def _bits_per_byte(model) -> float:
    data = torch.tensor(list(TEXT.encode()), dtype=torch.long) + 6
    window = _windows(data, 32, CONFIG["max_seq_len"], torch.Generator().manual_seed(1))
    with torch.no_grad():
        return float(batch_metrics(model, (window[:, 1:], window[:, :-1], None))["bpb"])


def test_bf16_and_int8_keep_the_bits_per_byte_of_fp32(trained_dir):
    fp32 = _bits_per_byte(load_model(trained_dir))
    bf16 = _bits_per_byte(load_model(trained_dir, dtype="bfloat16"))
    int8 = _bits_per_byte(prepare(load_model(trained_dir), quantize="int8"))
    assert fp32 < 0.1  # the model did learn the text (8 bits per byte at the start)
    # measured: fp32 0.0124, bf16 -0.0000, int8 +0.0001 bits per byte (tolerance 0.005; the issue asks 0.02 on a
    # trained model)
    assert abs(bf16 - fp32) < 0.005 and abs(int8 - fp32) < 0.005, (fp32, bf16, int8)


def test_dtype_stores_weights_and_cache_in_it_and_logits_stay_fp32(trained_dir):
    model = load_model(trained_dir, dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    prompt = torch.tensor([list(b"the quick")]) + 6
    assert model(prompt, prefix_len=1).dtype == torch.float32
    caches = []
    original = model.perceiver_ar.empty_cache
    model.perceiver_ar.empty_cache = lambda *args, **kwargs: caches.append(original(*args, **kwargs)) or caches[-1]
    model.generate(prompt, num_tokens=3, num_latents=4)
    assert caches and caches[0].cross.keys.dtype == torch.bfloat16 and caches[0].inputs.dtype == torch.bfloat16
    assert all(c.keys.dtype == torch.bfloat16 for c in caches[0].self_attention)


def test_greedy_generation_in_bf16_and_int8_mostly_agrees_with_fp32(trained_dir):
    # The next-token choices are compared on the same inputs, the fp32 continuation (teacher forcing): free-running
    # greedy texts part for good at the first near-tie, which says little about the other steps (on one CPU bf16
    # parted at token 18 of 24).
    prompt = torch.tensor([list(b"the quick brown fox ")]) + 6
    fp32 = load_model(trained_dir)
    reference = fp32.generate(prompt, num_tokens=24, temperature=0, num_latents=16)
    sequence = torch.cat([prompt, reference], dim=1)[:, :-1]
    prefix_len = sequence.shape[1] - CONFIG["max_latents"]
    with torch.no_grad():
        expected = fp32(sequence, prefix_len=prefix_len).argmax(dim=-1)
    assert (expected == reference[:, -CONFIG["max_latents"]:]).float().mean() > 0.9  # the text was learned
    for model in (load_model(trained_dir, dtype="bfloat16"), prepare(load_model(trained_dir), quantize="int8")):
        assert model.generate(prompt, num_tokens=24, temperature=0, num_latents=16).shape == reference.shape
        with torch.no_grad():
            predicted = model(sequence, prefix_len=prefix_len).argmax(dim=-1)
        assert (predicted == expected).float().mean() > 0.9


def test_int8_replaces_the_linear_layers_and_refuses_what_it_cannot_quantize():
    model = prepare(CausalLanguageModel(CausalLanguageModelConfig(**CONFIG)).eval(), quantize="int8")
    assert not any(type(m) is nn.Linear for m in model.modules())
    with pytest.raises(InferenceSetupError, match="no nn.Linear"):
        quantize_int8(nn.Sequential(nn.Conv1d(2, 2, 1)))
    with pytest.raises(InferenceSetupError, match="float32 weights"):
        quantize_int8(nn.Sequential(nn.Linear(2, 2)).to(torch.bfloat16))
    with pytest.raises(InferenceSetupError, match="CPU only"):
        quantize_int8(nn.Sequential(nn.Linear(2, 2)), device="cuda")


def test_per_row_generators_make_a_row_independent_of_the_others():
    logits = torch.randn(3, 50)
    alone = sample_next(logits[1:2], generator=[torch.Generator().manual_seed(7)])
    rows = sample_next(logits, generator=[torch.Generator().manual_seed(s) for s in (1, 7, 2)])
    assert rows[1] == alone[0]
    with pytest.raises(ValueError, match="2 generators"):
        sample_next(logits, generator=[torch.Generator(), torch.Generator()])


PROMPTS = ["the quick", "a small robot reads", "the", "lazy dog. a small", "one by one"]


def test_prompts_file_completions_do_not_depend_on_the_batch(trained_dir, tmp_path, capsys):
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    outputs = {}
    for batch_size in (1, 3):
        code, out, err = cli(capsys, "generate", "--model", str(trained_dir), "--prompts-file", str(path),
                             "--batch-size", str(batch_size), "--num-tokens", "12", "--seed", "5")
        assert code == 0, err
        outputs[batch_size] = [json.loads(line) for line in out.splitlines()]
    assert [r["prompt"] for r in outputs[3]] == PROMPTS  # input order
    assert all(r["num_tokens"] == 12 for r in outputs[3])
    assert outputs[1] == outputs[3]
    assert len({r["completion"] for r in outputs[1]}) > 1  # sampled, not one fixed string


def test_prompts_file_jsonl_stdin_and_output_file(trained_dir, tmp_path, capsys, monkeypatch):
    lines = "".join(json.dumps({"prompt": p, "id": i}) + "\n" for i, p in enumerate(PROMPTS[:3]))
    target = tmp_path / "out.jsonl"
    args = ["generate", "--model", str(trained_dir), "--prompts-file", "-", "--batch-size", "2", "--num-tokens", "4",
            "--temperature", "0", "--output", str(target)]
    code, out, err = cli(capsys, *args, stdin=lines, monkeypatch=monkeypatch)
    assert code == 0 and out == "" and "wrote 3 completions" in err
    records = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["prompt"] for r in records] == PROMPTS[:3] and all(len(r["completion"]) > 0 for r in records)
    target.write_text("mine")
    code, _, err = cli(capsys, *args, stdin=lines, monkeypatch=monkeypatch)
    assert code != 0 and "--force" in err and target.read_text() == "mine"
    code, _, err = cli(capsys, *args, "--force", stdin=lines, monkeypatch=monkeypatch)
    assert code == 0 and target.read_text().count("\n") == 3
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temporary file left


@pytest.mark.parametrize(
    "content,args,message",
    [
        (None, [], "does not exist"),
        ("", [], "is empty"),
        ("\n\n", [], "is empty"),
        ("one\n\nthree\n", [], "line 2: the prompt is empty"),
        ('{"prompt": "a"}\n{"text": "b"}\n', [], "line 2: the JSON object has no 'prompt' field"),
        ('{"prompt": "a"}\nplain\n', [], "line 2: not a JSON object"),
        ("one\n", ["--batch-size", "0"], "--batch-size"),
        ("one\n", ["--dtype", "float64"], "--dtype must be one of"),
        ("one\n", ["--quantize", "int8", "--dtype", "bfloat16"], "cannot be combined"),
        ("one\n", ["--quantize", "int4"], "--quantize must be one of"),
        ("one\n", ["--compile", "--no-cache"], "drop --no-cache"),
    ],
)
def test_generate_bad_input_is_one_line(trained_dir, tmp_path, capsys, content, args, message):
    path = tmp_path / "prompts.txt"
    if content is not None:
        path.write_text(content)
    code, out, err = cli(capsys, "generate", "--model", str(trained_dir), "--prompts-file", str(path), *args)
    assert code != 0 and message in err and "Traceback" not in err, err
    assert sum("rror" in line for line in err.splitlines()) == 1  # one error line (click adds a usage hint)


def test_float16_on_a_cpu_without_fp16_arithmetic_warns_in_one_line(trained_dir, capsys, monkeypatch):
    monkeypatch.setattr("perceiver.inference.float16_is_slow", lambda device: True)
    code, out, err = cli(capsys, "generate", "--model", str(trained_dir), "--prompt", "the", "--num-tokens", "3",
                         "--dtype", "float16")
    assert code == 0 and out.startswith("the")
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "float16" in warnings[0] and "bfloat16" in warnings[0]


def test_eval_takes_dtype_and_quantize(trained_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PERCEIVER_CACHE_DIR", str(tmp_path / "cache"))
    corpus = tmp_path / "text.txt"
    corpus.write_text(TEXT)
    values = {}
    for extra in ([], ["--dtype", "bfloat16"], ["--quantize", "int8"]):
        code, out, err = cli(capsys, "eval", "--model", str(trained_dir), "--data", "text", "--data-path", str(corpus),
                             *extra)
        assert code == 0, err
        values[" ".join(extra)] = float(next(line for line in out.splitlines() if "bpb" in line).split()[-2])
    fp32 = values[""]
    assert math.isfinite(fp32) and all(abs(v - fp32) < 0.02 for v in values.values()), values
