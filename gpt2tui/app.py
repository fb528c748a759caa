"""The Textual console: three modes (runs, trials, chat), global keys, the command palette.

Thin on purpose: each screen lives in screens/, each widget in gpt2tui/widgets/, styling in
app.tcss. Start-up imports neither torch nor optuna: the runs screen lists directories, and
the chat and trials screens load their libraries in workers when first used.
"""

from __future__ import annotations

import asyncio
import signal
from functools import partial
from typing import Iterable

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

MODE_TITLES = {"runs": "Runs and dashboard", "trials": "Optuna trials", "chat": "Chat"}


def _runs_screen() -> Screen:
    from screens.runs import RunsScreen

    return RunsScreen()


def _trials_screen() -> Screen:
    from screens.trials import TrialsScreen

    return TrialsScreen()


def _chat_screen() -> Screen:
    from screens.chat import ChatScreen

    return ChatScreen()


class GPT2App(App[None]):
    TITLE = "gpt2tui"
    CSS_PATH = "app.tcss"
    MODES = {"runs": _runs_screen, "trials": _trials_screen, "chat": _chat_screen}
    DEFAULT_MODE = "runs"
    BINDINGS = [
        Binding("f1,question_mark", "help", "Help", tooltip="This list of keys"),
        Binding("f2,1", "switch_mode('runs')", "Runs", tooltip="Runs and the live dashboard"),
        Binding("f3,2", "switch_mode('trials')", "Trials", tooltip="Optuna studies and trials"),
        Binding("f4,3", "switch_mode('chat')", "Chat", tooltip="Chat with a checkpoint"),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True, tooltip="Quit (runs started here keep going)"),
    ]

    def __init__(self, *, runs_dir: str = "runs", checkpoints_dir: str = "checkpoints", optuna_dir: str = "optuna_results"):
        super().__init__()
        self.runs_dir = runs_dir
        self.checkpoints_dir = checkpoints_dir
        self.optuna_dir = optuna_dir

    def on_mount(self) -> None:
        # Textual restores the terminal on a normal exit and on a crash; a SIGTERM (or the
        # SSH connection dropping: SIGHUP) would otherwise kill us with the terminal still in
        # raw mode and the alternate screen on. Exit through the normal path instead.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            try:
                loop.add_signal_handler(sig, partial(self.exit, return_code=128 + sig))
            except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover - not on this platform/thread
                pass

    def action_help(self) -> None:
        from screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def open_chat(self, checkpoint: str) -> None:
        """Switch to the chat and load ``checkpoint`` there (from the runs screen's c key)."""
        self.switch_mode("chat")
        self.call_after_refresh(lambda: self.screen.load_checkpoint(checkpoint))

    def help_bindings(self) -> list[tuple[str, list]]:
        """Every place that defines keys, in the order the help screen lists them."""
        from screens.chat import ChatScreen
        from screens.help import HelpScreen
        from screens.new_run import NewRunScreen
        from screens.new_study import NewStudyScreen
        from screens.runs import RunsScreen
        from screens.save_dialog import SaveDialog
        from screens.trials import TrialsScreen
        from gpt2tui.widgets.prompt_input import PromptInput
        from gpt2tui.widgets.slider import Slider

        return [
            ("everywhere", [*self.BINDINGS, Binding("ctrl+p", "command_palette", "Palette", tooltip="Command palette: every action, searchable")]),
            ("runs", RunsScreen.BINDINGS),
            ("new run form", NewRunScreen.BINDINGS),
            ("trials", TrialsScreen.BINDINGS),
            ("new study form", NewStudyScreen.BINDINGS),
            ("chat", ChatScreen.BINDINGS),
            ("chat prompt", PromptInput.BINDINGS),
            ("slider", Slider.BINDINGS),
            ("save dialog", SaveDialog.BINDINGS),
            ("help", HelpScreen.BINDINGS),
        ]

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for mode, title in MODE_TITLES.items():
            yield SystemCommand(f"Go to {title.lower()}", f"switch to the {mode} screen", partial(self.switch_mode, mode))
        yield SystemCommand("Help: all keys", "list every key binding", self.action_help)
        # Every action of the current screen, so nothing needs its key remembered.
        for binding in getattr(screen, "BINDINGS", []):
            if isinstance(binding, Binding) and binding.description:
                title = binding.tooltip or binding.description
                yield SystemCommand(title, f"key: {binding.key.split(',')[0]}", partial(screen.run_action, binding.action))


def run_app(*, runs_dir: str = "runs", checkpoints_dir: str = "checkpoints", optuna_dir: str = "optuna_results") -> None:
    """Run the console until the user quits (or SIGTERM/SIGHUP); the terminal is restored."""
    app = GPT2App(runs_dir=runs_dir, checkpoints_dir=checkpoints_dir, optuna_dir=optuna_dir)
    app.run()
    if app.return_code:
        raise SystemExit(app.return_code)
