"""Start `gpt2tui` subcommands as their own detached processes.

A run started from the console is a plain `python -m gpt2tui train ...` in a new session
(``start_new_session``), so closing the app, its terminal or the SSH connection does not
reach it; the app re-attaches by reading ``runs/<name>/`` like any other watcher. The
process's output goes to ``runs/.launch/<name>.log`` (the run directory itself belongs to
the trainer, which creates it). The command lines of `train` and `optimize` are spelled here
and nowhere else (the core knows no CLI flags). No Textual here: the form and the tests share
these functions, and so does the study launcher (gpt2tui/study_launch.py).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

LAUNCH_LOGS = ".launch"  # under the runs directory; no status.json, so it never lists as a run


@dataclass(frozen=True)
class TrainRequest:
    """What the new-run form asks for; empty values are left to the trainer's defaults."""

    run_name: str
    preset: str = ""
    data: str = ""
    tokenizer: str = ""
    max_steps: str = ""
    max_training_hours: str = ""
    batch_size: str = ""
    learning_rate: str = ""
    eval_interval: str = ""
    device: str = ""
    init_from: str = ""  # start from these weights (a checkpoint, run name or HF model): --init-from
    extra: str = ""  # more flags, as typed on a command line
    runs_dir: str = "runs"
    checkpoints_dir: str = "checkpoints"


# The request's fields that are not `gpt2tui train` flags of the same name; every other field
# is one, so a field added to TrainRequest reaches the command line with no second list.
NOT_FLAGS = ("run_name", "extra", "runs_dir", "checkpoints_dir")
FORM_FLAGS = tuple(f.name for f in fields(TrainRequest) if f.name not in NOT_FLAGS)


def form_flags(request: object, names: tuple[str, ...]) -> list[str]:
    """`--field-name value` for each of a form's fields ``names`` that is not left blank."""
    flags: list[str] = []
    for name in names:
        value = getattr(request, name).strip()
        if value:
            flags += [f"--{name.replace('_', '-')}", value]
    return flags


def train_command(request: TrainRequest) -> list[str]:
    """The argv of `gpt2tui train` for a form; raises ValueError for text that is not flags."""
    argv = [sys.executable, "-m", "gpt2tui", "train", "--run-name", request.run_name]
    argv += form_flags(request, FORM_FLAGS)
    argv += ["--runs-dir", request.runs_dir, "--checkpoints-dir", request.checkpoints_dir]
    argv += shlex.split(request.extra)  # ValueError on an unclosed quote
    return argv


def check_train_request(request: TrainRequest) -> list[str]:
    """What `gpt2tui train` would refuse at once, checked with the core's own functions (the
    run name as a folder, a free run directory); returns the argv. Raises GPT2Error, or
    ValueError for extra flags that do not parse. Quick: the form calls it on the UI thread."""
    from gpt2core.errors import ConfigError
    from gpt2core.rundir import check_run_name

    check_run_name(request.run_name)
    if (Path(request.runs_dir) / request.run_name).exists():
        raise ConfigError(f"A run named {request.run_name} exists; pick another name (or resume it with r).")
    return train_command(request)


def check_data(spec: str) -> None:
    """The trainer's checks of one --data value (files found, each UTF-8 text), with the
    core's functions; raises DataError. Reads every file, like the trainer: call it off the
    UI thread."""
    from gpt2core.data import expand_data_paths, read_text_file

    for path in expand_data_paths([spec]):
        read_text_file(path)  # binary or non-UTF-8 files fail here, as they would in the trainer


def resume_command(run_name: str, checkpoint_dir: str | Path, *, runs_dir: str = "runs", checkpoints_dir: str = "checkpoints") -> list[str]:
    """The argv that continues a stopped run in its own run directory."""
    return [
        sys.executable, "-m", "gpt2tui", "train",
        "--resume-from", str(checkpoint_dir),
        "--run-name", run_name,
        "--runs-dir", runs_dir,
        "--checkpoints-dir", checkpoints_dir,
    ]  # fmt: skip


def optimize_command(study_name: str, *options: str, storage: str | None = None) -> list[str]:
    """The argv that starts (or resumes) a study. ``options`` are further `gpt2tui optimize`
    flags (`--n-trials 20`, `--workers 2`, the train flags); the same study name continues
    the study. Raises StudyError for a name the storage would refuse."""
    from gpt2core.study_store import check_study_name

    argv = [sys.executable, "-m", "gpt2tui", "optimize", "--study-name", check_study_name(study_name)]
    if storage is not None:
        argv += ["--storage", storage]
    return argv + list(options)


def display_command(argv: list[str]) -> str:
    """How the form shows the command: as a user would type it (`gpt2tui train ...`)."""
    if argv[:3] == [sys.executable, "-m", "gpt2tui"]:
        argv = ["gpt2tui", *argv[3:]]
    return shlex.join(argv)


def default_run_name(preset: str = "") -> str:
    return f"{preset or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"


@dataclass
class Launched:
    """A detached process the console started, and where its output goes."""

    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen = field(repr=False)

    def last_log_line(self) -> str:
        try:
            with self.log_path.open("rb") as log:  # only the end: a long run's log can be megabytes
                log.seek(max(0, log.seek(0, os.SEEK_END) - 8192))
                tail = log.read().decode(errors="replace")
        except OSError:
            return ""
        lines = [line for line in tail.splitlines() if line.strip()]
        return lines[-1] if lines else ""


def launch_detached(argv: list[str], *, name: str, runs_dir: str | Path, cwd: str | Path | None = None) -> Launched:
    """Start ``argv`` in a new session with its output in ``<runs_dir>/.launch/<name>.log``."""
    log_dir = Path(runs_dir) / LAUNCH_LOGS
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("TEXTUAL", None)  # the child is headless even if the console runs under `textual run --dev`
    with open(log_path, "ab") as log:
        log.write(f"$ {display_command(argv)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,  # its own process group: no SIGHUP/SIGINT from our terminal
        )
    return Launched(name, argv, log_path, process)
