"""`gpt2tui generate`: stream a continuation to stdout, or talk to a model in a REPL.

Only generated text goes to stdout (so `gpt2tui generate ... > out.txt` captures just that);
what was loaded, truncation notices and speed go to stderr. Sampling settings are validated by
``gpt2core.config.SampleConfig``, the one place their rules live.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import click

from gpt2core.choices import DEVICES_HELP, PRECISIONS
from gpt2core.config import SampleConfig
from gpt2core.errors import ConfigError, first_line
from gpt2tui.cli import option
from gpt2tui.cli_options import declared_options, fields_of

# The sampling options, each from its one declaration in gpt2core/config.py: the flags, the
# REPL's commands, its /help lines and /settings are all built from this list.
SAMPLE_FIELDS = fields_of(SampleConfig)
SPECS = {name: spec for name, spec, _, _ in SAMPLE_FIELDS}
# REPL command -> the SampleConfig field it sets (dashes work too: /top-k).
REPL_COMMANDS = {command: name for name, spec, _, _ in SAMPLE_FIELDS for command in spec.repl_for(name)}
SESSION_COMMANDS = (
    ("/settings", "show the current settings"),
    ("/reset", "back to the settings this session started with"),
    ("/help", "this text"),
    ("/quit", "leave (or Ctrl-D); Ctrl-C stops a generation, not the session"),
)


def _usage(command: str, spec: Any, default: Any) -> str:
    if spec.kind is bool:
        return f"/{command} on|off"
    if spec.many:
        return f"/{command} TEXT"
    if default is None:
        return f"/{command} N|none"
    return f"/{command} {default}"


def repl_help() -> str:
    """/help: a line per sampling option (from its declaration), then the session's commands."""
    rows = []
    for name, spec, default, _ in SAMPLE_FIELDS:
        first, *more = spec.repl_for(name)
        text = spec.help + (f"; /{first} none clears them" if spec.many else (f"; none: {spec.none}" if spec.optional and spec.none else ""))
        rows.append((_usage(first, spec, default), text + "".join(f"; also /{alias}" for alias in more)))
    rows += SESSION_COMMANDS
    width = max(len(usage) for usage, _ in rows) + 2
    lines = [f"  {usage:<{width}}{text}" for usage, text in rows]
    return "\n".join(["Type a prompt and press Enter to continue it. Commands:", *lines, "A prompt that starts with / is typed as //."])


REPL_HELP = repl_help()

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def unescape(text: str) -> str:
    """`\\n`, `\\t`, `\\r`, `\\\\` in a typed stop string become the characters they name."""
    return re.sub(r"\\([ntr\\])", lambda m: _ESCAPES[m.group(1)], text)


def info(message: str, quiet: bool = False) -> None:
    if not quiet:
        click.echo(message, err=True)


# --checkpoint, spelled --model-path/--model_path as in the specification; `export` shares it.
checkpoint_option = option(
    "--checkpoint",
    "--model-path",
    "-c",
    default="latest",
    show_default=True,
    help="A checkpoint directory, a run's checkpoint folder or name, 'latest', a Hugging Face GPT-2 directory, or a hub name (gpt2, gpt2-medium, ...).",
)


@click.command()
@checkpoint_option
@option("--prompt", "-p", default=None, help="Text to continue; '-' reads standard input. No prompt: sample from <|endoftext|>.")
@option("--prompt-file", type=click.Path(dir_okay=False), default=None, help="Read the prompt from this UTF-8 file.")
@option("--interactive", "-i", is_flag=True, help="A REPL that keeps settings between prompts (/help inside).")
@declared_options(SAMPLE_FIELDS, given_only=False)
@option("--device", default="cpu", show_default=True, help=f"{DEVICES_HELP}.")
@option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True, help="Weights for generating: auto is bf16 where the device computes it natively; fp32 gives exactly transformers' numbers.")
@option("--quiet", "-q", is_flag=True, help="Nothing on stderr but errors.")
@click.pass_context
def generate(
    ctx: click.Context,
    checkpoint: str,
    prompt: str | None,
    prompt_file: str | None,
    interactive: bool,
    device: str,
    precision: str,
    quiet: bool,
    **settings: Any,
) -> None:
    """Continue a prompt with a trained model, streaming the text to stdout.

    \b
    Examples:
      gpt2tui generate --checkpoint checkpoints/my-run --prompt "Once upon a time"
      gpt2tui generate -c latest -p "In the future" --temperature 0.9 --top-k 40 --max-new-tokens 150
      echo "Dear diary," | gpt2tui generate -c my-run --prompt - --seed 1 --stop "\\n\\n"
      gpt2tui generate -c my-run --interactive
    """
    settings = {k: tuple(unescape(t) for t in v) if SPECS[k].many else v for k, v in settings.items()}
    sample = SampleConfig(**settings    )  # ConfigError -> one-line "Error: ..." (see gpt2tui.cli)
    if interactive and prompt == "-":
        raise click.UsageError("--prompt - reads standard input, which --interactive needs for its prompts")
    text = read_prompt(prompt, prompt_file)

    from gpt2core.loading import load_model_and_tokenizer
    from gpt2core.printable import printable

    model, tokenizer, description = load_model_and_tokenizer(checkpoint, device=device)
    if tokenizer is None:
        raise click.ClickException(printable(f"{checkpoint} comes without a usable tokenizer, so text cannot be encoded ({description})"))
    info(f"loaded {printable(description)}", quiet)  # paths and names from disk: control characters shown, not obeyed
    from gpt2core.generation import inference_precision

    info(f"generating with {inference_precision(precision, model.device, model.num_params())} weights", quiet)
    try:
        if text is not None or not interactive:
            reason = run_prompt(model, tokenizer, text or "", sample, quiet, precision)
            if reason == "cancelled" and not interactive:
                ctx.exit(130)
        if interactive:
            repl(model, tokenizer, sample, quiet, precision)
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        ctx.exit(0)


def read_prompt(prompt: str | None, prompt_file: str | None) -> str | None:
    """The prompt text from --prompt (``-`` = stdin) or --prompt-file; None if neither was given."""
    if prompt is not None and prompt_file is not None:
        raise click.UsageError("give --prompt or --prompt-file, not both")
    if prompt_file is not None:
        try:
            data = Path(prompt_file).read_bytes()
        except OSError as exc:
            raise click.ClickException(f"cannot read prompt file {prompt_file}: {exc.strerror or exc}") from None
        where = f"prompt file {prompt_file}"
    elif prompt == "-":
        data = sys.stdin.buffer.read()  # bytes, so a non-UTF-8 pipe is our error message, not a crash
        where = "the prompt on standard input"
    elif prompt is not None:
        try:
            prompt.encode("utf-8")  # undecodable argv bytes arrive as lone surrogates
        except UnicodeEncodeError:
            raise click.ClickException("the --prompt text is not valid UTF-8") from None
        return prompt
    else:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise click.ClickException(
            f"{where} is not valid UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None


@contextlib.contextmanager
def ctrl_c_sets(event: threading.Event) -> Iterator[None]:
    """While inside, Ctrl-C sets ``event`` (the generation stops at the next token) instead of
    raising KeyboardInterrupt. Signal handlers can only be installed from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: event.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_prompt(model: Any, tokenizer: Any, prompt: str, sample: SampleConfig, quiet: bool, precision: str = "auto") -> str:
    """Generate one continuation to stdout; returns the finish reason."""
    from gpt2core.generation import stream_text

    stop_event = threading.Event()
    stream = stream_text(model, tokenizer, prompt, sample, stop_event=stop_event, precision=precision)
    if stream.truncated_tokens:
        info(
            f"note: the prompt has {stream.prompt_tokens} tokens; only its last "
            f"{stream.prompt_tokens - stream.truncated_tokens} fit the context of {model.config.context_length}",
            quiet,
        )
    if not prompt:
        info("note: empty prompt; sampling from <|endoftext|>", quiet)
    with ctrl_c_sets(stop_event):
        if sample.stream:
            for piece in stream:
                click.echo(piece, nl=False)
        else:
            click.echo(stream.read(), nl=False)
    click.echo("")
    info(f"[{stream.finish_reason}] {stream.new_tokens} tokens, {stream.tokens_per_sec:.1f} tokens/s", quiet)
    return stream.finish_reason or "cancelled"


class BadLine(ValueError):
    """A line of REPL input that is not text (not valid UTF-8): skipped with a message."""


def read_line(prompt: str) -> str | None:
    """One line of input (prompt on stderr); None at end of input; BadLine for bytes that are
    not UTF-8 (read as bytes from a pipe, so the message can say which byte)."""
    click.echo(prompt, err=True, nl=False)
    stdin = sys.stdin
    if stdin.isatty():
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing and history for input())
        try:
            line = input()
        except EOFError:
            return None
        except UnicodeDecodeError as exc:
            raise BadLine(f"that line is not valid UTF-8 text (byte 0x{exc.object[exc.start]:02x}); it was skipped") from None
        try:
            line.encode("utf-8")  # a UTF-8-mode terminal hands undecodable bytes over as lone surrogates
        except UnicodeEncodeError:
            raise BadLine("that line is not valid UTF-8 text; it was skipped") from None
        return line
    raw = stdin.buffer.readline() if hasattr(stdin, "buffer") else stdin.readline()
    if not raw:
        return None
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadLine(f"that line is not valid UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); it was skipped") from None
    return raw.rstrip("\r\n")


def describe_settings(sample: SampleConfig) -> str:
    values = sample.to_dict()
    return "\n".join(f"  {name:<19} {values[name]!r}" for name in values)


class _Refused(ValueError):
    """A REPL argument that is not what its option takes (the words say what it needs)."""


def _setting(command: str, spec: Any, arg: str, current: Any) -> Any:
    """The value ``/command arg`` sets, by the option's declared kind; its rule is checked by
    SampleConfig itself."""
    word = arg.lower()
    if spec.kind is bool:
        if word not in ("on", "off"):
            raise _Refused("on or off")
        return word == "on"
    if spec.many:  # each command adds one; none clears them
        return () if word in ("", "none", "off") else (*current, unescape(arg))
    if spec.optional and word in ("", "none", "off"):
        return None
    if spec.kind is str:
        return arg
    try:
        return spec.kind(arg)
    except ValueError:
        raise _Refused(("a whole number" if spec.kind is int else "a number") + (" or 'none'" if spec.optional else "")) from None


def apply_command(line: str, sample: SampleConfig, initial: SampleConfig) -> tuple[SampleConfig, str, bool]:
    """Run one REPL command. Returns (new settings, message for stderr, quit?). A bad value
    leaves the settings as they were and says why."""
    name, _, arg = line[1:].strip().partition(" ")
    name, arg = name.lower().replace("-", "_"), arg.strip()
    if name in ("quit", "exit", "q"):
        return sample, "", True
    if name in ("help", "h", "?"):
        return sample, REPL_HELP, False
    if name in ("settings", "show"):
        return sample, describe_settings(sample), False
    if name == "reset":
        return initial, "settings reset\n" + describe_settings(initial), False
    if name not in REPL_COMMANDS:
        return sample, f"error: unknown command /{name}; /help lists the commands", False
    field = REPL_COMMANDS[name]
    try:
        changes = {field: _setting(name, SPECS[field], arg, getattr(sample, field))}
        updated = sample.replace(**changes)
    except _Refused as exc:
        return sample, f"error: /{name} needs {exc}, got {arg!r}", False
    except ConfigError as exc:
        return sample, f"error: {exc}", False
    shown = ", ".join(f"{k} = {v!r}" for k, v in dataclasses.asdict(updated).items() if k in changes)
    return updated, shown, False


def repl(model: Any, tokenizer: Any, sample: SampleConfig, quiet: bool, precision: str = "auto") -> None:
    info("interactive: type a prompt and press Enter; /help lists commands; Ctrl-D quits", quiet)
    initial = sample
    while True:
        try:
            line = read_line(">>> ")
        except KeyboardInterrupt:
            click.echo("", err=True)  # Ctrl-C at the prompt clears the line, as in a shell
            continue
        except BadLine as exc:
            click.echo(f"error: {exc}", err=True)
            continue
        if line is None:
            click.echo("", err=True)
            return
        if not line.strip():
            continue
        if line.startswith("/") and not line.startswith("//"):
            sample, message, quit_now = apply_command(line, sample, initial)
            if message:
                click.echo(message, err=True)
            if quit_now:
                return
            continue
        try:
            run_prompt(model, tokenizer, line[1:] if line.startswith("//") else line, sample, quiet, precision)
        except BrokenPipeError:
            raise  # the reader of stdout went away: generate() ends quietly
        except Exception as exc:  # one prompt's failure (a model that yields NaN, ...) never ends the session
            click.echo("", err=True)
            click.echo(f"error: {first_line(exc)}; the session goes on", err=True)
