"""`gpt2tui train --nproc N`: the same run on N processes per machine, started through torchrun.

The launcher runs the user's `gpt2tui train` command line again, without the launch flags, as
``python -m torch.distributed.run [placement] -m gpt2tui train ...`` in a session of its own, and
waits for it. Placement: ``--standalone`` on one machine (torchrun picks a free port); on several,
a c10d rendezvous (``--rdzv-endpoint``, any node may start first) or a static one
(``--master-addr`` + ``--node-rank``).

On one machine the launcher names the run before it starts, so it knows the run directory: a
first Ctrl-C / SIGTERM / SIGHUP then creates the run's stop_request file (rank 0 reads it, all
ranks agree at the next step, one final checkpoint is written and every worker exits cleanly).
Before training has started, or where the run directory is not to be seen, the signal goes to
torchrun instead, which passes it to the workers. The launcher's exit status is the run's, read
from its status.json: 0 finished, 130 stopped, 3 diverged, 1 failed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click

from gpt2core.states import LIVE_RUN_STATES, EndReason, ExitCode, RunState
from gpt2tui.cli import as_flags, option

EXIT_FINISHED, EXIT_FAILED, EXIT_DIVERGED, EXIT_STOPPED = ExitCode.FINISHED, ExitCode.FAILED, ExitCode.DIVERGED, ExitCode.STOPPED
SHUTDOWN_TIMEOUT_S = 300  # how long torchrun lets workers finish a step and a checkpoint after a signal
LAUNCH_FLAGS = ("nproc", "nnodes", "node_rank", "master_addr", "master_port", "rdzv_endpoint", "rdzv_id")


def launch_options(command):
    """The launch flags of `gpt2tui train` (applied as one decorator)."""
    for decorator in reversed(
        (
            option("--nproc", type=click.IntRange(min=1), default=None, help="Processes on this machine (one per GPU); >1 launches torchrun [1]."),
            option("--nnodes", type=click.IntRange(min=1), default=None, help="Machines taking part; run the same command on each [1]."),
            option("--node-rank", type=click.IntRange(min=0), default=None, help="This machine's place, 0..nnodes-1 (with --master-addr)."),
            option("--master-addr", default=None, help="Address of the machine of node rank 0 (static rendezvous)."),
            option("--master-port", type=click.IntRange(1, 65535), default=None, help="Its port [29500]."),
            option("--rdzv-endpoint", default=None, help="HOST:PORT of a c10d rendezvous, instead of --master-addr/--node-rank."),
            option("--rdzv-id", default=None, help="Job id all machines share at that rendezvous [the run name]."),
        )
    ):
        command = decorator(command)
    return command


@dataclass(frozen=True)
class LaunchPlan:
    """Where the processes of one run go."""

    nproc: int
    nnodes: int = 1
    node_rank: int | None = None
    master_addr: str | None = None
    master_port: int | None = None
    rdzv_endpoint: str | None = None
    rdzv_id: str | None = None

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    def torchrun_args(self, run_name: str | None) -> list[str]:
        args = ["--nproc-per-node", str(self.nproc)]
        if self.nnodes == 1 and not self.rdzv_endpoint and not self.master_addr:
            return [*args, "--standalone"]
        args += ["--nnodes", str(self.nnodes)]
        if self.rdzv_endpoint:
            return [*args, "--rdzv-backend", "c10d", "--rdzv-endpoint", self.rdzv_endpoint, "--rdzv-id", self.rdzv_id or run_name or "gpt2tui"]
        return [*args, "--node-rank", str(self.node_rank or 0), "--master-addr", self.master_addr, "--master-port", str(self.master_port or 29500)]


def pop_launch_plan(flags: dict) -> LaunchPlan | None:
    """Take the launch flags out of ``flags``; a plan when more than one process is asked for."""
    given = {name: flags.pop(name, None) for name in LAUNCH_FLAGS}
    nproc, nnodes = given["nproc"] or 1, given["nnodes"] or 1
    placement = [f"--{name.replace('_', '-')}" for name in LAUNCH_FLAGS[2:] if given[name] is not None]
    if nproc == 1 and nnodes == 1:
        if placement:
            raise click.UsageError(f"{', '.join(placement)} only apply to runs on several processes (--nproc, --nnodes)")
        return None
    if nnodes > 1:
        if not given["rdzv_endpoint"] and not given["master_addr"]:
            raise click.UsageError("--nnodes > 1 needs a meeting point: --rdzv-endpoint HOST:PORT, or --master-addr HOST with --node-rank")
        if given["master_addr"] and not given["rdzv_endpoint"] and given["node_rank"] is None:
            raise click.UsageError("with --master-addr every machine needs its own --node-rank (0 on the master)")
    if given["node_rank"] is not None and given["node_rank"] >= nnodes:  # also one machine: only rank 0 exists
        raise click.UsageError(f"--node-rank {given['node_rank']} is out of range for --nnodes {nnodes} (0..{nnodes - 1})")
    return LaunchPlan(nproc=nproc, nnodes=nnodes, **{k: given[k] for k in LAUNCH_FLAGS[2:]})


def forwarded_args(ctx: click.Context, skip: set[str]) -> list[str]:
    """The options given on this command line (not defaults), as flags again, for the workers."""
    from click.core import ParameterSource

    args: list[str] = []
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name in skip:
            continue
        if ctx.get_parameter_source(param.name) not in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            continue
        args += as_flags(param, ctx.params.get(param.name))
    return args


def _worker_env(plan: LaunchPlan, threads: int | str | None) -> dict[str, str]:
    env = dict(os.environ)
    # torchrun gives every worker one thread unless told otherwise; share the cores instead
    fixed = str(threads) if threads is not None and str(threads).isdigit() else None  # not "auto"
    env.setdefault("OMP_NUM_THREADS", fixed or str(max(1, (os.cpu_count() or 1) // plan.nproc)))
    env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(SHUTDOWN_TIMEOUT_S))
    return env


class _StopRelay:
    """The launcher's signal handling: ask the run to stop through its run directory when it is
    training and visible here, else pass the signal to torchrun. Once is enough: later signals
    only say that the checkpoint is on its way."""

    def __init__(self, process: subprocess.Popen, run_dir: Path | None, launched_at: float):
        self.process = process
        self.run_dir = run_dir
        self.launched_at = launched_at
        self.asked = False
        self.signalled = False

    def training_here(self) -> bool:
        from gpt2core.rundir import read_run

        if self.run_dir is None or not self.run_dir.is_dir():
            return False
        run = read_run(self.run_dir)
        return run.state in LIVE_RUN_STATES and (run.started or 0) >= self.launched_at

    def handle(self, signum: int, frame) -> None:
        from gpt2core.rundir import STOP_REQUEST

        name = signal.Signals(signum).name
        if self.asked:
            click.echo(f"{name}: the run is already stopping; it exits once the checkpoint is saved", err=True)
            return
        self.asked = True
        if self.training_here():
            (self.run_dir / STOP_REQUEST).touch()
            click.echo(f"{name}: every process finishes this step, then rank 0 saves a checkpoint", err=True)
        else:
            self.signalled = True
            self.process.send_signal(signum)


def launch_run(ctx: click.Context, plan: LaunchPlan, *, run_name: str | None, runs_dir: str, threads: int | str | None) -> int:
    """Start the run under torchrun, relay stop signals, and return the exit status it ended with."""
    from gpt2core.rundir import read_run

    args = forwarded_args(ctx, {"run_name", "runs_dir", *LAUNCH_FLAGS})
    if run_name:
        args += ["--run-name", run_name]
    command = [sys.executable, "-m", "torch.distributed.run", *plan.torchrun_args(run_name), "-m", "gpt2tui", "train", *args, "--runs-dir", runs_dir]
    run_dir = Path(runs_dir) / run_name if run_name else None
    launched_at = time.time()
    process = subprocess.Popen(command, env=_worker_env(plan, threads), start_new_session=True)
    relay = _StopRelay(process, run_dir, launched_at)
    previous = {sig: signal.signal(sig, relay.handle) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        returncode = process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    run = read_run(run_dir) if run_dir is not None and run_dir.is_dir() else None
    if run is not None and (run.started or 0) >= launched_at:
        if run.state == RunState.STOPPED:
            return EXIT_STOPPED
        if run.state == RunState.FINISHED:
            return EXIT_FINISHED if returncode == 0 else EXIT_FAILED
        if run.state == RunState.FAILED and run.reason == EndReason.DIVERGED:  # recorded, not read from the message
            return EXIT_DIVERGED
        return EXIT_FAILED
    if relay.signalled:
        click.echo("interrupted before training started; nothing was saved", err=True)
        return EXIT_STOPPED
    return EXIT_FINISHED if returncode == 0 else EXIT_FAILED
