"""`gpt2tui train`: train headless, with a live view on a terminal and plain lines elsewhere."""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable

import click

from gpt2core.config import DataConfig, ModelConfig, TrainConfig
from gpt2core.states import ExitCode
from gpt2tui.cli import option
from gpt2tui.cli_options import declared_options, fields_of
from gpt2tui.commands.distributed_launch import launch_options

EXIT_FINISHED, EXIT_DIVERGED, EXIT_STOPPED = ExitCode.FINISHED, ExitCode.DIVERGED, ExitCode.STOPPED  # gpt2core.states says each

# The run flags that are config fields, generated from their declarations (gpt2core/config.py),
# in --help order: where the text comes from, the model's shape, then how it trains. The
# model's vocab_size is the tokenizer's (the data section's --vocab-size).
RUN_FLAG_FIELDS = [*fields_of(DataConfig, "data"), *fields_of(ModelConfig, "model", skip=("vocab_size",)), *fields_of(TrainConfig, "train")]
# Flags whose declared command-line word for none (0 = no limit) stands for None.
NONE_FLAGS = {name: spec.none_flag for name, spec, _, _ in RUN_FLAG_FIELDS if spec.none_flag is not None}


class GracefulStop:
    """Signal handling for the length of one run.

    Before training starts (reading and tokenising data) a signal interrupts at once. Once
    training runs, the first SIGINT / SIGTERM / SIGHUP sets the stop flag: the trainer finishes
    its step, writes a checkpoint and returns. Later signals only say that the checkpoint is
    being saved, so a second Ctrl-C cannot cut the save short.
    """

    def __init__(self, stop: threading.Event, say: Callable[[str], None]):
        self.stop = stop
        self.say = say
        self.training = False
        self.signalled = False
        self.previous: dict[int, Any] = {}

    def on_event(self, event) -> None:
        if event.kind == "run_started":
            self.training = True

    def handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        self.signalled = True
        if not self.training:
            raise KeyboardInterrupt
        if not self.stop.is_set():
            self.stop.set()
            self.say(f"{name}: finishing this step, then saving a checkpoint (further signals are ignored until it is saved)")
        else:
            self.say(f"{name}: still saving the checkpoint; it will exit as soon as the save is complete")

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
                if sig is not None:
                    self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            # A process told to stop stays deaf while it prints its summary and exits: a repeated
            # Ctrl-C landing after the save must not turn the clean stop into a KeyboardInterrupt.
            signal.signal(sig, signal.SIG_IGN if self.signalled else handler)


def _betas(value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        b1, b2 = (float(v) for v in value.replace(" ", "").split(","))
    except ValueError:
        raise click.BadParameter("give two numbers separated by a comma, e.g. 0.9,0.95", param_hint="--betas") from None
    return b1, b2


def options_from_flags(config_file: str | None, betas: str | None, flags: dict[str, Any]) -> dict[str, Any]:
    """Flat run options from a --config file and the run flags given (flags win). Shared with
    `gpt2tui optimize`, which takes the same run flags for what its trials keep fixed."""
    from gpt2core.config import load_options_file

    options: dict[str, Any] = load_options_file(config_file) if config_file else {}
    flags = dict(flags)
    flags.pop("allow_data_change", None)  # how to resume, not a run option (train() reads it itself)
    threads = flags.get("threads")  # a text flag (N or auto); `optimize` passes it on as typed
    if isinstance(threads, str) and threads != "auto":
        if not (threads.isdigit() and int(threads) >= 1):
            raise click.BadParameter("give a positive number of threads or 'auto'", param_hint="--threads")
        flags["threads"] = int(threads)
    for key, value in zip(("beta1", "beta2"), _betas(betas) or ()):
        if flags[key] is None:  # --beta1 / --beta2 win over --betas
            flags[key] = value
    flags["data"] = tuple(flags["data"]) or None
    for key, value in flags.items():
        if value is not None:
            options[key] = None if key in NONE_FLAGS and value == NONE_FLAGS[key] else value
    return options


def _tokenizer_choice(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A kind, or a directory that exists (its files are read when the run starts)."""
    from gpt2core.choices import TOKENIZER_KINDS

    if value is None or value in TOKENIZER_KINDS:
        return value
    from pathlib import Path

    if not Path(value).is_dir():
        raise click.BadParameter(
            f"{value!r} is not {', '.join(TOKENIZER_KINDS[:-1])} or {TOKENIZER_KINDS[-1]}, and no directory of that name exists (a tokenizer directory holds "
            "tokenizer.json, or vocab.json + merges.txt)"
        )
    return value


def _presets() -> list[str]:
    from gpt2core.config import PRESETS

    return ["auto", *PRESETS]


def _planned() -> frozenset[str]:
    """The options the no-option run plans itself (their --help default is a preset's)."""
    from gpt2core.defaults import PLANNED

    return PLANNED


@click.command(context_settings={"max_content_width": 110})
@option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help="TOML file of options; flags given here override it.")
@option("--preset", type=click.Choice(_presets()), default=None, help="Model size. Default auto: a few-minute run sized for this machine.")
@declared_options(RUN_FLAG_FIELDS, given_only=True, planned=_planned(), extra={"tokenizer": {"callback": _tokenizer_choice}})
@option("--betas", default=None, help="AdamW betas as 'beta1,beta2' [0.9,0.95]; --beta1 / --beta2 win over it.")
@option("--run-name", default=None, help="Name of the run [<preset>-<date>-<time>].")
@option("--resume-from", default=None, help="Continue from a checkpoint directory, a run's checkpoint folder or a run name.")
@option("--init-from", default=None, metavar="SOURCE", help="Start a new run from these weights and tokenizer: gpt2, gpt2-medium, ..., a Hugging Face GPT-2 directory, or a checkpoint / run.")
@option("--allow-data-change", is_flag=True, help="With --resume-from: go on even though the corpus differs from the one the checkpoint trained on.")
@option("--runs-dir", default=None, type=click.Path(file_okay=False), help="Where runs are written [runs].")
@option("--checkpoints-dir", default="checkpoints", show_default=True, type=click.Path(file_okay=False), help="Where checkpoints are written.")
@option("--tensorboard/--no-tensorboard", default=True, show_default=True, help="Write TensorBoard event files into the run.")
@option("--plain", is_flag=True, help="Plain log lines even on a terminal.")
@launch_options
@click.pass_context
def train(ctx: click.Context, config_file, betas, run_name, resume_from, init_from, runs_dir, checkpoints_dir, tensorboard, threads, plain, **flags) -> None:
    """Train a GPT-2 model; progress on stderr, the summary on stdout.

    With no options it trains a small model on the built-in corpus for a few minutes, sized
    for this machine. Flags override a --config TOML file; both override the plan.

    \b
    Examples:
      gpt2tui train
      gpt2tui train --preset tiny --data notes/ --max-steps 2000
      gpt2tui train --preset gpt2 --dataset-name wikitext --dataset-config wikitext-2-raw-v1
      gpt2tui train --resume-from tiny-20250101-120000 --max-training-hours 2
      gpt2tui train --init-from gpt2 --data my-notes/ --max-epochs 1     # fine-tune OpenAI's GPT-2
      gpt2tui train --nproc 4 --preset small --batch-size 64     # 4 GPUs, 16 sequences each

    Several processes (--nproc, or torchrun -m gpt2tui train): see docs/DISTRIBUTED.md.

    Exit status: 0 finished, 1 error, 2 bad usage, 3 diverged (NaN/Inf loss), 130 stopped
    early (Ctrl-C, SIGTERM, SIGHUP, stop request) with a checkpoint saved.
    """
    from gpt2core.defaults import build_run_config, config_for_resume
    from gpt2core.distributed import Distributed
    from gpt2core.train import Trainer
    from gpt2tui.commands.distributed_launch import launch_run, pop_launch_plan
    from gpt2tui.commands.progress import PlainLog, make_display, summary

    launch = pop_launch_plan(flags)
    allow_data_change = flags.pop("allow_data_change")  # how to resume, not a run option
    if threads is not None:
        if threads != "auto" and not (threads.isdigit() and int(threads) >= 1):
            raise click.BadParameter("give a positive number of threads or 'auto'", param_hint="--threads")
        flags["threads"] = threads if threads == "auto" else int(threads)
    runs_dir = runs_dir or (ctx.obj or {}).get("runs_dir") or "runs"
    options = options_from_flags(config_file, betas, flags)
    start = None
    if init_from:
        from gpt2core.init_from import finetune_config, load_start_point, refuse_with_resume

        refuse_with_resume(resume_from)
        start = load_start_point(init_from, checkpoints_dir=checkpoints_dir, tokenizer=options.get("tokenizer"))
        config = finetune_config(start, options)
    elif resume_from:
        # The trainer resolves --resume-from again, just before it claims the run: a run that
        # another process moved on in between is then continued from where it is now, or refused.
        config, _ = config_for_resume(resume_from, options, checkpoints_dir)
    else:
        config = build_run_config(options)
    if launch is not None:
        Distributed(world_size=launch.world_size).rank_batch_size(config.train.batch_size)  # refuse a batch that does not split
        if launch.nnodes > 1:  # the run directory is rank 0's, on whichever machine that is
            ctx.exit(launch_run(ctx, launch, run_name=run_name, runs_dir=runs_dir, threads=threads))

    stop = threading.Event()
    trainer = Trainer(
        config,
        run_name=run_name,
        runs_dir=runs_dir,
        checkpoints_dir=checkpoints_dir,
        resume_from=resume_from,
        on_event=lambda e: (guard.on_event(e), display.on_event(e)),
        stop=stop,
        tensorboard=tensorboard,
        init_from=start,
        allow_data_change=allow_data_change,
    )
    for change in trainer.data_changes:
        click.echo(f"warning: resuming on changed data (--allow-data-change): {change}", err=True)
    if launch is not None:  # one machine: the trainer above checked the run and named it
        trainer.release_run()  # the worker processes claim it themselves
        ctx.exit(launch_run(ctx, launch, run_name=trainer.run_name, runs_dir=runs_dir, threads=threads))
    place = Distributed.from_env()  # under torchrun, rank 0 speaks for the run
    main = place.is_main
    display = make_display(live=False if plain else None) if main else PlainLog()
    guard = GracefulStop(stop, display.message)
    if not main:
        display.enabled = False
        guard.training = True  # ranks > 0 hear no events; a signal there is agreed on at the next step
    try:
        with guard:
            result = trainer.run()
    except KeyboardInterrupt:
        display.close()
        if main:
            click.echo("interrupted before training started; nothing was saved", err=True)
        ctx.exit(EXIT_STOPPED)
    finally:
        display.close()
    if result.reason == "diverged":
        if main:
            click.echo(f"Error: {result.message}", err=True)
        ctx.exit(EXIT_DIVERGED)
    if not main:
        ctx.exit(EXIT_FINISHED)
    try:
        click.echo(summary(result, config.train.sample_prompt or "The"))
    except OSError:
        pass  # the terminal went away (SIGHUP); the checkpoint is saved and the exit code says how it ended
    # Under torchrun a worker's non-zero status reads as a crash and stops the others, so a run
    # stopped on request exits 0 there; `--nproc` reads the run's status and exits 130.
    stopped = result.reason == "stopped" and not place.enabled
    ctx.exit(EXIT_STOPPED if stopped else EXIT_FINISHED)
