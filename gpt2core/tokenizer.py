"""Tokenizers behind one small interface: GPT-2's BPE, a byte-level BPE trained locally, characters.

All three kinds are a ``tokenizers.Tokenizer`` underneath (the Rust library Hugging Face uses),
so they encode fast, save to one ``tokenizer.json`` that travels inside every checkpoint, and
export to a Hugging Face tokenizer unchanged. On top of it this module adds what generation
needs: the raw bytes of each token, so that streamed text can be decoded incrementally
without ever emitting half of a UTF-8 character.
"""

from __future__ import annotations

import codecs
import json
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as _RustTokenizer

from gpt2core.errors import HubUnavailableError, TokenizerError

EOS_TOKEN = "<|endoftext|>"
UNKNOWN_CHAR = "\ufffd"  # what the char tokenizer turns characters it never saw into
TOKENIZER_FILE = "tokenizer.json"
KINDS = ("gpt2", "bpe", "char")


@lru_cache(maxsize=1)
def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet: printable bytes stand for themselves, the other bytes are
    shifted to code points 256 and up so that every token is a printable string.
    Returns the inverse map, character -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    char_to_byte: dict[str, int] = {chr(b): b for b in printable}
    shifted = 0
    for b in range(256):
        if b not in printable:
            char_to_byte[chr(256 + shifted)] = b
            shifted += 1
    return char_to_byte


class Tokenizer:
    """encode / decode / vocab_size / eos_id / save, for every kind in ``KINDS``."""

    def __init__(self, backend: _RustTokenizer, kind: str):
        if kind not in KINDS:
            raise TokenizerError(f"unknown tokenizer kind {kind!r}; choose one of: {', '.join(KINDS)}")
        self.kind = kind
        self.backend = backend
        eos = backend.token_to_id(EOS_TOKEN)
        if eos is None:
            raise TokenizerError(f"the {kind} tokenizer has no {EOS_TOKEN} token")
        self.eos_id: int = eos
        self.vocab_size: int = backend.get_vocab_size(with_added_tokens=True)
        self._token_bytes = self._build_byte_table()

    def _build_byte_table(self) -> list[bytes]:
        special = {t.content for t in self.backend.get_added_tokens_decoder().values() if t.special}
        alphabet = _byte_level_alphabet()
        table = [b""] * self.vocab_size
        for token, index in self.backend.get_vocab(with_added_tokens=True).items():
            if self.kind == "char" or token in special:
                table[index] = token.encode("utf-8")
            else:
                table[index] = bytes(alphabet[c] for c in token)
        return table

    # -- encoding ---------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode many texts in parallel (the Rust side uses every core)."""
        return [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]

    def token_bytes(self, token_id: int) -> bytes:
        """The UTF-8 bytes a token stands for; a byte-level token may hold part of a character."""
        return self._token_bytes[token_id] if 0 <= token_id < self.vocab_size else b""

    def decode(self, ids: Iterable[int]) -> str:
        # One decoding path for whole texts and streams: join the bytes, replace invalid UTF-8.
        return b"".join(self.token_bytes(int(i)) for i in ids).decode("utf-8", errors="replace")

    def stream_decoder(self) -> "StreamDecoder":
        return StreamDecoder(self)

    # -- persistence --------------------------------------------------------------------------------
    def spec(self) -> dict:
        """What config.json records about the tokenizer."""
        return {"kind": self.kind, "file": TOKENIZER_FILE, "vocab_size": self.vocab_size, "eos_id": self.eos_id}

    def save(self, directory: str | Path) -> dict:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(directory / TOKENIZER_FILE))
        return self.spec()

    @classmethod
    def load(cls, directory: str | Path, spec: dict | None = None) -> "Tokenizer":
        """Load what ``save`` wrote; never touches the network."""
        directory = Path(directory)
        spec = spec or {}
        path = directory / spec.get("file", TOKENIZER_FILE)
        try:
            backend = _RustTokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises plain Exception for bad JSON
            raise TokenizerError(f"cannot read tokenizer file {path}: {exc}") from None
        kind = spec.get("kind") or _guess_kind(backend)
        tokenizer = cls(backend, kind)
        if "vocab_size" in spec and spec["vocab_size"] != tokenizer.vocab_size:
            raise TokenizerError(
                f"tokenizer file {path} has {tokenizer.vocab_size} tokens but its config says {spec['vocab_size']}"
            )
        return tokenizer

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"


def _guess_kind(backend: _RustTokenizer) -> str:
    model = json.loads(backend.to_str())["model"]["type"]
    return "char" if model == "WordLevel" else "bpe"


class StreamDecoder:
    """Turns token ids into text one token at a time, holding back the bytes of a character
    until it is complete, so a stream never shows a broken character."""

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        return self._utf8.decode(self._tokenizer.token_bytes(int(token_id)))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


# -- building tokenizers ----------------------------------------------------------------------------


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Learn a byte-level BPE (GPT-2's algorithm) of ``vocab_size`` tokens from ``texts``."""
    minimum = 256 + 1  # every byte, plus the end-of-text token
    if not isinstance(vocab_size, int) or vocab_size < minimum:
        raise TokenizerError(f"a byte-level BPE needs vocab_size of at least {minimum}, got {vocab_size!r}")
    backend = _RustTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: any text stays encodable
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    return Tokenizer(backend, "bpe")


def train_char(texts: Iterable[str]) -> Tokenizer:
    """A character vocabulary: end-of-text, the unknown mark, then every character seen, sorted."""
    seen: set[str] = set()
    for text in texts:
        seen.update(text)
    seen -= {UNKNOWN_CHAR}
    if not seen:
        raise TokenizerError("cannot build a character vocabulary from an empty corpus")
    vocab = {EOS_TOKEN: 0, UNKNOWN_CHAR: 1}
    for ch in sorted(seen):
        vocab[ch] = len(vocab)
    backend = _RustTokenizer(models.WordLevel(vocab, unk_token=UNKNOWN_CHAR))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one token per character
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([EOS_TOKEN])
    return Tokenizer(backend, "char")


def gpt2_tokenizer(source: str = "gpt2") -> Tokenizer:
    """OpenAI's GPT-2 BPE from a local Hugging Face directory, the local cache, or the hub."""
    from transformers import GPT2TokenizerFast  # heavy import; only this kind needs it

    from gpt2core.hub import from_cache_or_hub

    hint = "offline, use --tokenizer bpe (trained on your corpus) or --tokenizer char"
    if Path(source).is_dir():
        try:
            hf = GPT2TokenizerFast.from_pretrained(source, local_files_only=True)
        except Exception as exc:
            raise TokenizerError(f"cannot read a GPT-2 tokenizer from directory {source} ({type(exc).__name__})") from None
    else:
        hf = from_cache_or_hub(
            lambda local: GPT2TokenizerFast.from_pretrained(source, local_files_only=local),
            f"the GPT-2 tokenizer {source!r}",
            hint,
            complete=lambda hf: len(hf) > 256,  # transformers returns an empty shell when files are missing
        )
    tokenizer = Tokenizer(hf.backend_tokenizer, "gpt2")
    if tokenizer.vocab_size < 257:
        raise TokenizerError(f"the GPT-2 tokenizer from {source!r} is incomplete ({tokenizer.vocab_size} tokens); {hint}")
    return tokenizer


def build_tokenizer(kind: str, texts: Iterable[str] | None = None, vocab_size: int | None = None, source: str = "gpt2") -> Tokenizer:
    """One entry point for the CLI: ``gpt2`` loads, ``bpe`` and ``char`` learn from ``texts``."""
    if kind == "gpt2":
        return gpt2_tokenizer(source)
    if texts is None:
        raise TokenizerError(f"the {kind} tokenizer is learned from a corpus, and none was given")
    if kind == "bpe":
        return train_bpe(texts, vocab_size or 4096)
    if kind == "char":
        return train_char(texts)
    raise TokenizerError(f"unknown tokenizer kind {kind!r}; choose one of: {', '.join(KINDS)}")
