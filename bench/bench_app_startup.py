"""Time to the console's first screen, measured as a user sees it.

Each program runs on a pseudo-terminal (80x24) in a fresh interpreter; the clock runs from
spawning the process until the first screen with its content (a run's name from runs/) has
been written to the terminal. Compared, in the same run on the same machine:

- ours: `python -m gpt2tui` on a runs/ folder with three runs;
- reference: a bare Textual app showing one line of text (the floor for any Textual app);
- torch import: `python -c "import torch"` alone, what the console avoids before it is needed.

Usage: python bench/bench_app_startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import pty
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

BARE_APP = """
from textual.app import App
from textual.widgets import Label
class Bare(App):
    def compose(self):
        yield Label("first-screen-marker")
Bare().run()
"""


def time_until_drawn(argv: list[str], marker: bytes, cwd: Path, timeout: float = 60.0) -> float:
    main, child = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "80", "LINES": "24"}
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdin=child, stdout=child, stderr=child, cwd=cwd, env=env, start_new_session=True)
    os.close(child)
    seen = b""
    try:
        while marker not in seen:
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"{argv} did not draw {marker!r} in {timeout}s")
            ready, _, _ = select.select([main], [], [], 0.05)
            if ready:
                try:
                    seen += os.read(main, 65536)
                except OSError:
                    break
        return time.perf_counter() - started
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        os.close(main)


def time_command(argv: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from tui_support import write_run

    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        for index, name in enumerate(("bench-first", "bench-second", "bench-third")):
            write_run(project / "runs", name, 50 + 10 * index)
        cases = {
            "ours: gpt2tui first screen": lambda: time_until_drawn([sys.executable, "-m", "gpt2tui"], b"bench-third", project),
            "reference: bare Textual app": lambda: time_until_drawn([sys.executable, "-c", BARE_APP], b"first-screen-marker", project),
            "for scale: import torch": lambda: time_command([sys.executable, "-c", "import torch"], project),
        }
        results = {name: [] for name in cases}
        for _ in range(args.repeat):  # interleaved, so machine load affects each case alike
            for name, case in cases.items():
                results[name].append(case())

    medians = {name: statistics.median(times) for name, times in results.items()}
    reference = medians["reference: bare Textual app"]
    print(f"device: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"median of {args.repeat} runs, seconds from spawn until drawn (80x24 pseudo-terminal)\n")
    print(f"{'case':<30} {'median s':>9} {'min s':>7} {'vs bare Textual':>16}")
    for name, times in results.items():
        print(f"{name:<30} {medians[name]:>9.3f} {min(times):>7.3f} {medians[name] / reference:>15.2f}x")


if __name__ == "__main__":
    main()
