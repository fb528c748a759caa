"""The one way gpt2tui reads a JSON file that someone else may have written.

Checkpoints, Hugging Face directories and run folders come from other people and other
processes, so their JSON files (manifest, config, trainer state, status, metrics, weight
index) are read as untrusted input:

- only a regular file is opened (a FIFO would hang the reader, ``/dev/zero`` or a symlink to
  it would fill memory); the check is made on the opened descriptor, so a file swapped for a
  symlink between a look and the open changes nothing;
- at most ``max_bytes`` are read (the callers' caps are far above any honest file);
- nesting deeper than ``MAX_DEPTH`` is refused: the standard parser recurses and raises
  RecursionError on deep input, and code that walks the result recurses too.

Every failure is an ``UnreadableJSON`` (a GPT2Error) whose message names the file and says
why; callers turn it into their own error or skip the file, one file at a time.
The standard ``json`` module does the parsing; only the opening and the limits are ours.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from gpt2core.errors import GPT2Error

MAX_DEPTH = 200  # containers inside containers; our deepest file (a packed optimizer state) nests about 10
DEFAULT_MAX_BYTES = 64 << 20  # a config, manifest or status is a few KB; a trainer state's JSON a few MB


class UnreadableJSON(GPT2Error):
    """A JSON file that is missing, not a regular file, too large, too deep or not JSON."""

    def __init__(self, message: str, *, missing: bool = False):
        super().__init__(message)
        self.missing = missing  # the file does not exist (callers often say so in their own words)


def read_regular_file(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of ``path``, which must be a regular file (symlinks followed) of at most
    ``max_bytes``; anything else is an UnreadableJSON naming the file."""
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)  # O_NONBLOCK: opening a FIFO with no writer returns at once instead of hanging
    except FileNotFoundError:
        raise UnreadableJSON(f"{path} does not exist", missing=True) from None
    except OSError as exc:
        raise UnreadableJSON(f"{path} cannot be opened: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableJSON(f"{path} is not a regular file")
        if info.st_size > max_bytes:
            raise UnreadableJSON(f"{path} is {info.st_size:,} bytes, more than the {max_bytes:,} a file of its kind may hold")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(max_bytes + 1)  # a file growing while read is capped too
    except OSError as exc:
        raise UnreadableJSON(f"{path} cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise UnreadableJSON(f"{path} is more than the {max_bytes:,} bytes a file of its kind may hold")
    return data


def parse_json(data: bytes | str, *, where: str = "the JSON text") -> Any:
    """Parse JSON text (UTF-8 bytes or str) no deeper than MAX_DEPTH; UnreadableJSON otherwise."""
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
        value = json.loads(text)
    except UnicodeDecodeError:
        raise UnreadableJSON(f"{where} is not valid JSON (not UTF-8 text)") from None
    except RecursionError:
        raise UnreadableJSON(f"{where} is not usable JSON (nested deeper than {MAX_DEPTH} levels)") from None
    except ValueError as exc:
        raise UnreadableJSON(f"{where} is not valid JSON ({exc.__class__.__name__}: {str(exc)[:80]})") from None
    # Nesting never exceeds the count of '{' and '['; that count is C-speed, the walk is not (it
    # was half the console's cost of reading a long metrics.jsonl: one call per line).
    if text.count("{") + text.count("[") > MAX_DEPTH and json_depth(value) > MAX_DEPTH:
        raise UnreadableJSON(f"{where} is not usable JSON (nested deeper than {MAX_DEPTH} levels)")
    return value


def read_json_file(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """``read_regular_file`` then ``parse_json``: the value in ``path`` or an UnreadableJSON."""
    return parse_json(read_regular_file(path, max_bytes=max_bytes), where=str(path))


def json_depth(value: Any) -> int:
    """How deeply lists and dicts nest in ``value`` (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > MAX_DEPTH:
                return deepest
        stack.extend((child, depth) for child in children)
    return deepest
