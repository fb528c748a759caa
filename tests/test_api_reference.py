"""docs/API_REFERENCE.md runs as written: every ```python block, section by section.

The blocks of one ``## `` section share a namespace and run top to bottom in a fresh temporary
working directory, the way a notebook user would paste them. Code is compiled with the
markdown file's line numbers, so a failure points at the line of the document that broke.
A second test checks that every name ``gpt2core`` exports is documented there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import gpt2core

DOC = Path(__file__).resolve().parents[1] / "docs" / "API_REFERENCE.md"
FENCE = re.compile(r"^(`{3,})\s*([\w+-]*)")


@dataclass
class Block:
    line: int  # 1-based line of the block's first code line in the document
    code: str


@dataclass
class Section:
    title: str
    line: int
    blocks: list[Block] = field(default_factory=list)


def read_sections(text: str) -> list[Section]:
    """``## `` sections (headings inside code fences do not count) with their python blocks."""
    sections: list[Section] = []
    fence: str | None = None  # the backticks that opened the current block
    lang = ""
    start = 0
    lines: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if fence is None:
            match = FENCE.match(line)
            if match:
                fence, lang, start, lines = match.group(1), match.group(2).lower(), number + 1, []
            elif line.startswith("## "):
                sections.append(Section(line[3:].strip(), number))
            continue
        if line.strip() == fence:
            if lang == "python":
                if not sections:
                    raise AssertionError(f"API_REFERENCE.md:{start}: python block before the first ## section")
                sections[-1].blocks.append(Block(start, "\n".join(lines) + "\n"))
            fence = None
        else:
            lines.append(line)
    if fence is not None:
        raise AssertionError(f"API_REFERENCE.md:{start}: code block never closed")
    return sections


SECTIONS = [s for s in read_sections(DOC.read_text(encoding="utf-8")) if s.blocks]


def test_reference_has_runnable_sections():
    # A parser that silently found nothing would make the test below pass vacuously.
    titles = [s.title for s in SECTIONS]
    assert len(SECTIONS) >= 10, titles
    assert sum(len(s.blocks) for s in SECTIONS) >= 40


@pytest.mark.parametrize("section", SECTIONS, ids=[re.sub(r"\W+", "-", s.title).strip("-").lower() for s in SECTIONS])
def test_section_examples_run(section: Section, tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GPT2TUI_CACHE_DIR", str(tmp_path / ".cache"))  # not the user's token cache
    namespace: dict = {"__name__": "__api_reference__"}
    for block in section.blocks:
        # Leading newlines make the traceback's line numbers the document's.
        code = compile("\n" * (block.line - 1) + block.code, str(DOC), "exec")
        exec(code, namespace)


def test_every_export_is_documented():
    text = DOC.read_text(encoding="utf-8")
    missing = [name for name in gpt2core.__all__ if f"`{name}" not in text]
    assert not missing, f"exported by gpt2core but not in docs/API_REFERENCE.md: {missing}"
