"""Byte tokenizer, cached corpora, training/validation windows and the text data modules."""

import json

import numpy as np
import pytest
import torch

from perceiver.data.corpus import DataError, FixedWindowDataset, RandomWindowDataset, collate_windows, prepare_corpus
from perceiver.data.text import TextDataConfig, TextFilesDataModule, WikipediaOfflineDataModule, _join_articles
from perceiver.data.tokenizer import ByteTokenizer, TextPreprocessor


def test_byte_tokenizer_matches_the_transformers_perceiver_tokenizer():
    from transformers import PerceiverTokenizer

    reference = PerceiverTokenizer()
    text = "Perceiver AR liest Bytes: naïve café, 東京, emoji 🙂."
    ours = ByteTokenizer()
    assert ours.encode(text) == reference(text, add_special_tokens=False)["input_ids"]
    assert ours.decode(ours.encode(text)) == text


def test_decode_replaces_invalid_utf8_and_skips_special_tokens():
    tokenizer = ByteTokenizer()
    ids = [0, 3] + [b + 6 for b in b"ok \xff\xfe end"]
    assert tokenizer.decode(ids) == "ok \ufffd\ufffd end"


def test_stream_decoder_holds_back_incomplete_characters():
    tokenizer = ByteTokenizer()
    decode = tokenizer.stream_decoder()
    pieces = [decode([i]) for i in tokenizer.encode("é東")]
    assert "".join(pieces) + decode.flush() == "é東"
    assert pieces[0] == ""  # first byte of 'é' alone is not yet a character


def test_preprocessor_left_pads_and_keeps_the_last_bytes_of_long_texts():
    preprocessor = TextPreprocessor(max_seq_len=8)
    ids, pad = preprocessor.preprocess_batch(["abc", "0123456789"])
    assert ids.shape == (2, 8)
    assert pad[0].tolist() == [True] * 5 + [False] * 3
    assert preprocessor.tokenizer.decode(ids[0]) == "abc"
    assert preprocessor.tokenizer.decode(ids[1]) == "23456789"
    assert preprocessor.truncated == [1]


def test_corpus_is_prepared_once_and_atomically(tmp_path):
    calls = []

    def docs():
        calls.append(1)
        return ["first document", "second \xff one"]

    directory = tmp_path / "corpus"
    prepare_corpus(directory, {"train": docs, "val": lambda: ["held out"]})
    prepare_corpus(directory, {"train": docs, "val": lambda: ["held out"]})
    assert len(calls) == 1
    assert (directory / "train.bin").read_bytes() == "first document\n\nsecond \xff one".encode()
    assert np.load(directory / "train.docs.npy").tolist() == [0, 16]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_failed_preparation_leaves_no_cache(tmp_path):
    def broken():
        yield "some text"
        raise RuntimeError("source went away")

    with pytest.raises(RuntimeError):
        prepare_corpus(tmp_path / "c", {"train": broken, "val": lambda: ["x"]})
    assert list(tmp_path.iterdir()) == []


def test_random_windows_are_reproducible_and_distinct_per_index_and_epoch():
    data = np.frombuffer(bytes(range(256)) * 40, dtype=np.uint8)
    dataset = RandomWindowDataset(data, max_seq_len=32, truncation_prob=0.0, seed=3)
    assert torch.equal(dataset[5], dataset[5])
    assert not torch.equal(dataset[5], dataset[6])
    first_epoch = dataset[5]
    dataset.set_epoch(1)
    assert not torch.equal(first_epoch, dataset[5])
    other_seed = RandomWindowDataset(data, max_seq_len=32, truncation_prob=0.0, seed=4)
    assert not torch.equal(other_seed[5], RandomWindowDataset(data, 32, truncation_prob=0.0, seed=3)[5])
    window = dataset[0]
    assert len(window) == 33
    assert (((window[1:] - window[:-1]) % 256) == 1).all()  # a contiguous slice of the data


def test_random_truncation_produces_short_windows_that_collate_left_padded():
    data = np.frombuffer(b"abcdefghij" * 100, dtype=np.uint8)
    dataset = RandomWindowDataset(data, max_seq_len=32, min_seq_len=4, truncation_prob=1.0, seed=0)
    lengths = {len(dataset[i]) for i in range(50)}
    assert min(lengths) >= 5 and max(lengths) <= 33 and len(lengths) > 5
    labels, input_ids, pad_mask = collate_windows([dataset[i] for i in range(8)])
    for row in range(8):
        real = ~pad_mask[row]
        assert real[real.nonzero()[0, 0]:].all()  # padding only on the left
        assert (labels[row][pad_mask[row]] == -100).all()
        assert torch.equal(labels[row, real][:-1], input_ids[row, real][1:])  # labels are inputs shifted by one


def test_fixed_validation_windows_cover_the_data_without_overlap():
    data = np.frombuffer(bytes(range(100)), dtype=np.uint8)
    dataset = FixedWindowDataset(data, max_seq_len=10)
    assert len(dataset) == 9
    assert dataset[0].tolist() == [b + 6 for b in range(11)]
    assert dataset[1][0].item() == 10 + 6


def test_text_files_module_splits_and_batches(tmp_path):
    for i in range(10):
        (tmp_path / f"doc{i}.txt").write_bytes(f"document number {i} ".encode() * 20 + b"\xff\xfe")
    config = TextDataConfig(max_seq_len=32, batch_size=4, data_path=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    module = TextFilesDataModule(config)
    module.prepare_data()
    module.setup()
    labels, input_ids, pad_mask = next(iter(module.train_dataloader()))
    assert input_ids.shape[0] == 4 and input_ids.shape[1] <= 32
    meta = json.loads((module.corpus_dir / "meta.json").read_text())
    assert meta["splits"]["val"]["documents"] == 1 and meta["splits"]["train"]["documents"] == 9


@pytest.mark.parametrize("setup", ["missing", "empty_dir", "empty_file", "unset"])
def test_text_files_module_reports_missing_or_empty_data(tmp_path, setup):
    path = {"missing": tmp_path / "nope", "empty_dir": tmp_path, "empty_file": tmp_path / "e.txt", "unset": None}[setup]
    if setup == "empty_file":
        path.write_text("")
    module = TextFilesDataModule(TextDataConfig(data_path=str(path) if path else None, cache_dir=str(tmp_path / "c")))
    with pytest.raises(DataError, match="data"):
        module.prepare_data()


def test_wikipedia_offline_corpus_reads_the_packaged_articles(tmp_path):
    module = WikipediaOfflineDataModule(TextDataConfig(max_seq_len=64, cache_dir=str(tmp_path)))
    module.prepare_data()
    meta = json.loads((module.corpus_dir / "meta.json").read_text())
    assert meta["splits"]["train"]["documents"] + meta["splits"]["val"]["documents"] == 10033
    assert 4_000_000 < meta["splits"]["train"]["bytes"] < 6_000_000
    module.setup()
    text = ByteTokenizer().decode(module.val_set[0])
    assert text.isprintable() or "\n" in text


def test_wikitext_articles_are_split_at_title_lines():
    lines = [" = Alpha = \n", " text a \n", " = = Section = = \n", " more a \n", " = Beta = \n", " text b \n"]
    assert [a.splitlines()[0].strip() for a in _join_articles(lines)] == ["= Alpha =", "= Beta ="]
