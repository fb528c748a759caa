"""The exceptions gpt2core raises for problems the user can fix.

Every user-facing failure (a bad config, a corrupt checkpoint, an empty corpus) is a
``GPT2Error`` whose message is one complete sentence: the CLI prints it as a one-line error
with no traceback, and the app shows it as a notification. Anything that is *not* a
GPT2Error is a bug in gpt2tui and keeps its traceback.
"""

from __future__ import annotations


class GPT2Error(Exception):
    """Base class: a problem the user can fix, with a message that says how."""


class ConfigError(GPT2Error, ValueError):
    """An impossible or out-of-range configuration value."""


class CheckpointError(GPT2Error):
    """A checkpoint that is missing, incomplete, corrupt, too new or does not fit."""


class TokenizerError(GPT2Error):
    """A tokenizer that cannot be built, loaded or used."""


class DataError(GPT2Error):
    """A corpus that is missing, empty, unreadable or too short."""


class HubUnavailableError(GPT2Error):
    """Something on the Hugging Face hub was asked for and could not be reached."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (a library's, e.g. SQLAlchemy's, runs to
    paragraphs), at most ``limit`` characters; the exception's type name when it has none."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__
