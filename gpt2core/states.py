"""The names of a run's states, the reasons a run ends and the commands' exit statuses: one
set that the run directory, the commands, the launchers and the console all read.

States and reasons are ``str`` enums and exit statuses an ``int`` enum, so they equal the bare
strings and numbers they replace: status.json on disk, and what scripts see as exit status,
stay exactly as they were (a member is written to JSON as its value).
"""

from __future__ import annotations

from enum import Enum, IntEnum


class _Word(str, Enum):
    """A str enum that prints as its value (Python 3.10 has no StrEnum)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class RunState(_Word):
    """``state`` in a run's status.json, and the one watchers judge."""

    STARTING = "starting"  # the process is up, training has not begun
    RUNNING = "running"
    FINISHED = "finished"  # a limit (steps, epochs, time budget) ended it
    STOPPED = "stopped"  # stopped on request, with a checkpoint
    FAILED = "failed"  # an error, or the loss diverged
    STALE = "stale"  # says starting or running, but its process is gone (a watcher's judgement)
    UNKNOWN = "unknown"  # no readable status.json


LIVE_RUN_STATES = (RunState.STARTING, RunState.RUNNING)  # a process may be writing the run
RESUMABLE_RUN_STATES = (RunState.STOPPED, RunState.FAILED, RunState.STALE)  # ended before its limit


class EndReason(_Word):
    """Why a training run ended (``reason`` of its result and of status.json)."""

    MAX_STEPS = "max_steps"
    MAX_EPOCHS = "max_epochs"
    TIME_BUDGET = "time_budget"
    STOPPED = "stopped"  # a stop request, a signal, the console's stop key
    DIVERGED = "diverged"  # the loss or gradients stayed NaN/Inf
    WRITE_ERROR = "write_error"  # a run file could not be written (--on-save-error stop)


class ExitCode(IntEnum):
    """The exit statuses of `gpt2tui train` and `gpt2tui optimize` (and their launchers)."""

    FINISHED = 0  # train: a limit ended the run; optimize: the study holds its trials (or --timeout)
    FAILED = 1  # an error, said in one line
    USAGE = 2  # a bad flag (click's own status)
    DIVERGED = 3  # train: the loss stayed NaN/Inf; no checkpoint was written over the good ones
    STOPPED = 130  # stopped early on request (Ctrl-C, a signal, a stop request); the same command resumes


class StudyState(_Word):
    """A study's state, judged from its trials and stop requests (gpt2core.study_read), and
    two words only the console knows, about a process it started itself."""

    RUNNING = "running"  # a trial is running (its worker alive as far as we can tell)
    STOPPING = "stopping"  # a stop was requested after its running trials started: they end at their next step
    STOPPED = "stopped"  # nothing runs, and the last stop request came after the last trial started
    INTERRUPTED = "interrupted"  # nothing runs and the last trial was cut short (Ctrl-C, a dead worker)
    DONE = "done"  # nothing runs and the last trial reached a verdict (or there are no trials)
    STARTING = "starting"  # the console's: its process lives, no trial has started yet
    FINISHING = "finishing"  # the console's: its process lives between trials or writes its summary


LIVE_STUDY_STATES = (StudyState.RUNNING, StudyState.STOPPING)  # a trial runs
ACTIVE_STUDY_STATES = (*LIVE_STUDY_STATES, StudyState.STARTING)  # something to stop


class TrialStatus(_Word):
    """One word for a trial: Optuna's state in lower case, or what we know besides it."""

    COMPLETE = "complete"
    PRUNED = "pruned"
    FAIL = "fail"  # the trial failed by itself (an exception, NaN): a verdict on its parameters
    WAITING = "waiting"  # enqueued, not started
    RUNNING = "running"
    STOPPING = "stopping"  # running, and a stop was requested since it started
    STALE = "stale"  # running by the storage, but its worker is gone (or was failed as such)
    INTERRUPTED = "interrupted"  # cut short by Ctrl-C or a stop request
