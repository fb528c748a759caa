"""The runs screen's actions on one run: start one (the form), stop, resume, chat with it, and
what the processes started here say when they end. A mixin of ``RunsScreen``, kept apart so
each module stays small; it uses the screen's ``runs``, ``selected``, ``launched``, its
Dashboard and its ProcessWatch.
Start, stop and resume go through files and detached processes (gpt2tui.launch,
gpt2core.rundir.request_stop), so runs started in another terminal behave the same.
"""

from __future__ import annotations

from pathlib import Path

from gpt2core.rundir import RunSummary, request_stop
from gpt2core.states import LIVE_RUN_STATES, RESUMABLE_RUN_STATES, ExitCode
from gpt2tui import launch
from gpt2tui.widgets.process_watch import ProcessWatch
from screens.base import os_errors_notified
from screens.dashboard import Dashboard

TRAIN_EXIT_OK = (ExitCode.FINISHED, ExitCode.STOPPED)  # `gpt2tui train`: finished, or stopped on request with a checkpoint


class RunActions:
    """Keys n, s, r, c of the runs screen (see RunsScreen.BINDINGS)."""

    def action_new_run(self) -> None:
        from screens.new_run import NewRunScreen

        self.app.push_screen(NewRunScreen(runs_dir=str(self.runs_dir), checkpoints_dir=self.app.checkpoints_dir), self._start)

    def _start(self, launched: launch.Launched | None) -> None:
        if launched is None:
            return
        self.notify(f"Started {launched.name}; its output goes to {launched.log_path}", title="run started", markup=False)
        self.select_when_listed = launched.name  # the trainer creates its directory in a moment
        self.watch_launch(launched)
        self.list_runs()

    def action_stop_run(self) -> None:
        run = self._selected_run()
        if run is None:
            return
        if run.state not in LIVE_RUN_STATES:
            self.notify(f"{run.name} is not running ({run.state}).", severity="warning", markup=False)
            return
        with os_errors_notified(self, f"stopping {run.name}"):
            request_stop(run.path)
            self.notify(f"Asked {run.name} to stop; it saves a checkpoint, then exits.", title="stopping", markup=False)

    def action_resume_run(self) -> None:
        run = self._selected_run()
        if run is None:
            return
        if run.state not in RESUMABLE_RUN_STATES:
            self.notify(f"{run.name} is {run.state}; only a stopped, failed or stale run can resume.", severity="warning", markup=False)
            return
        checkpoint_dir = self._checkpoint_dir(run)
        if checkpoint_dir is None:
            self.notify(f"{run.name} has no checkpoint to resume from.", severity="error", markup=False)
            return
        argv = launch.resume_command(
            run.name, checkpoint_dir, runs_dir=str(self.runs_dir), checkpoints_dir=self.app.checkpoints_dir
        )
        with os_errors_notified(self, f"resuming {run.name}"):
            launched = launch.launch_detached(argv, name=run.name, runs_dir=self.runs_dir)
            self.notify(f"Resuming {run.name} from {checkpoint_dir}", title="resuming", markup=False)
            self.watch_launch(launched)

    def _checkpoint_dir(self, run: RunSummary) -> Path | None:
        """The run's checkpoint folder: where its checkpoints were written, else the default."""
        progress = self.query_one(Dashboard).progress
        candidates = [Path(self.app.checkpoints_dir) / run.name]
        if progress and progress.run_name == run.name and progress.checkpoints:
            candidates.insert(0, Path(progress.checkpoints[-1][1]).parent)
        return next((path for path in candidates if path.is_dir()), None)

    def action_chat_run(self) -> None:
        run = self._selected_run()
        if run is None:
            return
        checkpoint_dir = self._checkpoint_dir(run)
        if checkpoint_dir is None:
            progress = self.query_one(Dashboard).progress
            if progress and progress.run_name == run.name and progress.checkpoints_deleted():
                why = (
                    f"{run.name}'s checkpoints were deleted: none of the {len(progress.checkpoints)} it wrote is on disk"
                    " (a study deletes its worse trials' checkpoints); the checkpoints tab lists them."
                )
                self.notify(why, severity="warning", markup=False)
            else:
                self.notify(f"{run.name} has not written a checkpoint yet.", severity="warning", markup=False)
            return
        self.app.open_chat(str(checkpoint_dir))

    def watch_launch(self, launched: launch.Launched) -> None:
        self.launched.append(launched)
        self.query_one(ProcessWatch).watch(launched)

    def on_process_watch_ended(self, message: ProcessWatch.Ended) -> None:
        """A process started here ended: the list shows how; a bad end (e.g. a bad flag, whose
        run directory never appears) is said here too."""
        self.list_runs()
        if message.code not in TRAIN_EXIT_OK:
            failure = message.last_line or f"exit code {message.code}"
            self.notify(f"{failure}\n(log: {message.launched.log_path})", title=f"{message.launched.name} exited", severity="error", timeout=15, markup=False)

