"""Reading back what a Pilot-driven app shows: the screen as plain text, exactly the cells a
terminal would get (after layout, clipping and markup handling), and hostile strings."""

from __future__ import annotations

# Strings that Rich/Textual markup would eat or act on, unbalanced brackets that once crashed the
# app, and a terminal escape sequence: data holding any of them must show as typed.
HOSTILE_TEXTS = (
    "[b]", "[/]", "[/x]", "[link=https://example.com]x", "[@click=app.quit]q", "[bold red]loud[/bold red]",
    "[’e’UeZsiPn,", "unbalanced [ and ]", "\x1b[31mred\x1b[0m",
)  # fmt: skip
# A run or study name may not hold '/' or control characters (check_run_name): the rest of them.
HOSTILE_NAME = "[b]x [@click=app.quit]q [link=e.com]l [’e’U"


def screen_text(app) -> str:
    """The current screen as lines of text, one per terminal row."""
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(segment.text for segment in strip) for strip in strips)


def shown(text: str) -> str:
    """How ``text`` should read on screen: an escape character is shown as \\x1b, never sent."""
    return text.replace("\x1b", "\\x1b")
