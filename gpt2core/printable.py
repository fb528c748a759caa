"""``printable``: text from files and folder names made safe to write to a terminal.

A run folder, a checkpoint path, a status message or a tokenizer's token comes from disk, and
anyone who can write there can put terminal control sequences in it: ESC [2J clears the
screen, ESC ]0; sets the window title, and some terminals answer queries by typing into the
shell. Every place the CLI prints such text passes it through ``printable``, which shows each
control character as a visible escape (``\\x1b``), so the text is seen, never obeyed.

Escaped: C0 controls (except, when ``keep_newlines``, newline and tab), DEL, C1 controls
(U+0080-U+009F: 8-bit CSI and OSC), and the bidirectional overrides and isolates (U+202A-E,
U+2066-9) that can make a name read as something else, and lone surrogates (a folder name
that is not UTF-8 arrives as them; printing one raises UnicodeEncodeError). Everything else,
including any language's letters, passes unchanged.
"""

from __future__ import annotations

import re

# One character class for everything escaped; compiled once, applied by one substitution.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_CONTROL_AND_LINES = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for the undecodable byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, *, keep_newlines: bool = False) -> str:
    """``str(text)`` with every control character shown as ``\\xNN`` / ``\\uNNNN``.
    ``keep_newlines``: newlines and tabs stay (multi-line generated text); otherwise they are
    escaped too, so one name can never become two lines of output."""
    s = text if isinstance(text, str) else str(text)
    pattern = _CONTROL if keep_newlines else _CONTROL_AND_LINES
    return pattern.sub(_escape, s)
