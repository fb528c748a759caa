"""The trials screen's actions on a study: start one (the form), stop, resume, and reports on
the `gpt2tui optimize` processes started here (its ProcessWatch says when one ends). A mixin of
``TrialsScreen``, kept apart so each module stays small; it uses the screen's ``tracker``,
``studies``, ``current`` and refresh.
A study runs as its own detached process (gpt2tui.study_launch); stopping is a stop request in
the study's storage, which every worker of the study reads, wherever it runs.
"""

from __future__ import annotations

import signal
import time

from rich.text import Text
from textual import work

from gpt2core import study_read
from gpt2core.states import ACTIVE_STUDY_STATES, ExitCode, StudyState
from gpt2tui import study_launch
from gpt2tui.text_safety import printable
from gpt2tui.widgets.process_watch import ProcessWatch
from screens.base import os_errors_notified


class StudyActions:
    """Keys n, s, r of the trials screen (see TrialsScreen.BINDINGS)."""

    def _selected(self) -> study_read.StudyRow | None:
        study = self.studies.get(f"{self.current[0]}\n{self.current[1]}") if self.current else None
        if study is None:
            self.notify("No study selected.", severity="warning")
        return study

    def action_new_study(self) -> None:
        self._open_form()

    def _open_form(self, prefill: study_launch.StudyRequest | None = None, title: str = "") -> None:
        from screens.new_study import NewStudyScreen

        app = self.app
        known = [(s.storage, s.name) for s in self.studies.values()]
        form = NewStudyScreen(
            optuna_dir=app.optuna_dir, runs_dir=app.runs_dir, checkpoints_dir=app.checkpoints_dir, known=known, prefill=prefill, title=title
        )
        app.push_screen(form, self._started)

    def _started(self, started: study_launch.StudyLaunch | None, how: str = "started") -> None:
        if started is None:
            return
        self.tracker.started(started)
        self.query_one(ProcessWatch).watch(started.launched)
        self.launched_at[(started.storage, started.study_name)] = time.time() - 1.0  # a second of slack for clock rounding
        self.select_when_listed = (started.storage, started.study_name)  # optimize creates the study in a moment
        self.notify(f"{started.study_name}: its output goes to {started.launched.log_path}", title=f"study {how}")
        self.action_refresh()

    def action_stop_study(self) -> None:
        study = self._selected()
        if study is None:
            return
        state = self._state(study)
        if state not in (StudyState.RUNNING, StudyState.STARTING):
            self.notify(f"{study.name} is {'stopping already' if state == 'stopping' else f'not running ({state})'}.", severity="warning")
            return
        self.tracker.stop_requested(study.storage, study.name)
        own = self.tracker.live_launch(study.storage, study.name)
        if own is not None and state == StudyState.STARTING:
            own.launched.process.send_signal(signal.SIGINT)  # not training yet: a stop request may come before its workers read it
        self.send_stop(study.storage, study.name)
        self.notify(f"Asked {study.name} to stop: running trials end after their current step, no new trial starts.", title="stopping")
        self.action_refresh()

    @work(thread=True, group="stop", exit_on_error=False, name="stopping the study")
    def send_stop(self, spec: str, name: str) -> None:
        from gpt2core.study_store import request_stop

        request_stop(name, storage=spec, results_dir=self.app.optuna_dir)

    def action_resume_study(self) -> None:
        study = self._selected()
        if study is None:
            return
        state = self._state(study)
        if state in ACTIVE_STUDY_STATES:
            self.notify(f"{study.name} is {state}; there is nothing to resume.", severity="warning")
            return
        recorded = study_launch.recorded_command(self.app.runs_dir, study.name, study.storage)
        if recorded is None:
            self.offer_resume_form(study.storage, study.name)
            return
        argv, cwd = recorded
        with os_errors_notified(self, f"resuming {study.name}"):
            started = study_launch.launch_study(argv, study_name=study.name, storage=study.storage, runs_dir=self.app.runs_dir, cwd=cwd)
            self._started(started, "resumed with the command that started it")

    @work(thread=True, group="resume", exit_on_error=False, name="reading the study's options")
    def offer_resume_form(self, spec: str, name: str) -> None:
        """A study started elsewhere: the form, filled with the options it stored, to check and start."""
        app = self.app
        fixed, n_trials = study_read.stored_options(spec, name)
        request = study_launch.request_for_study(
            name, spec, fixed, n_trials, runs_dir=app.runs_dir, checkpoints_dir=app.checkpoints_dir, results_dir=app.optuna_dir
        )
        title = Text.assemble(("Resume ", "bold"), (printable(name), "bold"), " · started outside this app: check its flags and trials")
        app.call_from_thread(self._open_form, request, title)

    def on_process_watch_ended(self, message: ProcessWatch.Ended) -> None:
        """Report a `gpt2tui optimize` started here that ended, and read the storages again."""
        started = self.tracker.ended(message.launched)
        if started is None:
            return
        name, log, code = started.study_name, started.launched.log_path, message.code
        if code == ExitCode.FINISHED:
            self.notify(f"{name} holds its trials (or reached --timeout); the summary is in {log}", title=f"{name} finished")
        elif code != ExitCode.STOPPED:  # a stop is reported when the table shows the study stopped
            self.notify(f"{message.last_line or f'exit code {code}'}\n(log: {log})", title=f"{name} exited", severity="error", timeout=15)
        self.action_refresh()
