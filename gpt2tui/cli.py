"""The `gpt2tui` command: a click group whose subcommands load lazily.

`gpt2tui` alone opens the Textual console; `gpt2tui train` and the other subcommands are
headless and never import Textual. Subcommands live in gpt2tui/commands/, one module each,
and are imported only when invoked, so `gpt2tui --help` is instant and `train` stays light.

Errors: a ``GPT2Error`` (bad input the user can fix) becomes a one-line ``Error: ...`` and exit
code 1; click's usage errors exit 2. Anything else is a bug: one line naming it, and the
traceback only with ``--debug`` (or GPT2TUI_DEBUG=1).
"""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import os
import sys
import threading
from typing import Any, Callable

import click

from gpt2tui import __version__

# name -> "module:attribute"; order is the order `gpt2tui --help` lists them in.
COMMANDS: dict[str, str] = {
    "train": "gpt2tui.commands.train:train",
    "evaluate": "gpt2tui.commands.evaluate:evaluate",
    "generate": "gpt2tui.commands.generate:generate",
    "optimize": "gpt2tui.commands.optimize:optimize",
    "export": "gpt2tui.commands.export:export",
    "runs": "gpt2tui.commands.runs:runs",
}
# The original specification ran inference as its own module; keep that word working.
ALIASES: dict[str, str] = {"inference": "generate", "eval": "evaluate", "optimise": "optimize"}


class _AliasedOption(click.Option):
    """An option whose underscore aliases work but stay out of --help."""

    def __init__(self, *args: Any, hidden_aliases: tuple[str, ...] = (), **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.hidden_aliases = hidden_aliases

    def get_help_record(self, ctx: click.Context):
        shown, shown_secondary = self.opts, self.secondary_opts
        self.opts = [o for o in shown if o not in self.hidden_aliases]
        self.secondary_opts = [o for o in shown_secondary if o not in self.hidden_aliases]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts, self.secondary_opts = shown, shown_secondary


def _underscored(name: str) -> str | None:
    """'--max-steps' -> '--max_steps'; '--compile/--no-compile' -> ' /--no_compile' (click's
    spelling of a second name for the off switch only); None when nothing changes."""
    halves = name.split("/")
    converted = ["--" + h[2:].replace("-", "_") if h.startswith("--") else h for h in halves]
    if converted == halves:
        return None
    if len(halves) == 1:
        return converted[0]
    first = converted[0] if converted[0] != halves[0] else " "
    second = converted[1] if converted[1] != halves[1] else ""
    return f"{first}/{second}"


def option(*names: str, **kwargs: Any) -> Callable:
    """click.option that also accepts the specification's underscore spelling of every
    dashed long flag (`--max-steps` and `--max_steps`, `--no-compile` and `--no_compile`),
    without listing both in --help."""
    extra = tuple(u for n in names if n.startswith("--") and (u := _underscored(n)) is not None)
    extra = tuple(n for n in extra if n not in names)
    hidden = tuple(half.strip() for n in extra for half in n.split("/") if half.strip())
    return click.option(*names, *extra, cls=_AliasedOption, hidden_aliases=hidden, **kwargs)


def as_flags(param: click.Option, value: Any) -> list[str]:
    """The command-line words that give ``param`` the value ``value`` (none for None, or for an
    off flag without an off spelling): how given options become a command line again."""
    name = param.opts[0]
    if param.is_flag:
        return [name] if value else param.secondary_opts[:1]
    if value is None:
        return []
    items = value if param.multiple and isinstance(value, (list, tuple)) else [value]
    return [part for item in items for part in (name, str(item))]


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if _command_available(name)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        name = ALIASES.get(name, name)
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None  # a command not built yet in this checkout
            raise
        return getattr(module, attribute)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except (click.ClickException, click.Abort):
            raise
        except Exception as exc:
            raise _as_click_error(exc, ctx) from exc


def _command_available(name: str) -> bool:
    module_name = COMMANDS[name].split(":")[0]
    return importlib.util.find_spec(module_name) is not None


def _as_click_error(exc: Exception, ctx: click.Context) -> click.ClickException:
    from gpt2core.errors import GPT2Error
    from gpt2core.printable import printable  # messages quote paths and file contents: escapes shown, never obeyed

    if isinstance(exc, GPT2Error):
        return click.ClickException(printable(exc))
    if (ctx.obj or {}).get("debug"):
        raise exc
    return click.ClickException(
        f"internal error: {type(exc).__name__}: {printable(exc)} (this is a bug in gpt2tui; rerun with --debug for the traceback)"
    )


@click.group(cls=LazyGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False), help="Where runs live.")
@click.option("--checkpoints-dir", default="checkpoints", show_default=True, type=click.Path(file_okay=False), help="Where the console finds checkpoints (and its runs write them).")
@click.option("--optuna-dir", default="optuna_results", show_default=True, type=click.Path(file_okay=False), help="Where the console finds Optuna studies (and starts new ones).")
@click.option("--debug", is_flag=True, envvar="GPT2TUI_DEBUG", help="Show tracebacks for internal errors.")
@click.version_option(__version__, prog_name="gpt2tui")
@click.pass_context
def cli(ctx: click.Context, runs_dir: str, checkpoints_dir: str, optuna_dir: str, debug: bool) -> None:
    """GPT-2 from scratch: train, watch, tune, evaluate and chat, from one terminal.

    Run `gpt2tui` alone for the full-screen console, or a subcommand for headless work:

    \b
      gpt2tui train                      # a small model on the built-in corpus, minutes on a CPU
      gpt2tui generate --checkpoint checkpoints/<run> --prompt "The"
      gpt2tui evaluate --checkpoint checkpoints/<run>
      gpt2tui optimize --n-trials 20
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    ctx.obj["runs_dir"] = runs_dir
    if ctx.invoked_subcommand is None:
        from gpt2tui.app import run_app  # Textual loads only for the console

        run_app(runs_dir=runs_dir, checkpoints_dir=checkpoints_dir, optuna_dir=optuna_dir)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: the command, then an exit without Python's teardown."""
    try:
        cli.main(args=argv, prog_name="gpt2tui")
    except SystemExit as done:
        _exit_now(done.code)
        raise


def _exit_now(code: object) -> None:
    """End the process at once once a command has finished, where that is safe.

    Python's teardown after a command that imported torch (and datasets, torch._dynamo through the
    optimizer) took 1.4 s on a 2-core AMD EPYC, every time, after the work was done and its files
    closed: it unloads modules and collects every object one by one. The exit handlers still run
    here (atexit: logging, multiprocessing's children, coverage) and the standard streams are
    flushed; only the teardown is skipped. Not while another non-daemon thread runs (a normal exit
    waits for it), and not under a profiler or tracer, which writes its results after main returns.
    """
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        return
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): what Python prints, with status 1
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    os._exit(status)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
