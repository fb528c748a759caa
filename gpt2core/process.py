"""Linux process controls through prctl(2): a parent-death signal and thread names.

Both are best-effort: on other systems (or without libc) they do nothing and say so by their
return value, and the callers keep a portable fallback (a watchdog thread, no name).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_PR_SET_NAME = 15
_libc = None


def _prctl(option: int, arg: int | bytes) -> bool:
    global _libc
    if not sys.platform.startswith("linux"):
        return False
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return _libc.prctl(option, arg, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def name_this_thread(name: str) -> bool:
    """Give the calling OS thread a name (15 bytes at most) that ps -L, top -H and /proc show."""
    return _prctl(_PR_SET_NAME, name.encode("ascii", "replace")[:15])


def die_with_parent(parent_pid: int, signum: int = signal.SIGTERM, poll_s: float = 1.0) -> None:
    """Deliver ``signum`` to this process when ``parent_pid`` (its parent) dies, however it dies
    (SIGKILL included), so workers never outlive the command that started them.

    On Linux the kernel does it (PR_SET_PDEATHSIG); the watchdog thread started on every system
    also catches the moment between fork and prctl and systems without prctl: it sees the
    parent gone when this process has been re-parented (getppid changes).
    """
    _prctl(_PR_SET_PDEATHSIG, int(signum))

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os.kill(os.getpid(), signum)

    threading.Thread(target=watch, name="gpt2tui-parent-watch", daemon=True).start()


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (one we may not signal counts as
    running: it exists). The one liveness test for writers of checkpoints and study trials."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError and the like: the process is there
        return True
    return True
