"""Corpora -> token memmaps -> batches.

A corpus is read (the built-in one, local files, or a Hugging Face dataset), split into train /
validation / test text, tokenised once and cached as flat token files::

    <cache_dir>/tokenizers/<key>/tokenizer.json       a bpe/char tokenizer learned from a corpus
    <cache_dir>/tokens/<key>/{train,val,test}.bin     token ids, uint16 (or uint32 for big vocabularies)
    <cache_dir>/tokens/<key>/meta.json                counts, bytes, dtype, corpus and tokenizer
    <cache_dir>/tokens/<key>/tokenizer.json           the tokenizer these ids belong to

The token key hashes the corpus text and the tokenizer's JSON, so a changed file or another
tokenizer gets its own entry and an unchanged one is reused. Entries are written into a
temporary directory and renamed into place, so concurrent runs (search workers) never read half
of one. Batches are random contiguous windows drawn by ``BatchSampler`` from its own
``torch.Generator``, whose state goes into every checkpoint.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import json
import math
import os
import sys
import sysconfig
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from gpt2core.atomic import atomic_dir, write_file_atomic
from gpt2core.config import DataConfig
from gpt2core.errors import DataError
from gpt2core.process import name_this_thread
from gpt2core.tokenizer import EOS_TOKEN, TOKENIZER_FILE, Tokenizer, build_tokenizer

SPLITS = ("train", "val", "test")
BUILTIN_DESCRIPTION = "Python's own documentation (the language reference topics and the standard library's docstrings)"
_SNIFF_BYTES = 8192  # how much of a file is checked for NUL bytes before it is read as text
_ENCODE_CHUNK_CHARS = 1 << 16  # texts are encoded in pieces this big so the Rust side can use every core
_ENCODE_GROUP = 64  # pieces per encode_batch call: ~4 MB of text in flight, so a signal waits for at most one group
_MIN_DOCSTRING_CHARS = 200  # shorter docstrings are mostly one-line summaries, not prose
_CACHE_FORMAT = 1  # bump when the token files' layout changes, so old entries are not misread


# -- reading corpora --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusText:
    """A corpus as text, already split. ``fingerprint`` changes whenever the text does."""

    description: str
    splits: dict[str, str]  # "train" / "val" / "test" -> text (documents separated by EOS_TOKEN)
    fingerprint: str
    files: tuple[dict, ...] = ()  # local files read: absolute path, size and sha256 of the text (file_record)


def file_record(path: Path, text: str) -> dict:
    """What a checkpoint remembers of one corpus file, so a resume can say what changed."""
    return {
        "path": str(path.expanduser().resolve()),
        "bytes": len(text.encode("utf-8", errors="surrogatepass")),
        "sha256": hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest(),
    }


def builtin_documents(cache_dir: Path | None = None) -> list[str]:
    """The built-in corpus, as documents: every topic of the Python language reference that
    pydoc shows (``pydoc_data.topics``), then every docstring of 200 characters or more in the
    standard library's top-level modules (read with ``ast``; nothing is imported).

    About 1.15 MB of English technical prose with code examples (on Python 3.11), present in
    every CPython installation, so a fresh machine trains with no network and no download. The
    list is cached under ``cache_dir`` per Python installation, since reading it takes seconds.
    """
    try:
        from pydoc_data import topics as topics_module
    except ImportError:
        raise DataError(
            "the built-in corpus comes from Python's pydoc_data module, which this Python installation lacks; "
            "train on your own text with --data PATH"
        ) from None
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    key = _fingerprint(f"builtin-v{_CACHE_FORMAT}", sys.version, str(stdlib), str(os.path.getmtime(topics_module.__file__)))[:16]
    cached = cache_dir / "corpus" / f"builtin-{key}.json" if cache_dir is not None else None
    if cached is not None and cached.exists():
        try:
            return json.loads(cached.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass  # a damaged cache file is rebuilt below
    documents = [topics_module.topics[name] for name in sorted(topics_module.topics)]
    seen: set[str] = set()
    for path in sorted(stdlib.glob("*.py")):
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= _MIN_DOCSTRING_CHARS and doc not in seen:
                    seen.add(doc)
                    documents.append(doc)
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            write_file_atomic(cached, json.dumps(documents))
        except OSError:
            pass  # an unwritable cache only costs the next run the reading time
    return documents


def _split_documents(documents: Sequence[str], val_fraction: float, test_fraction: float) -> dict[str, str]:
    """Whole documents to each split, spread through the corpus by a golden-ratio sequence so
    validation and test look like training (not just its last topics); EOS between documents."""
    parts: dict[str, list[str]] = {s: [] for s in SPLITS}
    for i, doc in enumerate(documents):
        u = (i * 0.6180339887498949) % 1.0
        split = "val" if u < val_fraction else ("test" if u < val_fraction + test_fraction else "train")
        parts[split].append(doc)
    return {s: EOS_TOKEN.join(docs) for s, docs in parts.items()}


def expand_data_paths(specs: Sequence[str]) -> list[Path]:
    """Files named by --data values: files, directories (every non-hidden file inside, recursively)
    and glob patterns; in a stable order, each file once."""
    files: list[Path] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            inside = sorted(
                p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not inside:
                raise DataError(f"--data {spec}: the directory holds no files")
            files.extend(inside)
        elif glob.has_magic(spec):
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(spec), recursive=True))
            matched_files = [m for m in matches if m.is_file()]
            for m in matches:
                if m.is_dir():
                    matched_files.extend(expand_data_paths([str(m)]))
            if not matched_files:
                raise DataError(f"--data {spec!r} matches no files")
            files.extend(matched_files)
        elif path.exists():  # a FIFO would hang the reader, a device like /dev/zero never ends
            raise DataError(f"--data {spec}: not a regular file (a text file, a directory of them, or a glob)")
        else:
            raise DataError(f"--data {spec}: no such file or directory")
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def read_text_file(path: Path) -> str:
    """A file's text, or a DataError for binary or non-UTF-8 files."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if b"\x00" in raw[:_SNIFF_BYTES]:
        raise DataError(f"{path} looks binary (it contains NUL bytes); --data takes UTF-8 text files")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (bad byte at offset {exc.start}); convert it or leave it out") from None


@contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """Make datasets and huggingface_hub use only the local cache while the block runs."""
    import datasets.config
    import huggingface_hub.constants as hub_constants

    saved = datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    if offline:
        datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def _load_dataset_dict(name: str, config_name: str | None):
    import datasets

    datasets.logging.set_verbosity_error()  # "using the cached version" warnings are noise on a terminal
    datasets.disable_progress_bars()
    if Path(name).expanduser().exists():  # a local dataset directory or data file: no hub involved
        try:
            return datasets.load_dataset(str(Path(name).expanduser()), config_name)
        except Exception as exc:
            raise DataError(f"cannot read the dataset at {name}: {type(exc).__name__}: {exc}") from None
    from gpt2core.hub import from_cache_or_hub

    def load(local_only: bool):
        with _hub_offline(local_only):
            return datasets.load_dataset(name, config_name)

    what = f"the dataset {name!r}" + (f" ({config_name})" if config_name else "")
    return from_cache_or_hub(load, what, "train on local text with --data PATH, or on the built-in corpus (no --data at all)")


_VAL_NAMES = ("validation", "valid", "val", "dev")


def _join_rows(rows: Sequence[str]) -> str:
    """One text from a dataset column. Rows that end in newlines are lines of running text
    (WikiText): joined as they are. Rows with newlines inside are documents: joined with the
    end-of-text token between them. Anything else is a line per row: joined with newlines."""
    non_empty = [r for r in rows if r]
    if non_empty and sum(r.endswith("\n") for r in non_empty) >= 0.9 * len(non_empty):
        return "".join(rows)
    if any("\n" in r for r in non_empty):
        return EOS_TOKEN.join(non_empty)
    return "\n".join(rows)


def _carve(text: str, val_fraction: float, test_fraction: float) -> dict[str, str]:
    """Split one text into train / val / test at line breaks near the requested fractions
    (validation and test are the last parts, so they never overlap training text)."""

    def cut(at: float) -> int:
        position = int(len(text) * at)
        newline = text.find("\n", position)
        return newline + 1 if 0 <= newline < position + 2000 else position

    a, b = cut(1.0 - val_fraction - test_fraction), cut(1.0 - test_fraction)
    return {"train": text[:a], "val": text[a:b], "test": text[b:]}


def _fingerprint(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8", errors="surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()


def load_corpus(cfg: DataConfig) -> CorpusText:
    """Read the corpus ``cfg`` names and split it (DataError / HubUnavailableError on bad input)."""
    if cfg.source == "builtin":
        description = f"built-in corpus: {BUILTIN_DESCRIPTION}"
        splits = _split_documents(builtin_documents(cache_root(cfg)), cfg.val_fraction, cfg.test_fraction)
    elif cfg.source == "files":
        files = expand_data_paths(cfg.data)
        texts = [read_text_file(f) for f in files]
        records = tuple(file_record(f, t) for f, t in zip(files, texts))
        text = EOS_TOKEN.join(t for t in texts if t.strip())
        description = f"{len(files)} file(s): {', '.join(str(f) for f in files[:3])}{' ...' if len(files) > 3 else ''}"
        splits = _carve(text, cfg.val_fraction, cfg.test_fraction)
    else:
        dataset = _load_dataset_dict(cfg.dataset_name, cfg.dataset_config)
        split_names = list(dataset.keys())
        if "train" not in dataset:
            raise DataError(f"dataset {cfg.dataset_name!r} has no 'train' split (it has: {', '.join(split_names)})")
        columns = dataset["train"].column_names
        if cfg.text_column not in columns:
            raise DataError(
                f"dataset {cfg.dataset_name!r} has no column {cfg.text_column!r}; pick one of {', '.join(columns)} "
                "with text_column in a --config file"
            )
        # The column straight from Arrow: datasets' row-by-row formatting took 0.36 s for tiny
        # shakespeare's 89k lines on every start (the Arrow read: 4 ms), the same Python strings.
        texts = {name: _join_rows(dataset[name].with_format("arrow")[cfg.text_column].to_pylist()) for name in split_names}
        val_name = next((n for n in _VAL_NAMES if n in dataset), None)
        if val_name and "test" in dataset:
            splits = {"train": texts["train"], "val": texts[val_name], "test": texts["test"]}
        else:
            carved = _carve(texts["train"], cfg.val_fraction, cfg.test_fraction)
            splits = {
                "train": carved["train"],
                "val": texts[val_name] if val_name else carved["val"],
                "test": texts["test"] if "test" in dataset else carved["test"],
            }
        description = f"Hugging Face dataset {cfg.dataset_name}" + (f" ({cfg.dataset_config})" if cfg.dataset_config else "")
    if not splits["train"].strip():
        raise DataError(f"the corpus is empty ({description}); give text with --data PATH")
    fingerprint = _fingerprint(f"corpus-v{_CACHE_FORMAT}", *(splits[s] for s in SPLITS))
    return CorpusText(description, splits, fingerprint, records if cfg.source == "files" else ())


def corpus_changes(recorded: dict, corpus: CorpusText) -> list[str]:
    """What differs between the corpus a checkpoint recorded (its ``data`` info) and ``corpus``
    as it reads now, in words; empty when they are the same text. A checkpoint from before
    fingerprints were recorded has nothing to compare and yields no changes."""
    before = recorded.get("corpus_fingerprint") if isinstance(recorded, dict) else None
    if not isinstance(before, str) or not before or before == corpus.fingerprint:
        return []
    old = {f.get("path"): f for f in recorded.get("files") or [] if isinstance(f, dict)}
    new = {f["path"]: f for f in corpus.files}
    changes = [f"{path} is gone" for path in old if path not in new]
    changes += [f"{path} is new" for path in new if path not in old]
    for path in (p for p in new if p in old):
        if new[path]["sha256"] != old[path].get("sha256"):
            changes.append(f"{path} changed ({old[path].get('bytes')} -> {new[path]['bytes']} bytes)")
    return changes or [f"the corpus text differs ({corpus.description})"]


def check_corpus_unchanged(recorded: dict, corpus: CorpusText, *, allow_change: bool = False) -> list[str]:
    """Refuse (DataError) to resume on a corpus other than the one the checkpoint trained on:
    its val loss would be compared with a best from other text. With ``allow_change`` the
    changes are returned for the caller to show, and the resume goes on. ``corpus`` is the one
    the run then tokenises (prepare_data's ``corpus``), so the text is read once."""
    changes = corpus_changes(recorded, corpus)
    if changes and not allow_change:
        shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
        raise DataError(
            f"the training data changed since this checkpoint was saved: {shown}; "
            "resume on it anyway with --allow-data-change (val losses then compare across corpora)"
        )
    return changes


# -- tokenising and caching -----------------------------------------------------------------------


@dataclass
class PreparedData:
    """A tokenised corpus: memory-mapped token arrays per split, and the tokenizer they use."""

    tokenizer: Tokenizer
    splits: dict[str, np.ndarray]  # "train" / "val" / "test" -> 1-D token ids (np.memmap)
    split_bytes: dict[str, int]  # UTF-8 bytes of each split's text, for bits per byte
    description: str
    cache_path: Path
    unigram_loss: float  # val cross-entropy of a model that only knows training token frequencies
    reused: bool  # True when the token files came from the cache
    corpus_fingerprint: str = ""  # CorpusText.fingerprint: changes whenever any split's text does
    files: tuple[dict, ...] = ()  # CorpusText.files: the local files read, for saying what changed

    def info(self) -> dict:
        """What a checkpoint records about its data."""
        return {
            "description": self.description,
            "cache": str(self.cache_path),
            "tokens": {s: int(len(a)) for s, a in self.splits.items()},
            "bytes": dict(self.split_bytes),
            "unigram_loss": self.unigram_loss,
            "corpus_fingerprint": self.corpus_fingerprint,
            "files": [dict(f) for f in self.files],
        }

    def require(self, split: str, min_tokens: int) -> np.ndarray:
        return _require_tokens(self.splits[split], split, min_tokens)


def _require_tokens(tokens: np.ndarray, split: str, min_tokens: int) -> np.ndarray:
    if len(tokens) < min_tokens:
        raise DataError(
            f"the {split} split has {len(tokens)} tokens, fewer than one context window plus one ({min_tokens}); "
            "use a longer corpus or a smaller --context-length"
        )
    return tokens


def cache_root(cfg: DataConfig) -> Path:
    """cache_dir, else $GPT2TUI_CACHE_DIR, else $XDG_CACHE_HOME/gpt2tui, else ~/.cache/gpt2tui."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    if os.environ.get("GPT2TUI_CACHE_DIR"):
        return Path(os.environ["GPT2TUI_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gpt2tui"


def learn_tokenizer(corpus: CorpusText, kind: str, vocab_size: int | None, cache_dir: Path) -> Tokenizer:
    """The tokenizer of ``kind`` for this corpus: loaded for gpt2, learned from the training
    text (and cached) for bpe and char."""
    if kind not in ("bpe", "char"):  # gpt2 or a tokenizer directory: loaded, never learned
        return build_tokenizer(kind)
    vocab = vocab_size if kind == "bpe" else None
    key = _fingerprint(corpus.fingerprint, kind, str(vocab))[:24]
    entry = cache_dir / "tokenizers" / key
    if (entry / TOKENIZER_FILE).exists():
        return Tokenizer.load(entry, {"kind": kind})
    tokenizer = run_interruptibly(lambda: build_tokenizer(kind, _chunks(corpus.splits["train"]), vocab_size=vocab))
    try:
        with atomic_dir(entry) as tmp:
            tokenizer.save(tmp)
    except OSError:
        pass  # an unwritable cache only costs the next run the learning time
    return tokenizer


_T = TypeVar("_T")
TOKENIZER_THREAD = "gpt2tui-tokens"  # the OS name of the thread that learns a tokenizer
_SIGNAL_POLL_S = 0.05  # how often the main thread looks up from a long Rust call to run signal handlers


def run_interruptibly(work: Callable[[], _T]) -> _T:
    """``work()``, in a way that lets a signal handler interrupt it at once.

    Python runs signal handlers only in the main thread and only between bytecodes, so a long
    call into Rust (learning a BPE vocabulary takes minutes on a big corpus) would hold a
    Ctrl-C or SIGTERM back until it returns. Here the call runs in a daemon thread (the
    tokenizers library releases the GIL while it learns) and the main thread waits in short
    joins, where handlers run: a handler that raises (KeyboardInterrupt before training starts)
    leaves this function at once, the result is never used or cached, and the daemon thread
    ends with the process. Off the main thread (the console's workers) it simply calls ``work``.
    """
    if threading.current_thread() is not threading.main_thread():
        return work()
    outcome: dict[str, object] = {}

    def target() -> None:
        name_this_thread(TOKENIZER_THREAD)  # visible in top -H (and to the tests that signal it)
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the main thread, which raises it
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="gpt2tui-tokenizer", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(_SIGNAL_POLL_S)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def _chunks(text: str, size: int = _ENCODE_CHUNK_CHARS) -> list[str]:
    """Pieces of about ``size`` characters, cut after a newline where one is near."""
    pieces, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            newline = text.rfind("\n", start + size // 2, end)
            end = newline + 1 if newline >= 0 else end
        pieces.append(text[start:end])
        start = end
    return pieces


def _token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def _unigram_loss(train: np.ndarray, val: np.ndarray, vocab_size: int) -> float:
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64) + 1.0  # add-one: unseen val tokens stay finite
    log_probs = np.log(counts / counts.sum())
    return float(-log_probs[val].mean()) if len(val) else math.nan


def prepare_data(cfg: DataConfig, *, tokenizer: Tokenizer | None = None, corpus: CorpusText | None = None) -> PreparedData:
    """Token arrays for every split of ``cfg``'s corpus, from the cache or tokenised now.

    ``tokenizer`` (a resumed run's, an evaluated checkpoint's) is used as given; without one,
    ``cfg.tokenizer`` (which must be resolved, not None) is loaded or learned.
    """
    corpus = corpus or load_corpus(cfg)
    cache_dir = cache_root(cfg)
    if tokenizer is None:
        if cfg.tokenizer is None:
            raise DataError("no tokenizer kind given; choose --tokenizer gpt2, bpe or char")
        tokenizer = learn_tokenizer(corpus, cfg.tokenizer, cfg.vocab_size, cache_dir)
    key = _fingerprint(corpus.fingerprint, tokenizer.backend.to_str())[:24]
    entry = cache_dir / "tokens" / key
    reused = (entry / "meta.json").exists()
    if not reused:
        try:
            with atomic_dir(entry) as tmp:
                _write_token_files(tmp, corpus, tokenizer)
        except OSError as exc:
            raise DataError(f"cannot write the token cache under {cache_dir}: {exc.strerror or exc}; choose another with --cache-dir") from None
    try:
        meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        dtype = np.dtype(meta["dtype"])
        splits = {
            s: (np.memmap(entry / f"{s}.bin", dtype=dtype, mode="r") if meta["tokens"][s] else np.zeros(0, dtype=dtype))
            for s in SPLITS
        }
        split_bytes = {s: int(meta["bytes"][s]) for s in SPLITS}
        unigram_loss = float(meta["unigram_loss"])
    except (OSError, ValueError, TypeError, KeyError) as exc:  # entries go in whole, so this one was altered afterwards
        raise DataError(f"cannot read the token cache entry {entry} ({type(exc).__name__}: {exc}); delete it and it is rebuilt") from None
    return PreparedData(
        tokenizer=tokenizer,
        splits=splits,
        split_bytes=split_bytes,
        description=corpus.description,
        cache_path=entry,
        unigram_loss=unigram_loss,
        reused=reused,
        corpus_fingerprint=corpus.fingerprint,
        files=corpus.files,
    )


def _write_token_files(directory: Path, corpus: CorpusText, tokenizer: Tokenizer) -> None:
    """Encode each split in groups of chunks and append them to its file, so a corpus of
    hundreds of millions of tokens never sits in memory as Python integers."""
    dtype = _token_dtype(tokenizer.vocab_size)
    counts = {}
    for split in SPLITS:
        chunks = _chunks(corpus.splits[split])
        counts[split] = 0
        with open(directory / f"{split}.bin", "wb") as out:
            for i in range(0, len(chunks), _ENCODE_GROUP):
                for ids in tokenizer.encode_batch(chunks[i : i + _ENCODE_GROUP]):
                    array = np.asarray(ids, dtype=dtype)
                    out.write(array.tobytes())  # not tofile: its short write on a full disk says only "N requested and M written", no errno
                    counts[split] += len(array)
    tokenizer.save(directory)
    read = lambda split: np.fromfile(directory / f"{split}.bin", dtype=dtype)  # noqa: E731
    meta = {
        "format": _CACHE_FORMAT,
        "dtype": dtype.name,
        "description": corpus.description,
        "corpus_fingerprint": corpus.fingerprint,
        "tokenizer": tokenizer.spec(),
        "tokens": counts,
        "bytes": {s: len(corpus.splits[s].encode("utf-8", errors="surrogatepass")) for s in SPLITS},
        "unigram_loss": _unigram_loss(read("train"), read("val"), tokenizer.vocab_size),
    }
    (directory / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


# -- batches ----------------------------------------------------------------------------------------


class BatchSampler:
    """Random contiguous windows of one split: ``next_batch()`` -> (x, y), each (B, T) int64.

    Window starts come from a private ``torch.Generator`` (never the global RNG), so the batch
    sequence is a function of the seed and the number of batches drawn, and ``state_dict`` /
    ``load_state_dict`` carry it across a resume. With ``world_size`` > 1 every rank draws the
    same global batch of ``batch_size * world_size`` windows and keeps its own slice, so ranks
    see different data and the generator state is the same on all of them.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        batch_size: int,
        context_length: int,
        *,
        seed: int,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
    ):
        self.tokens = _require_tokens(tokens, "training", context_length + 1)
        self.batch_size = batch_size
        self.context_length = context_length
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)
        self.batches_drawn = 0
        self._window = np.arange(context_length + 1, dtype=np.int64)  # (T+1,) offsets inside a window
        self._pin = self.device.type == "cuda"

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = self.batch_size, self.context_length
        starts = torch.randint(0, len(self.tokens) - T, (B * self.world_size,), generator=self.generator)
        starts = starts[self.rank * B : (self.rank + 1) * B].numpy()
        windows = self.tokens[starts[:, None] + self._window]  # (B, T+1), one vectorised gather from the memmap
        x = torch.from_numpy(np.ascontiguousarray(windows[:, :-1], dtype=np.int64))  # (B, T)
        y = torch.from_numpy(np.ascontiguousarray(windows[:, 1:], dtype=np.int64))  # (B, T)
        self.batches_drawn += 1
        if self._pin:
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device), y.to(self.device)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "batches_drawn": self.batches_drawn}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.batches_drawn = int(state["batches_drawn"])


def eval_starts(num_tokens: int, context_length: int, count: int) -> np.ndarray:
    """``count`` window starts spread evenly over a split (fewer when it is short): the same
    windows at every evaluation, so successive val losses compare like with like."""
    last = num_tokens - context_length - 1
    if last < 0:
        return np.zeros(0, dtype=np.int64)
    count = max(1, min(count, last + 1))
    return np.unique(np.linspace(0, last, count).round().astype(np.int64))
