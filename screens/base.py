"""What every console screen shares: a failed worker or file operation becomes a notification,
never a crash."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from textual.screen import Screen
from textual.worker import Worker, WorkerState

from gpt2core.errors import GPT2Error


def describe_error(error: BaseException | None) -> str:
    """One line for a notification: the message alone for problems the user can fix."""
    if error is None:
        return "unknown error"
    if isinstance(error, GPT2Error):
        return str(error)
    return f"{type(error).__name__}: {error}"


@contextmanager
def os_errors_notified(screen: Screen, what: str) -> Iterator[None]:
    """For the file and process work a key does on the UI thread (a stop request, a launch):
    an OSError (read-only folder, full disk, a file in the way) becomes a notification and the
    rest of the block is skipped, instead of ending the app."""
    try:
        yield
    except OSError as exc:
        screen.notify(describe_error(exc), title=f"{what} failed", severity="error", timeout=10)


class ConsoleScreen(Screen):
    """Base of the console's top-level screens (workers run with exit_on_error=False)."""

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR:
            self.worker_failed(event.worker)

    def worker_failed(self, worker: Worker) -> None:
        """Tell the user; screens override to also reset what the worker was doing."""
        what = worker.name or worker.description or "background task"
        self.notify(describe_error(worker.error), title=f"{what} failed", severity="error", timeout=10)
