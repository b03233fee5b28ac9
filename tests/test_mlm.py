"""Task mlm: masking rule, loss on masked positions only, fill-mask, training step."""

import math

import pytest
import torch

from perceiver import registry
from perceiver.data.tokenizer import CLS_ID, MASK_ID, NUM_SPECIAL, PAD_ID, SEP_ID, ByteTokenizer
from perceiver.tasks.mlm import (
    MaskedLanguageModel,
    MaskedLanguageModelConfig,
    _k_best,
    batch_metrics,
    encode_masked,
    mask_tokens,
    selected_positions,
)


def tiny_model(**overrides):
    values = dict(registry.get("model", "mlm-tiny").load())
    values.update(overrides)
    return MaskedLanguageModel(MaskedLanguageModelConfig(**values))


def test_masking_rule_statistics_on_a_large_sample():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(NUM_SPECIAL, 262, (256, 512), generator=generator)
    pad = torch.zeros_like(ids, dtype=torch.bool)
    pad[:, 400:] = True
    corrupted, labels = mask_tokens(ids, pad, mask_prob=0.15, generator=generator)
    selected = labels != -100
    assert not selected[pad].any()
    assert selected[:, :400].float().mean().item() == pytest.approx(0.15, abs=0.005)
    assert torch.equal(labels[selected], ids[selected])
    as_mask = (corrupted == MASK_ID) & selected
    unchanged = (corrupted == ids) & selected
    randomised = selected & ~as_mask & ~unchanged
    n = selected.sum().item()
    assert as_mask.sum().item() / n == pytest.approx(0.8, abs=0.01)
    # a random byte may equal the original (1 in 256): "unchanged" gets ~10% + 10%/256
    assert unchanged.sum().item() / n == pytest.approx(0.1 + 0.1 / 256, abs=0.01)
    assert randomised.sum().item() / n == pytest.approx(0.1 - 0.1 / 256, abs=0.01)
    assert (corrupted[randomised] >= NUM_SPECIAL).all()
    assert torch.equal(corrupted[~selected], ids[~selected])


def test_special_tokens_are_never_selected_and_one_position_always_is():
    ids = torch.tensor([[PAD_ID, 10, 11, MASK_ID, 12]])
    for seed in range(20):
        _, labels = mask_tokens(ids, ids == PAD_ID, mask_prob=0.01, generator=torch.Generator().manual_seed(seed))
        assert (labels != -100).sum() >= 1
        assert (labels[0, [0, 3]] == -100).all()


def test_whole_word_masking_selects_complete_words():
    tokenizer = ByteTokenizer()
    text = " ".join(["alpha", "be", "gamma", "delta"] * 200)
    ids = torch.tensor([tokenizer.encode(text)])
    _, labels = mask_tokens(ids, None, mask_prob=0.3, whole_word=True, generator=torch.Generator().manual_seed(1))
    selected = (labels != -100)[0].tolist()
    space = tokenizer.encode(" ")[0]
    words, start = [], 0
    for i, token in enumerate(ids[0].tolist() + [space]):
        if token == space:
            words.append(selected[start:i])
            assert not (i < len(selected) and selected[i]), "whitespace selected"
            start = i + 1
    assert all(all(w) or not any(w) for w in words), "a word was partly selected"
    share = sum(all(w) for w in words) / len(words)
    assert share == pytest.approx(0.3, abs=0.06)


def test_selected_positions_are_left_aligned_with_a_validity_mask():
    labels = torch.tensor([[-100, 5, -100, 7], [-100, -100, -100, 9]])
    positions, valid = selected_positions(labels)
    assert positions.tolist() == [[1, 3], [3, 0]] and valid.tolist() == [[True, True], [True, False]]


def test_loss_counts_masked_positions_only():
    torch.manual_seed(0)
    model = tiny_model().eval()
    ids = torch.randint(NUM_SPECIAL, 262, (3, 40))
    pad = torch.zeros_like(ids, dtype=torch.bool)
    pad[2, 30:] = True
    batch = (None, ids, pad)
    out = batch_metrics(model, batch)
    corrupted, labels = mask_tokens(ids, pad, model.config.mask_prob, generator=torch.Generator().manual_seed(0))
    assert out["count"].item() == (labels != -100).sum().item()
    # the loss equals cross-entropy over the masked positions of the full logits, and nothing else
    logits = model(corrupted, pad)
    expected = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    # the same by explicit selection: mean cross-entropy and accuracy over the masked positions and nothing else
    masked = labels != -100
    assert 0 < masked.sum() < (~pad).sum() and masked[0].sum() != masked[2].sum()  # rows differ: padded selections
    selected = torch.nn.functional.cross_entropy(logits[masked], labels[masked])
    assert out["loss"].item() == pytest.approx(selected.item(), rel=1e-5)
    accuracy = (logits[masked].argmax(-1) == labels[masked]).float().mean()
    assert out["accuracy"].item() == pytest.approx(accuracy.item(), abs=1e-6)


def test_training_step_decodes_only_masked_positions_and_learns():
    torch.manual_seed(0)
    model = tiny_model(mask_prob=0.3).train()
    ids = torch.tensor([ByteTokenizer().encode("abcdefgh" * 8)])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    calls = []
    handle = model.decoder.cross_attention.register_forward_hook(lambda m, args, out: calls.append(args[0].shape))
    first = None
    for step in range(100):
        out = batch_metrics(model, (None, ids, None))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        first = first if first is not None else out["loss"].item()
    handle.remove()
    assert all(shape[1] < ids.shape[1] for shape in calls)  # queries of masked positions only
    assert out["loss"].item() < first / 2


def test_a_tiny_masked_lm_learns_to_use_the_context():
    """Rows of the alphabet from random starting letters: every letter is equally frequent, so predicting the byte
    distribution gets ln(26) and only reading the neighbours of a masked byte does better."""
    torch.manual_seed(1)  # at init_scale 0.1, 3 of seeds 0-3 get there within 1,000 steps; at 0.02, none
    model = tiny_model(num_input_channels=64, num_latents=32, num_latent_channels=64,
                       num_self_attention_layers_per_block=2).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def alphabet_rows(n):
        starts = torch.randint(0, 26, (n, 1))
        return (starts + torch.arange(64)) % 26 + ord("a") + NUM_SPECIAL

    for _ in range(1000):
        out = batch_metrics(model, (None, alphabet_rows(32), None))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        out = batch_metrics(model, (None, alphabet_rows(64), None))
    assert out["loss"].item() < math.log(26) / 4
    assert out["accuracy"].item() > 0.9


def test_fill_mask_returns_ranked_candidates_of_the_right_length():
    torch.manual_seed(0)
    model = tiny_model().eval()
    results = model.fill_mask(["ab[MASK]d", "[MASK][MASK] x"], top_k=4)
    assert [len(r) for r in results] == [4, 4]
    for text, candidates in zip(["ab?d", "?? x"], results):
        probabilities = [c.probability for c in candidates]
        assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6
        for c in candidates:
            assert len(c.fill.encode("utf-8", "replace")) >= 1
    assert results[0][0].text.startswith("ab") and results[0][0].text.endswith("d")


def test_k_best_is_exact_for_independent_positions():
    log_probs = torch.log(torch.tensor([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1]]))
    best = _k_best(log_probs, 3)
    assert [seq for seq, _ in best] == [[0, 0], [0, 1], [1, 0]]
    assert math.exp(best[1][1]) == pytest.approx(0.24)


def test_fill_mask_bad_input():
    model = tiny_model().eval()
    with pytest.raises(ValueError, match="no \\[MASK\\]"):
        model.fill_mask(["no mask here"])
    with pytest.raises(ValueError, match="empty"):
        model.fill_mask([""])
    with pytest.raises(ValueError, match="longer than max_seq_len"):
        model.fill_mask(["x" * 100 + "[MASK]"])
    assert encode_masked("a[MASK]") == [ord("a") + NUM_SPECIAL, MASK_ID]


def test_fill_mask_can_wrap_texts_in_special_tokens_like_the_converted_model():
    torch.manual_seed(0)
    model = tiny_model(special_tokens=True).eval()
    seen = []
    handle = model.input_adapter.register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))
    result = model.fill_mask(["ab[MASK]"], top_k=1)[0][0]
    handle.remove()
    assert seen[0][0].tolist()[0] == CLS_ID and seen[0][0].tolist()[-1] == SEP_ID
    assert result.text.startswith("ab") and len(result.text.encode("utf-8", "replace")) >= 3


def test_config_errors():
    from perceiver.config_checks import ConfigError

    with pytest.raises(ConfigError, match="mask_prob"):
        MaskedLanguageModelConfig(mask_prob=0.0)
    with pytest.raises(ConfigError, match="divisible"):
        MaskedLanguageModelConfig(num_latent_channels=100, num_self_attention_qk_channels=None)
