"""`--tokenizer PATH`: a local tokenizer directory, in both layouts, through real `gpt2tui train`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpt2core.errors import TokenizerError
from gpt2core.tokenizer import Tokenizer, tokenizer_from_directory, train_bpe

pytestmark = pytest.mark.timeout(240)


def train_with(tmp_path: Path, tokenizer: str, run: str = "t") -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GPT2TUI_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run(
        [sys.executable, "-m", "gpt2tui", "train", "--preset", "micro", "--tokenizer", tokenizer, "--data", "corpus.txt",
         "--max-steps", "2", "--eval-interval", "2", "--eval-iters", "1", "--batch-size", "2", "--sample-tokens", "0",
         "--device", "cpu", "--threads", "1", "--plain", "--no-tensorboard", "--run-name", run],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=200,
    )  # fmt: skip


@pytest.fixture
def project(tmp_path, sample_text):
    (tmp_path / "corpus.txt").write_text(sample_text)
    return tmp_path


@pytest.fixture(scope="module")
def learned(sample_text):
    return train_bpe([sample_text], 300)


def test_a_tokenizer_json_directory_is_used_and_copied_into_every_checkpoint(project, learned, sample_text):
    learned.save(project / "my-tokenizer")
    done = train_with(project, "my-tokenizer")
    assert done.returncode == 0, done.stderr[-2000:]
    for checkpoint in ("best", "step-00000002"):
        copied = Tokenizer.load(project / "checkpoints/t" / checkpoint)
        assert copied.backend.get_vocab() == learned.backend.get_vocab()
        assert copied.encode(sample_text[:300]) == learned.encode(sample_text[:300])
    config = json.loads((project / "runs/t/config.json").read_text())
    assert config["model"]["vocab_size"] == learned.vocab_size == 300
    assert config["data"]["tokenizer"] == "my-tokenizer"


def test_a_vocab_and_merges_directory_is_used(project, learned, sample_text):
    (project / "two-files").mkdir()
    learned.backend.model.save(str(project / "two-files"))  # writes vocab.json + merges.txt
    assert sorted(p.name for p in (project / "two-files").iterdir()) == ["merges.txt", "vocab.json"]
    loaded = tokenizer_from_directory(project / "two-files")
    assert loaded.encode(sample_text) == learned.encode(sample_text)
    done = train_with(project, "two-files")
    assert done.returncode == 0, done.stderr[-2000:]
    copied = Tokenizer.load(project / "checkpoints/t/best")
    assert copied.encode(sample_text[:300]) == learned.encode(sample_text[:300])


def test_a_tokenizer_it_cannot_decode_byte_for_byte_is_refused_in_one_line(project):
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import models, pre_tokenizers

    wordpiece = RustTokenizer(models.WordPiece({"[UNK]": 0, "<|endoftext|>": 1, "a": 2}, unk_token="[UNK]"))
    wordpiece.pre_tokenizer = pre_tokenizers.Whitespace()
    (project / "wordpiece").mkdir()
    wordpiece.save(str(project / "wordpiece" / "tokenizer.json"))
    done = train_with(project, "wordpiece")
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "WordPiece tokenizer without GPT-2's byte-level decoding" in lines[0]
    assert not (project / "checkpoints/t").exists()


def test_a_directory_without_tokenizer_files_or_a_missing_one_is_refused(project):
    (project / "empty").mkdir()
    with pytest.raises(TokenizerError, match="has no tokenizer files"):
        tokenizer_from_directory(project / "empty")
    done = train_with(project, "empty")
    assert done.returncode == 1 and done.stderr.strip().count("\n") == 0 and "has no tokenizer files" in done.stderr
    missing = train_with(project, "no-such-dir")
    assert missing.returncode == 2 and "no directory of that name exists" in missing.stderr
    assert not (project / "runs" / "t").exists() and not (project / "checkpoints" / "t").exists()
