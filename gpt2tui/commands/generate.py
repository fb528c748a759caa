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

from gpt2core.config import SampleConfig
from gpt2core.errors import ConfigError, first_line
from gpt2tui.cli import option

DEFAULTS = SampleConfig()
# REPL commands that change a number: name -> SampleConfig field (dashes work too: /top-k).
NUMBER_SETTINGS = {
    "max_new_tokens": "max_new_tokens",
    "n": "max_new_tokens",
    "temperature": "temperature",
    "temp": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "repetition_penalty": "repetition_penalty",
    "repetition_window": "repetition_window",
}
REPL_HELP = """\
Type a prompt and press Enter to continue it. Commands:
  /temperature 0.7      sampling temperature (0 = greedy); also /temp
  /top_k 40             keep the 40 most likely tokens (0 = off)
  /top_p 0.9            nucleus sampling (1 = off)
  /min_p 0.05           drop tokens under 5% of the top token's probability (0 = off)
  /repetition_penalty 1.2   /repetition_window 64
  /max_new_tokens 200   also /n 200
  /seed 42 | /seed none reproducible sampling, or a fresh draw each time
  /stop TEXT            add a stop string (\\n for a newline); /stop none clears them
  /eos on|off           end at the end-of-text token
  /stream on|off        print as it goes, or all at the end
  /settings             show the current settings
  /reset                back to the settings this session started with
  /help                 this text
  /quit                 leave (or Ctrl-D); Ctrl-C stops a generation, not the session
A prompt that starts with / is typed as //."""

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
@option("--max-new-tokens", "-n", type=int, default=DEFAULTS.max_new_tokens, show_default=True, help="Tokens to add at most.")
@option("--temperature", "-t", type=float, default=DEFAULTS.temperature, show_default=True, help="Randomness; 0 is greedy.")
@option("--top-k", type=int, default=DEFAULTS.top_k, show_default=True, help="Keep the k most likely tokens; 0 is off.")
@option("--top-p", type=float, default=DEFAULTS.top_p, show_default=True, help="Nucleus: keep tokens up to this probability mass; 1 is off.")
@option("--min-p", type=float, default=DEFAULTS.min_p, show_default=True, help="Drop tokens below min_p x the top probability; 0 is off.")
@option("--repetition-penalty", type=float, default=DEFAULTS.repetition_penalty, show_default=True, help="Above 1 discourages recent tokens; 1 is off.")
@option("--repetition-window", type=int, default=DEFAULTS.repetition_window, show_default=True, help="Recent tokens the penalty looks at; 0 is all.")
@option("--stop", multiple=True, help="Stop before this text (repeatable; \\n means a newline).")
@option("--seed", type=int, default=None, help="Make sampling reproducible.")
@option("--ignore-eos", is_flag=True, help="Keep going past the end-of-text token.")
@option("--no-stream", is_flag=True, help="Print the text when it is complete instead of as it comes.")
@option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N, mps or auto.")
@option("--precision", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto", show_default=True, help="Weights for generating: auto is bf16 where the device computes it natively; fp32 gives exactly transformers' numbers.")
@option("--quiet", "-q", is_flag=True, help="Nothing on stderr but errors.")
@click.pass_context
def generate(
    ctx: click.Context,
    checkpoint: str,
    prompt: str | None,
    prompt_file: str | None,
    interactive: bool,
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    min_p: float,
    repetition_penalty: float,
    repetition_window: int,
    stop: tuple[str, ...],
    seed: int | None,
    ignore_eos: bool,
    no_stream: bool,
    device: str,
    precision: str,
    quiet: bool,
) -> None:
    """Continue a prompt with a trained model, streaming the text to stdout.

    \b
    Examples:
      gpt2tui generate --checkpoint checkpoints/my-run --prompt "Once upon a time"
      gpt2tui generate -c latest -p "In the future" --temperature 0.9 --top-k 40 --max-new-tokens 150
      echo "Dear diary," | gpt2tui generate -c my-run --prompt - --seed 1 --stop "\\n\\n"
      gpt2tui generate -c my-run --interactive
    """
    sample = SampleConfig(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        repetition_window=repetition_window,
        stop=tuple(unescape(s) for s in stop),
        seed=seed,
        stop_at_eos=not ignore_eos,
        stream=not no_stream,
    )  # ConfigError -> one-line "Error: ..." (see gpt2tui.cli)
    if interactive and prompt == "-":
        raise click.UsageError("--prompt - reads standard input, which --interactive needs for its prompts")
    text = read_prompt(prompt, prompt_file)

    from gpt2core.loading import load_model_and_tokenizer
    from gpt2core.printable import printable

    model, tokenizer, description = load_model_and_tokenizer(checkpoint, device=device)
    if tokenizer is None:
        raise click.ClickException(printable(f"{checkpoint} comes without a usable tokenizer, so text cannot be encoded ({description})"))
    info(f"loaded {printable(description)}", quiet)  # paths and names from disk: control characters shown, not obeyed
    from gpt2core.generate import inference_precision

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
    from gpt2core.generate import stream_text

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
    try:
        if name in NUMBER_SETTINGS:
            field = NUMBER_SETTINGS[name]
            kind = type(getattr(DEFAULTS, field))
            try:
                value: Any = kind(arg)
            except ValueError:
                noun = "a whole number" if kind is int else "a number"
                return sample, f"error: /{name} needs {noun}, got {arg!r}", False
            changes = {field: value}
        elif name == "seed":
            if arg.lower() in ("none", "off", ""):
                changes = {"seed": None}
            else:
                try:
                    changes = {"seed": int(arg)}
                except ValueError:
                    return sample, f"error: /seed needs a whole number or 'none', got {arg!r}", False
        elif name == "stop":
            changes = {"stop": ()} if arg.lower() in ("", "none", "off") else {"stop": (*sample.stop, unescape(arg))}
        elif name in ("eos", "stream"):
            if arg.lower() not in ("on", "off"):
                return sample, f"error: /{name} needs on or off, got {arg!r}", False
            changes = {"stop_at_eos" if name == "eos" else "stream": arg.lower() == "on"}
        else:
            return sample, f"error: unknown command /{name}; /help lists the commands", False
        updated = sample.replace(**changes)
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
