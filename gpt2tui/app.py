"""The Textual console: three modes (runs, trials, chat), global keys, the command palette.

Thin on purpose: each screen lives in screens/, each widget in gpt2tui/widgets/, styling in
app.tcss. Start-up imports neither torch nor optuna: the runs screen lists directories, and
the chat and trials screens load their libraries in workers when first used.

Two rules live here so no screen can forget them: notifications are never parsed as markup
(they carry run names, paths and error text), and the command palette holds every action
of every screen (an action of another screen switches to it first).
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
MODE_NAMES = {"runs": "Runs", "trials": "Trials", "chat": "Chat"}  # the palette's prefix for another screen's action


def _runs_screen() -> Screen:
    from screens.runs import RunsScreen

    return RunsScreen()


def _trials_screen() -> Screen:
    from screens.trials import TrialsScreen

    return TrialsScreen()


def _chat_screen() -> Screen:
    from screens.chat import ChatScreen

    return ChatScreen()


def mode_screen_classes() -> dict[str, type[Screen]]:
    from screens.chat import ChatScreen
    from screens.runs import RunsScreen
    from screens.trials import TrialsScreen

    return {"runs": RunsScreen, "trials": TrialsScreen, "chat": ChatScreen}


def palette_actions(owner: type) -> list[tuple[str, str, str]]:
    """(title, action, key) of every action ``owner`` offers: its described bindings, then the
    palette-only actions in its ``PALETTE`` (title, action) list."""
    actions = []
    for binding in getattr(owner, "BINDINGS", []):
        if isinstance(binding, Binding) and binding.description:
            actions.append((binding.tooltip or binding.description, binding.action, binding.key.split(",")[0]))
    actions += [(title, action, "") for title, action in getattr(owner, "PALETTE", [])]
    return actions


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
        self.last_train_request = None  # the new-run form's last values: pressing n again starts from them

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

    def notify(self, message: str, *, title: str = "", severity="information", timeout: float | None = None, markup: bool = True) -> None:
        """Every notification as plain text, whatever the caller passed: they hold run names,
        paths, prompts and error messages, and '[b]' in a run name must show as typed (and an
        ESC in one as \\x1b, never sent to the terminal)."""
        from gpt2tui.text_safety import printable

        kwargs = {} if timeout is None else {"timeout": timeout}
        super().notify(printable(message), title=printable(title), severity=severity, markup=False, **kwargs)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The key of the screen already shown is left out of the footer (room at 80 columns)."""
        if action == "switch_mode" and parameters and parameters[0] == self.current_mode:
            return False
        return True

    def action_help(self) -> None:
        from screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_show_help_panel(self) -> None:
        """Textual's own key panel squeezes the screen; ours lists every key instead."""
        self.action_help()

    def open_chat(self, checkpoint: str) -> None:
        """Switch to the chat and load ``checkpoint`` there (from the runs screen's c key)."""
        self.switch_mode("chat")
        self.call_after_refresh(lambda: self.screen.load_checkpoint(checkpoint))

    def help_bindings(self) -> list[tuple[str, type, list]]:
        """Every place that defines keys, in the order the help screen lists them:
        (section title, the class whose actions the keys run, its bindings)."""
        from screens.compare import CompareScreen
        from screens.help import HelpScreen
        from screens.new_run import NewRunScreen
        from screens.new_study import NewStudyScreen
        from screens.save_dialog import SaveDialog
        from gpt2tui.widgets.prompt_input import PromptInput
        from gpt2tui.widgets.slider import Slider

        modes = mode_screen_classes()
        palette = Binding("ctrl+p", "command_palette", "Palette", tooltip="Command palette: every action of every screen, searchable")
        return [
            ("everywhere", type(self), [*self.BINDINGS, palette]),
            ("runs", modes["runs"], modes["runs"].BINDINGS),
            ("compare view", CompareScreen, CompareScreen.BINDINGS),
            ("new run form", NewRunScreen, NewRunScreen.BINDINGS),
            ("compare view", CompareScreen, CompareScreen.BINDINGS),
            ("trials", modes["trials"], modes["trials"].BINDINGS),
            ("new study form", NewStudyScreen, NewStudyScreen.BINDINGS),
            ("chat", modes["chat"], modes["chat"].BINDINGS),
            ("chat prompt", PromptInput, PromptInput.BINDINGS),
            ("slider (tab to it)", Slider, Slider.BINDINGS),
            ("save dialog", SaveDialog, SaveDialog.BINDINGS),
            ("help", HelpScreen, HelpScreen.BINDINGS),
        ]

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        for command in super().get_system_commands(screen):
            if command.title != "Keys":  # replaced by our help, which lists every key
                yield command
        for mode, title in MODE_TITLES.items():
            yield SystemCommand(f"Go to {title.lower()}", f"switch to the {mode} screen", partial(self.switch_mode, mode))
        yield SystemCommand("Help: all keys", "list every key binding", self.action_help)
        modes = mode_screen_classes()
        if not any(isinstance(screen, cls) for cls in modes.values()):  # a form or dialog: its own actions first
            for title, action, key in palette_actions(type(screen)):
                yield SystemCommand(title, f"key: {key}", partial(screen.run_action, action))
        for mode, cls in modes.items():
            here = isinstance(screen, cls)
            for title, action, key in palette_actions(cls):
                where = "" if here else f"{MODE_NAMES[mode]}: "
                help_text = (f"key: {key}" if key else "no key of its own") + ("" if here else f" on the {mode} screen")
                run = partial(screen.run_action, action) if here else partial(self.run_in_mode, mode, action)
                yield SystemCommand(f"{where}{title}", help_text, run)

    def run_in_mode(self, mode: str, action: str) -> None:
        """Switch to ``mode`` and run one of its screen's actions there (from the palette)."""
        self.switch_mode(mode)
        self.call_after_refresh(lambda: self.screen.run_action(action))


def run_app(*, runs_dir: str = "runs", checkpoints_dir: str = "checkpoints", optuna_dir: str = "optuna_results") -> None:
    """Run the console until the user quits (or SIGTERM/SIGHUP); the terminal is restored."""
    app = GPT2App(runs_dir=runs_dir, checkpoints_dir=checkpoints_dir, optuna_dir=optuna_dir)
    app.run()
    if app.return_code:
        raise SystemExit(app.return_code)
