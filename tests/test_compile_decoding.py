"""``generate --compile``: the torch.compile'd cached decoding step gives the tokens of the eager one."""

import pytest
import torch
from test_perceiver_ar import tiny_model

from perceiver.inference import InferenceSetupError, compile_decoding


@pytest.mark.slow  # inductor compiles a graph per shape regime with the C++ compiler: minutes on 2 busy cores
def test_compiled_greedy_decoding_gives_the_eager_tokens():
    torch._dynamo.reset()
    model = tiny_model()
    prompt = torch.randint(6, 262, (3, 10))
    eager = model.generate(prompt, num_tokens=8, num_latents=3, temperature=0)
    assert len(set(eager.flatten().tolist())) > 3, "greedy output should not be degenerate for this test"
    step = model.perceiver_ar.forward_cached
    compile_decoding(model)
    assert model.perceiver_ar.forward_cached is not step and compile_decoding(model) is model  # compiled once
    assert torch.equal(model.generate(prompt, num_tokens=8, num_latents=3, temperature=0), eager)


def test_compile_refuses_a_model_without_a_decoding_step_or_compiler(monkeypatch):
    with pytest.raises(InferenceSetupError, match="causal LMs"):
        compile_decoding(torch.nn.Linear(2, 2))
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(InferenceSetupError, match="C\\+\\+ compiler"):
        compile_decoding(tiny_model())
