"""Corpora, the token cache, batches, and the one-line errors for bad input."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from train_helpers import write_corpus

from gpt2core.config import DataConfig
from gpt2core.data import (
    BatchSampler,
    _join_rows,
    builtin_documents,
    eval_starts,
    expand_data_paths,
    load_corpus,
    prepare_data,
)
from gpt2core.errors import DataError, HubUnavailableError
from gpt2core.tokenizer import EOS_TOKEN


def test_builtin_corpus_is_split_by_whole_documents(tmp_path):
    documents = builtin_documents(tmp_path)
    assert sum(map(len, documents)) > 800_000  # Python's reference topics and docstrings: a real corpus
    assert builtin_documents(tmp_path) == documents  # read back from the cache
    corpus = load_corpus(DataConfig(cache_dir=str(tmp_path)))
    parts = {name: text.split(EOS_TOKEN) for name, text in corpus.splits.items()}
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == sorted(documents)
    total = sum(map(len, documents))
    for name in ("val", "test"):
        assert 0.03 < sum(map(len, parts[name])) / total < 0.08
        assert not set(parts[name]) & set(parts["train"])
    assert any(d.startswith('The "if" statement') for d in parts["train"] + parts["val"] + parts["test"])
    assert load_corpus(DataConfig(cache_dir=str(tmp_path))).fingerprint == corpus.fingerprint


def test_token_cache_is_reused_and_keyed_by_content_and_tokenizer(tmp_path):
    corpus = write_corpus(tmp_path / "text", "alpha beta gamma delta\n" * 300)
    cfg = DataConfig(data=(str(corpus),), tokenizer="char", cache_dir=str(tmp_path / "cache"))
    first = prepare_data(cfg)
    assert not first.reused and first.info()["tokens"]["train"] > 5000
    second = prepare_data(cfg)
    assert second.reused and second.cache_path == first.cache_path
    assert all(np.array_equal(first.splits[s], second.splits[s]) for s in ("train", "val", "test"))
    assert first.tokenizer.decode(first.splits["train"][:11].tolist()) == "alpha beta "
    # the unigram baseline is the entropy of the character distribution, a few nats
    assert 1.0 < first.unigram_loss < np.log(first.tokenizer.vocab_size) + 0.1

    bpe = prepare_data(cfg.replace(tokenizer="bpe", vocab_size=300))
    assert bpe.cache_path != first.cache_path
    again = prepare_data(cfg.replace(tokenizer="bpe", vocab_size=300))
    assert again.reused and again.tokenizer.backend.to_str() == bpe.tokenizer.backend.to_str()  # learned once

    corpus.write_text("alpha beta gamma epsilon\n" * 300, encoding="utf-8")
    changed = prepare_data(cfg)
    assert not changed.reused and changed.cache_path != first.cache_path


@pytest.mark.parametrize("damage", ["{not json", '{"dtype": "uint16"}', '{"dtype": "no-such-type", "tokens": {}, "bytes": {}}'])
def test_a_damaged_token_cache_entry_is_a_clear_error(tmp_path, damage):
    corpus = write_corpus(tmp_path / "text", "alpha beta gamma delta\n" * 300)
    cfg = DataConfig(data=(str(corpus),), tokenizer="char", cache_dir=str(tmp_path / "cache"))
    entry = prepare_data(cfg).cache_path
    (entry / "meta.json").write_text(damage, encoding="utf-8")
    with pytest.raises(DataError, match="cannot read the token cache entry .*delete it and it is rebuilt") as info:
        prepare_data(cfg)
    assert "\n" not in str(info.value)


def test_paths_files_directories_and_globs(tmp_path):
    a = write_corpus(tmp_path / "d", "one\n", "a.txt")
    b = write_corpus(tmp_path / "d" / "sub", "two\n", "b.md")
    write_corpus(tmp_path / "d" / ".git", "hidden\n", "HEAD")
    assert expand_data_paths([str(tmp_path / "d")]) == [a, b]
    assert expand_data_paths([str(tmp_path / "d" / "*.txt"), str(a)]) == [a]
    assert expand_data_paths([str(tmp_path / "d" / "**" / "*.md")]) == [b]
    corpus = load_corpus(DataConfig(data=(str(tmp_path / "d"),)))
    assert "one" in corpus.splits["train"] and EOS_TOKEN in corpus.splits["train"] + corpus.splits["val"] + corpus.splits["test"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.txt", "no such file or directory"),
        (lambda p: p / "nothing-*.txt", "matches no files"),
        (lambda p: (p / "empty-dir").mkdir() or p / "empty-dir", "holds no files"),
        (lambda p: (p / "x.bin").write_bytes(b"\x7fELF\x00\x01\x02" * 100) and p / "x.bin", "looks binary"),
        (lambda p: (p / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1")) and p / "latin1.txt", "not UTF-8"),
        (lambda p: (p / "blank.txt").write_text("  \n\n") and p / "blank.txt", "corpus is empty"),
    ],
)
def test_bad_data_gives_one_line_errors(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(DataError, match=message) as caught:
        load_corpus(DataConfig(data=(str(path),)))
    assert "\n" not in str(caught.value)


def test_a_corpus_shorter_than_a_window_is_refused(tmp_path):
    corpus = write_corpus(tmp_path, "tiny text\n" * 3)
    prepared = prepare_data(DataConfig(data=(str(corpus),), tokenizer="char", cache_dir=str(tmp_path / "c")))
    with pytest.raises(DataError, match="fewer than one context window"):
        prepared.require("val", 33)
    with pytest.raises(DataError, match="training split has"):
        BatchSampler(prepared.splits["train"], 2, 64, seed=0)


def test_unreachable_hub_dataset_fails_fast_with_a_hint(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(HubUnavailableError, match="--data PATH") as caught:
        load_corpus(DataConfig(dataset_name="wikitext", dataset_config="wikitext-2-raw-v1"))
    assert time.monotonic() - started < 10
    assert "wikitext" in str(caught.value)


def test_local_dataset_directory_uses_its_splits(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    for split in ("train", "validation", "test"):
        (tmp_path / "ds").mkdir(exist_ok=True)
        (tmp_path / "ds" / f"{split}.txt").write_text("".join(f"{split} line {i}\n" for i in range(50)))
    corpus = load_corpus(DataConfig(dataset_name=str(tmp_path / "ds")))
    assert corpus.splits["val"].startswith("validation line 0\nvalidation line 1\n")
    assert "test line 49" in corpus.splits["test"] and "test" not in corpus.splits["train"]


def test_join_rows_tells_lines_from_documents():
    assert _join_rows([" = Title = \n", "", " Text .\n"]) == " = Title = \n Text .\n"  # WikiText
    assert _join_rows(["first doc\nline two", "second doc\nmore"]) == f"first doc\nline two{EOS_TOKEN}second doc\nmore"
    assert _join_rows(["a line", "another"]) == "a line\nanother"


def test_batch_sampler_windows_state_and_ranks():
    tokens = np.arange(1000, dtype=np.uint16)
    sampler = BatchSampler(tokens, 4, 16, seed=3)
    x, y = sampler.next_batch()
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y[:, 0], x[:, 0] + 1)  # contiguous windows
    state = sampler.state_dict()
    ahead = [sampler.next_batch()[0] for _ in range(3)]
    sampler.load_state_dict(state)
    assert all(torch.equal(a, sampler.next_batch()[0]) for a in ahead)

    whole = BatchSampler(tokens, 4, 16, seed=9, world_size=1).next_batch()[0]
    halves = [BatchSampler(tokens, 2, 16, seed=9, rank=r, world_size=2).next_batch()[0] for r in (0, 1)]
    assert torch.equal(torch.cat(halves), whole)  # ranks split one global batch between them


def test_eval_starts_cover_the_split_evenly():
    starts = eval_starts(1000, 64, 8)
    assert len(starts) == 8 and starts[0] == 0 and starts[-1] == 1000 - 65
    assert len(eval_starts(70, 64, 50)) == 6 and len(eval_starts(60, 64, 5)) == 0
