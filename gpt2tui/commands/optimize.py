"""`gpt2tui optimize`: an Optuna study whose trials are short real training runs.

It takes every run flag of `gpt2tui train` (the same click options, shared, not copied): they
fix what the search does not vary. ``--workers K`` starts K worker processes (multiprocessing
"spawn": fresh interpreters that import only what a worker needs) on the one study; each runs
``gpt2core.search.run_worker``. Workers sit in their own process group, so a Ctrl-C reaches
them once, forwarded by this process: each ends its trial after the current step (with a
checkpoint) and the study can be resumed by running the same command again.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
from typing import Any, Callable

import click

from gpt2core.choices import KEEP_CHECKPOINTS, PRUNERS, SAMPLERS
from gpt2core.states import ExitCode
from gpt2tui.cli import option
from gpt2tui.commands.train import GracefulStop, options_from_flags
from gpt2tui.commands.train import train as train_command
from gpt2tui.commands.distributed_launch import LAUNCH_FLAGS

EXIT_DONE = ExitCode.FINISHED  # the study holds its trials, or --timeout was reached
EXIT_STOPPED = ExitCode.STOPPED  # stopped early by Ctrl-C, a signal or a stop request; run the same command to resume

DEFAULT_TRIAL_STEPS = 300  # a trial's budget when no --max-steps / --max-epochs / --max-training-hours is given
EVALS_PER_TRIAL = 10  # evaluations (pruning points) per trial when --eval-interval is not given
# Train flags that name one run or change only its display; a study names its trials itself.
# Trials run inside the optimize process, so the torchrun launch flags do not apply to them.
_TRAIN_ONLY = ("run_name", "resume_from", "init_from", "allow_data_change", "tensorboard", "plain", *LAUNCH_FLAGS)
_BUDGET = ("max_steps", "max_epochs", "max_training_hours")


def _parse_timeout(value: str | None) -> float | None:
    """'3600', '90s', '30m', '8h', '1.5h' -> seconds."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", value)
    if not match or float(match.group(1)) <= 0:
        raise click.ClickException(f"--timeout {value!r} must be a positive duration: seconds, or e.g. 30m, 8h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def trial_defaults(options: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A search wants many short trials that report often: with no budget flag a trial is
    DEFAULT_TRIAL_STEPS steps, evaluated EVALS_PER_TRIAL times, without text samples.
    Returns the options and the names of those this function set (not the user)."""
    given = set(options)
    options = dict(options)
    if not any(k in options for k in _BUDGET):
        options["max_steps"] = DEFAULT_TRIAL_STEPS
    if "eval_interval" not in options and options.get("max_steps"):
        options["eval_interval"] = max(1, options["max_steps"] // EVALS_PER_TRIAL)
    options.setdefault("sample_tokens", 0)
    return options, tuple(sorted(set(options) - given))


# -- progress lines -------------------------------------------------------------------------------------


class TrialLog:
    """One line per trial start, evaluation, warning and end, on stderr (results go to stdout)."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix
        self.current: int | None = None

    def say(self, text: str) -> None:
        try:
            click.echo(f"{self.prefix}{text}", err=True)
        except OSError:
            pass  # a terminal that went away must not stop the search

    def on_event(self, event) -> None:
        from gpt2core.events import EvalEvent, FailedEvent, TrialEvent, WarningEvent
        from gpt2tui.humanize import duration, number

        if isinstance(event, TrialEvent):
            if event.state == "RUNNING":
                self.current = event.number
                params = ", ".join(f"{k}={_short(v)}" for k, v in event.params.items())
                self.say(f"trial {event.number} started: {params}")
            else:
                value = f": val loss {number(event.value)}" if event.value is not None else ""
                self.say(f"trial {event.number} {event.state}{value} after {duration(event.duration_s)}")
                self.current = None
        elif isinstance(event, EvalEvent) and event.step > 0:
            self.say(f"  trial {self.current} step {event.step}: val loss {number(event.val_loss)}")
        elif isinstance(event, (WarningEvent, FailedEvent)):
            text = getattr(event, "message", None) or getattr(event, "error", "")
            self.say(f"  trial {self.current}: {text}")


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# -- signals --------------------------------------------------------------------------------------------


class StopOnSignal(GracefulStop):
    """train's signal handling with a search's escalation: the first SIGINT/SIGTERM/SIGHUP sets
    ``stop`` (the trial ends after its step, with a checkpoint), the second says so again, the
    third aborts at once (the trial is recorded as interrupted). ``forward`` passes each signal
    on to worker processes, and then this process never aborts itself."""

    def __init__(self, stop: threading.Event, say: Callable[[str], None], forward: Callable[[int], None] | None = None):
        super().__init__(stop, say)
        self.forward = forward
        self.count = 0

    def handle(self, signum: int, frame) -> None:
        self.count += 1
        if self.forward is not None:
            self.forward(signum)
        if self.count == 1:
            self.stop.set()
            self.say(f"{signal.Signals(signum).name}: stopping after the current training step (the trial is saved; rerun the command to resume)")
        elif self.count == 2:
            self.say("still stopping; signal once more to abort at once")
        elif self.forward is None:
            raise KeyboardInterrupt


# -- workers --------------------------------------------------------------------------------------------


def _work(settings, worker_index: int, workers: int, prefix: str) -> str:
    """Run one worker in this process until the study is done; returns why it stopped."""
    import optuna
    import torch

    from gpt2core.search import run_worker, worker_device

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own lines say what happens
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))  # K workers share the cores
    stop = threading.Event()
    log = TrialLog(prefix)
    device = worker_device(settings.fixed_options.get("device"), worker_index) if workers > 1 else None
    with StopOnSignal(stop, log.say):
        report = run_worker(settings, on_event=log.on_event, stop=stop, worker_index=worker_index, device=device)
    log.say(f"worker done ({len(report.trials)} trials here): {_STOP_REASONS[report.stopped_by].format(n=settings.n_trials)}")
    return report.stopped_by


_STOP_REASONS = {
    "budget": "the study holds its {n} trials",
    "timeout": "--timeout reached",
    "stop": "stopped by a signal (Ctrl-C); run the same command to resume",
    "stop_request": "stopped on request; run the same command to resume",
}


def _worker_process(settings, worker_index: int, workers: int, parent_pid: int) -> None:
    """The body of a spawned worker process; its exit code tells the parent how it ended."""
    from gpt2core.errors import GPT2Error
    from gpt2core.process import die_with_parent

    os.setpgrp()  # the terminal's Ctrl-C goes to the parent only, which forwards it once
    # Out of the terminal's group, a worker whose parent is SIGKILLed would hear nothing and run
    # the study on alone: the parent's death is a SIGTERM here, which ends the trial (recorded
    # as failed) after its step, as a forwarded Ctrl-C does.
    die_with_parent(parent_pid, signal.SIGTERM)
    prefix = f"[w{worker_index}] "
    try:
        stopped_by = _work(settings, worker_index, workers, prefix)
    except GPT2Error as exc:
        click.echo(f"{prefix}Error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(EXIT_STOPPED)
    sys.exit(EXIT_STOPPED if stopped_by in ("stop", "stop_request") else EXIT_DONE)


def _run_workers(settings, workers: int) -> int:
    """Start ``workers`` processes on the study and wait for them; returns the exit code."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker_process, args=(settings, i, workers, os.getpid()), name=f"gpt2tui-worker-{i}") for i in range(workers)]
    for p in processes:
        p.start()
    click.echo(f"started {workers} workers: pids {', '.join(str(p.pid) for p in processes)}", err=True)

    def forward(signum: int) -> None:
        for p in processes:
            if p.is_alive() and p.pid is not None:
                try:
                    os.kill(p.pid, signum)
                except ProcessLookupError:
                    pass

    stop = threading.Event()
    with StopOnSignal(stop, lambda text: click.echo(text, err=True), forward=forward):
        while any(p.is_alive() for p in processes):
            for p in processes:
                p.join(timeout=0.5)
    codes = [p.exitcode for p in processes]
    failed = [f"worker {i} exited with {code}" for i, code in enumerate(codes) if code not in (EXIT_DONE, EXIT_STOPPED)]
    if failed:
        click.echo(f"Error: {'; '.join(failed)}", err=True)
        return 1
    return EXIT_STOPPED if stop.is_set() or EXIT_STOPPED in codes else EXIT_DONE


# -- the summary ----------------------------------------------------------------------------------------


def print_summary(summary, *, exported, best_checkpoint, location, runs_dir: str) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from gpt2tui.humanize import duration, number

    console = Console(soft_wrap=False, width=None if sys.stdout.isatty() else 200)  # logs get whole rows
    study = summary.trials  # gpt2core.study_read's rows: this only renders them
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(study.counts.items()))
    console.print(f"study [bold]{study.name}[/] in {location}: {len(study.trials)} trials ({counts or 'none'})")
    if not study.trials:
        return
    param_names = sorted(study.param_names)
    table = Table(show_edge=False, pad_edge=False)
    for column in ("#", "state", "val loss", "step", "time", *param_names, "note"):
        table.add_column(column, justify="right" if column not in ("state", "note") else "left", overflow="fold")
    ranked = sorted(study.trials, key=lambda r: (r.value is None, r.value if r.value is not None else 0, r.number))
    shown = ranked[:30]
    for r in shown:
        style = "bold green" if r.number == study.best_number else None
        table.add_row(
            str(r.number), r.state, number(r.value), str(r.last_step or "–"), duration(r.duration_s),
            *[_short(r.params[k]) if k in r.params else "" for k in param_names], Text((r.note or "")[:60]), style=style,
        )
    console.print(table)
    if len(ranked) > len(shown):
        console.print(f"... and {len(ranked) - len(shown)} more (optuna-dashboard shows them all)")
    if summary.importances:
        parts = ", ".join(f"{name} {share:.2f}" for name, share in summary.importances.items())
        console.print(f"parameter importances (fANOVA): {parts}")
    elif summary.importance_note:
        console.print(summary.importance_note)
    if study.best is not None:
        b = study.best
        console.print(f"best: trial {b.number}, val loss {b.value:.4f} (run {b.run_name})")
    if exported is not None:
        console.print(f"best config: {exported}  (gpt2tui train --config {exported} --max-steps N)")
    if best_checkpoint is not None:
        console.print(f"best checkpoint: {best_checkpoint}  (gpt2tui generate --checkpoint {best_checkpoint})")
    console.print(f"explore: optuna-dashboard {location}   |   TensorBoard: tensorboard --logdir {runs_dir}")  # str(): journal path or URL


# -- the command ----------------------------------------------------------------------------------------


@click.command(context_settings={"max_content_width": 110})
@option("--study-name", default=None, help="Study to create or continue [<preset>-search].")
@option("--n-trials", "n_trials", type=int, default=20, show_default=True, help="Trials the study should hold, across all workers and re-runs.")
@option("--timeout", default=None, help="Start no trial after this long: seconds, or 30m, 8h.")
@option("--storage", default=None, help="Optuna storage: sqlite:///f.db, postgresql://..., mysql://... or a journal file [optuna_results/<study>.journal].")
@option("--workers", type=int, default=1, show_default=True, help="Worker processes on this machine.")
@option("--sampler", type=click.Choice(SAMPLERS), default=SAMPLERS[0], show_default=True, help="How parameters are drawn.")
@option("--sampler-seed", type=int, default=None, help="Seed of the sampler (--seed is the training seed).")
@option("--pruner", type=click.Choice(PRUNERS), default=PRUNERS[0], show_default=True, help="How bad trials are stopped early.")
@option("--pruner-startup-trials", type=int, default=3, show_default=True, help="Complete trials before the median pruner judges any.")
@option("--space", "space_file", type=click.Path(dir_okay=False), default=None, help="TOML file overriding the search space.")
@option("--show-space", is_flag=True, help="Print the search space (as a TOML file --space reads) and exit.")
@option("--keep-checkpoints", type=click.Choice(KEEP_CHECKPOINTS), default=KEEP_CHECKPOINTS[0], show_default=True, help="Keep checkpoints of the best trial only, or of all.")
@option("--results-dir", default="optuna_results", show_default=True, type=click.Path(file_okay=False), help="Default storage folder; best configs go here.")
@option("--heartbeat-interval", type=int, default=20, show_default=True, help="Seconds between a running trial's heartbeats.")
@option("--grace-period", type=int, default=120, show_default=True, help="A trial without heartbeat this long has a dead worker and is failed.")
@click.pass_context
def optimize(
    ctx: click.Context,
    study_name, n_trials, timeout, storage, workers, sampler, sampler_seed, pruner, pruner_startup_trials,
    space_file, show_space, keep_checkpoints, results_dir, heartbeat_interval, grace_period,
    config_file, betas, runs_dir, checkpoints_dir, **flags,
) -> None:
    """Search hyperparameters with Optuna: each trial is a short real training run.

    Every `gpt2tui train` flag is accepted and fixes what the search does not vary (data,
    model, budget). With no budget flag a trial is 300 steps, evaluated 10 times; its val loss
    at each evaluation feeds the pruner and its final val loss is the objective. Re-running
    with the same --study-name continues the study; more machines join with the same
    command and a shared --storage postgresql://... URL.

    \b
    Examples:
      gpt2tui optimize --n-trials 20 --preset tiny --data notes/ --max-steps 500
      gpt2tui optimize --n-trials 100 --workers 4 --timeout 8h --study-name overnight
      gpt2tui optimize --show-space > space.toml   # edit, then: --space space.toml

    Exit status: 0 done, 1 error, 130 stopped early (Ctrl-C, a signal or a stop request).
    """
    from gpt2core.search_space import load_space, space_to_toml

    given = options_from_flags(config_file, betas, flags)
    space = load_space(space_file).without_fixed(given)  # a flag the user fixed is not searched
    if show_space:  # before optuna and torch load: printing the space needs neither
        click.echo(space_to_toml(space), nl=False)
        return

    import optuna

    from gpt2core.search import (
        StudySettings,
        export_best,
        link_best_checkpoint,
        open_study,
        prepare_shared_data,
        summarize,
        with_deadline,
    )
    from gpt2core.study_store import resolve_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space.require_nonempty()
    if workers < 1:
        raise click.ClickException(f"--workers must be at least 1, got {workers}")
    options, search_defaults = trial_defaults(given)
    settings = StudySettings(
        study_name=study_name or f"{options.get('preset') or 'auto'}-search",
        fixed_options=options,
        space=space,
        n_trials=n_trials,
        storage=storage,
        results_dir=results_dir,
        runs_dir=runs_dir or (ctx.obj or {}).get("runs_dir") or "runs",
        checkpoints_dir=checkpoints_dir,
        sampler=sampler,
        seed=sampler_seed,
        pruner=pruner,
        pruner_startup_trials=pruner_startup_trials,
        deadline=None,
        keep_checkpoints=keep_checkpoints,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
    )
    timeout_s = _parse_timeout(timeout)
    location = resolve_storage(settings.storage, settings.study_name, settings.results_dir)
    prepare_shared_data(settings)  # bad data or model flags fail here, before the study exists
    opened = open_study(settings)
    for warning in opened.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(
        f"{'created' if opened.created else 'continuing'} study {settings.study_name} in {location} "
        f"({len(opened.study.trials)} trials so far, target {n_trials})",
        err=True,
    )
    settings = with_deadline(settings, timeout_s)
    if workers == 1:
        try:
            stopped_by = _work(settings, 0, 1, "")
            code = EXIT_STOPPED if stopped_by in ("stop", "stop_request") else EXIT_DONE
        except KeyboardInterrupt:
            code = EXIT_STOPPED
    else:
        code = _run_workers(settings, workers)

    study = open_study(settings).study
    exported = export_best(study, os.path.join(settings.results_dir, f"{settings.study_name}-best.toml"), leave_out=search_defaults)
    best_checkpoint = link_best_checkpoint(study, settings)
    print_summary(summarize(study), exported=exported, best_checkpoint=best_checkpoint, location=location, runs_dir=settings.runs_dir)
    ctx.exit(code)


# The run flags of `gpt2tui train`, shared (the same click.Option objects): data, model,
# training settings, budget, --config, --runs-dir and --checkpoints-dir.
optimize.params.extend(p for p in train_command.params if p.name not in _TRAIN_ONLY)
