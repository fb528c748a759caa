"""Naming a run and claiming it before training: a new run's name must be free, a resumed
run must not have moved on since its checkpoint was chosen.

The claim (the run directory's lock) is taken before these checks and they are made under it,
so two processes starting one run cannot both pass; a refused start gives the claim up and
removes a run directory it created.
"""

from __future__ import annotations

from pathlib import Path

from gpt2core.checkpoint import CheckpointStore
from gpt2core.errors import ConfigError
from gpt2core.rundir import METRICS, STATUS, RunLock
from gpt2core.train_resume import Resume


def fresh_run_name(base: str, runs_dir: Path, checkpoints_root: Path) -> str:
    """``base``, or ``base-2``, ``base-3``... when two runs start within the same second."""
    name, n = base, 1
    while (runs_dir / name).exists() or (checkpoints_root / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def claim_run(run_name: str, run_dir: Path, checkpoint_dir: Path, resume: Resume | None) -> RunLock:
    """The run's lock, taken and announced once the start is allowed: a resume continuing the
    run (None for a new run, or a resume under another name) must still start from the run's
    newest checkpoint; otherwise the run must not exist yet."""
    claim = RunLock(run_dir, announce=False)
    try:
        if resume is None:
            _refuse_existing_run(run_name, run_dir, checkpoint_dir)
        else:
            _refuse_stale_resume(run_name, resume.directory, resume.latest_at_choice)
    except BaseException:
        claim.release(discard=True)
        raise
    claim.announce()
    return claim


def _refuse_existing_run(run_name: str, run_dir: Path, checkpoint_dir: Path) -> None:
    exists = (run_dir / STATUS).exists() or (run_dir / METRICS).exists()
    if exists or CheckpointStore(checkpoint_dir, cleanup=False).latest() is not None:
        raise ConfigError(
            f"run {run_name!r} already exists ({run_dir}); choose another --run-name, "
            f"or continue it with --resume-from {run_name}"
        )


def _refuse_stale_resume(run_name: str, resume_dir: Path, latest_at_choice: Path | None) -> None:
    """Another process that resumed the run meanwhile has written newer checkpoints (and may
    have deleted this one): continuing from the old state would overwrite its steps."""
    now = CheckpointStore(resume_dir.parent, cleanup=False).latest()
    if now != latest_at_choice or not resume_dir.is_dir():
        raise ConfigError(
            f"run {run_name!r} moved on while this process was starting (its latest checkpoint is now {now}); "
            "run the command again to continue from there"
        )
