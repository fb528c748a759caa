"""The chat's model source: a dropdown of the checkpoints found, a field to type any source,
and one status line saying what is loaded.

The widget only shows and asks; the chat screen loads. It always names the model that is
loaded: after a load by typing, the dropdown shows that source too (added as an option when
it is not one of the listed checkpoints), so the two never disagree. Every label is a
rich ``Text``: run names and paths are data, never markup.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, Select, Static

from gpt2tui.text_safety import as_text, printable

NOTHING_LOADED = "No model loaded."


def same_source(a: str, b: str) -> bool:
    """Two ways of naming one checkpoint folder ('checkpoints/x/best' and its absolute path)."""
    if a == b:
        return True
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except (OSError, RuntimeError):
        return False


def checkpoint_options(root: Path) -> list[tuple[str, str]]:
    """(label, checkpoint folder) for each run under ``root``, newest run first: its best and
    its latest step. Imports torch (via the checkpoint store): call it in a worker."""
    from gpt2core.checkpoint import CheckpointStore

    runs = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True) if root.is_dir() else []
    options = []
    for run in runs:
        store = CheckpointStore(run, cleanup=False)
        if store.best() is not None:
            options.append((f"{run.name} · best", str(store.best())))
        steps = store.steps()
        if steps:
            options.append((f"{run.name} · step {steps[-1][0]}", str(steps[-1][1])))
    return options


class ModelPicker(Vertical):
    @dataclass
    class Chosen(Message):
        """The user picked a checkpoint from the list or typed a source and pressed enter."""

        source: str

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.options: list[tuple[str, str]] = []  # (label, source) as listed
        self.loaded_source: str | None = None
        self.loaded_path: str | None = None  # the checkpoint folder a run name or run folder resolved to
        self.loaded_description = ""

    def compose(self) -> ComposeResult:
        with Horizontal(id="chat-source"):
            yield Select([], prompt="checkpoints…", id="checkpoint-list", compact=True)
            yield Input(placeholder="ctrl+o: checkpoint, run, latest, HF dir", id="model-path", compact=True)
        yield Static(NOTHING_LOADED, id="model-status", markup=False)

    @property
    def select(self) -> Select:
        return self.query_one("#checkpoint-list", Select)

    @property
    def path_input(self) -> Input:
        return self.query_one("#model-path", Input)

    def set_options(self, options: list[tuple[str, str]]) -> None:
        self.options = list(options)
        self._refresh_options()

    def _refresh_options(self) -> None:
        listed = [(as_text(label), source) for label, source in self.options]
        loaded = self.loaded_source
        names = [name for name in (loaded, self.loaded_path) if name]
        match = next((source for _, source in self.options if any(same_source(source, name) for name in names)), None)
        if loaded and match is None:  # typed: not one of the checkpoints found, so list it first
            listed.insert(0, (as_text(f"{loaded} · typed"), loaded))
            match = loaded
        with self.prevent(Select.Changed):  # showing what is loaded must not load it again
            self.select.set_options(listed)
            if match is not None:
                self.select.value = match

    def show_loading(self, source: str) -> None:
        self.path_input.value = source
        self.query_one("#model-status", Static).update(printable(f"Loading {source}…"))

    def show_loaded(self, source: str, description: str, path: str | None = None) -> None:
        """``path``: the checkpoint folder ``source`` resolved to, when it names one."""
        self.loaded_source, self.loaded_path, self.loaded_description = source, path, description
        self.query_one("#model-status", Static).update(printable(description))
        self._refresh_options()

    def show_status(self, text: str | None = None) -> None:
        """After a failed load: back to what is loaded (or ``text``)."""
        self.query_one("#model-status", Static).update(printable(text or self.loaded_description or NOTHING_LOADED))
        self._refresh_options()  # a failed pick must not stay shown as if it were loaded

    def focus_path(self) -> None:
        """ctrl+o: the field with its text selected, so typing replaces an old (failed) path."""
        field = self.path_input
        # set_focus now, not focus() (deferred): keys already queued behind ctrl+o (a busy CPU
        # delivers them together) must land in this field, not in the prompt.
        self.screen.set_focus(field)
        field.select_all()

    @on(Select.Changed, "#checkpoint-list")
    def _picked(self, event: Select.Changed) -> None:
        event.stop()
        shown = [name for name in (self.loaded_source, self.loaded_path) if name]
        if isinstance(event.value, str) and not any(same_source(event.value, name) for name in shown):
            self.post_message(self.Chosen(event.value))

    @on(Input.Submitted, "#model-path")
    def _typed(self, event: Input.Submitted) -> None:
        event.stop()
        if event.value.strip():
            self.post_message(self.Chosen(event.value.strip()))
