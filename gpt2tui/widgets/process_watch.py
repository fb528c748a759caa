"""The one way the console watches the detached processes it starts (`gpt2tui train`,
`gpt2tui optimize`): a ``ProcessWatch`` in the screen, told ``watch(launched)``, posts
``ProcessWatch.Ended`` when that process exits, with its exit code and the last line of its log.

The processes run in their own sessions and outlive the app (gpt2tui.launch); the app needs to
hear only that one ended, typically badly (a bad flag: its run directory never appears, so the
lists alone would not show it). Each watch is a thread worker that waits on the child with a
short timeout, so it ends when the app does; the log is read in that thread, not on the UI
thread, because a long run's log can be megabytes.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from textual import work
from textual.message import Message
from textual.widget import Widget
from textual.worker import get_current_worker

from gpt2tui.launch import Launched

POLL_S = 0.25  # how soon an exit is heard; a wait this long costs nothing while it waits


class ProcessWatch(Widget):
    """Invisible; its messages bubble to the screen it is in (``on_process_watch_ended``)."""

    DEFAULT_CSS = "ProcessWatch { display: none; }"

    @dataclass
    class Ended(Message):
        launched: Launched
        code: int  # the exit status (an ExitCode for train and optimize)
        last_line: str  # the log's last non-empty line, "" when there is none

    @work(thread=True, group="process-watch", exit_on_error=False, name="watching a process")
    def watch(self, launched: Launched) -> None:
        worker = get_current_worker()
        while not worker.is_cancelled:
            try:
                code = launched.process.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                continue
            self.post_message(self.Ended(launched, code, launched.last_log_line()))
            return
