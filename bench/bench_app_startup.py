"""Time to the console's first screen, measured as a user sees it (issue 17: under 1 s with 20
runs on disk).

Each program runs on an 80x24 pseudo-terminal in a fresh interpreter; the clock runs from
spawning the process until a marker has been written to the terminal. Compared, in the same
invocation on the same machine, interleaved so load falls on each alike:

- ours, list: `python -m gpt2tui` until the newest run's name is drawn (the list, and the
  dashboard's title line);
- ours, dashboard: until that run's dashboard is filled from its metrics.jsonl (its outcome
  line, which only the folded records give);
- reference: a bare Textual app showing one line of text (the floor for any Textual app);
- for scale: `python -c "import torch"`, which the console avoids before it is needed.

The runs folder holds 20 runs made from one real `gpt2tui train` run (tiny preset, a few
steps): its records are repeated and renumbered into runs of 6 to 50,000 step records
(the trainer writes one every 10 steps, so up to a 500,000-step run, ~25 MB of metrics.jsonl),
with their status.json and config.json. The newest run, the one the console selects and
tails first, is the longest: the worst case for the dashboard.

Usage: python bench/bench_app_startup.py [--quick] [--repeat 7]
"""

from __future__ import annotations

import argparse
import copy
import fcntl
import json
import math
import os
import platform
import pty
import select
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

TARGET_S = 1.0  # issue 17: the first screen in under a second with 20 runs on disk
# Step records per run, oldest first (the trainer writes one per 10 steps by default).
RUN_LENGTHS = (6, 20, 50, 100, 150, 200, 300, 400, 500, 700, 1000, 1500, 2000, 3000, 4000, 5000, 8000, 10000, 20000, 50000)
EVAL_EVERY = 25  # step records between evaluations (eval interval 250 at log interval 10)
FLAGS_SHOWN = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")

BARE_APP = """
from textual.app import App
from textual.widgets import Label
class Bare(App):
    def compose(self):
        yield Label("first-screen-marker")
Bare().run()
"""


def cpu_line() -> str:
    """The machine in one line: CPU model, cores, the flags that decide precision, load."""
    from gpt2core.precision import cpu_flags

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    flags = cpu_flags()
    shown = " ".join(f"{flag}={'yes' if flag in flags else 'no'}" for flag in FLAGS_SHOWN)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"device: cpu, {model}, {os.cpu_count()} cores, {shown}; Python {platform.python_version()}; load average {load}"


def open_pty(columns: int = 80, lines: int = 24) -> tuple[int, int, dict]:
    """(main fd, child fd, environment) of a pseudo-terminal of the given size."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": str(lines)}
    return main, child, env


def time_until_drawn(argv: list[str], markers: list[bytes], cwd: Path, timeout: float = 60.0) -> list[float]:
    """Seconds from spawning ``argv`` until each of ``markers`` has been drawn."""
    main, child, env = open_pty()
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdin=child, stdout=child, stderr=child, cwd=cwd, env=env, start_new_session=True)
    os.close(child)
    seen, times = b"", {}
    try:
        while len(times) < len(markers):
            now = time.perf_counter() - started
            if now > timeout:
                raise TimeoutError(f"{argv} did not draw {[m for m in markers if m not in times]!r} in {timeout}s")
            ready, _, _ = select.select([main], [], [], 0.02)
            if ready:
                try:
                    seen += os.read(main, 65536)
                except OSError:
                    break
                now = time.perf_counter() - started
                times.update({m: now for m in markers if m not in times and m in seen})
        return [times[m] for m in markers]
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


# -- the runs on disk ---------------------------------------------------------------------------


def train_seed_run(project: Path) -> Path:
    """One real, short run: the record shapes, config and status every bench run is made from."""
    command = [
        sys.executable, "-m", "gpt2tui", "train", "--preset", "tiny", "--max-steps", "20", "--eval-interval", "10",
        "--eval-iters", "2", "--sample-tokens", "20", "--threads", "1", "--plain", "--run-name", "seed", "--no-tensorboard",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=project, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"the seed run failed (exit {result.returncode}): {result.stderr.strip()[-1500:]}")
    return project / "runs" / "seed"


def make_run(seed: Path, runs: Path, name: str, step_records: int, started: float) -> None:
    """A run of ``step_records`` step records, written in the seed run's exact record format."""
    records = [json.loads(line) for line in (seed / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in records if r["type"] == "run_started")
    template = {kind: next(r for r in records if r["type"] == kind) for kind in ("step", "eval", "sample", "finished")}
    saves = [r for r in records if r["type"] == "checkpoint"][:2]  # best + step, as an evaluation writes them
    interval = template["step"]["step"]  # the seed's log interval
    seconds_per_record = 0.9
    last_step = step_records * interval
    config = {**first["config"], "run_name": name, "train": {**first["config"]["train"], "max_steps": last_step}}
    out = [{**first, "run_name": name, "time": started, "config": config, "max_steps": last_step, "ends_by": f"max_steps (step {last_step})"}]
    step = 0
    for index in range(1, step_records + 1):
        step = index * interval
        now = started + index * seconds_per_record
        loss = 5.0 * math.exp(-index / 200) + 1.5
        out.append({**template["step"], "step": step, "time": now, "loss": loss, "tokens_seen": step * 1024, "elapsed_s": index * seconds_per_record})
        if index % EVAL_EVERY == 0:
            out.append({**template["eval"], "step": step, "time": now, "val_loss": loss + 0.1, "best_val_loss": loss + 0.1, "perplexity": math.exp(loss + 0.1)})
            out.append({**template["sample"], "step": step, "time": now})
            for save in saves:
                path = f"checkpoints/{name}/" + ("best" if save["is_best"] else f"step-{step:08d}")
                out.append({**save, "step": step, "time": now, "path": path})
    end = started + step_records * seconds_per_record
    out.append({**template["finished"], "step": step, "time": end, "elapsed_s": step_records * seconds_per_record,
                "best_checkpoint": f"checkpoints/{name}/best", "last_checkpoint": f"checkpoints/{name}/step-{step:08d}"})  # fmt: skip
    run = runs / name
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in out))
    (run / "config.json").write_text((seed / "config.json").read_text().replace('"seed"', json.dumps(name)))
    status = copy.deepcopy(json.loads((seed / "status.json").read_text()))
    status.update(started=started, heartbeat=end, step=step, max_steps=step, best_checkpoint=f"checkpoints/{name}/best")
    (run / "status.json").write_text(json.dumps(status, indent=2))


def build_runs(project: Path, seed: Path | None = None) -> tuple[str, int]:
    """20 runs under project/runs made from ``seed`` (a run directory; default: one trained now);
    returns the newest run's name and its metrics.jsonl size."""
    with tempfile.TemporaryDirectory() as seed_tmp:
        seed = seed or train_seed_run(Path(seed_tmp))
        start = time.time() - 86400 * 30
        for index, length in enumerate(RUN_LENGTHS):
            make_run(seed, project / "runs", f"bench-{index + 1:02d}-{length}", length, start + index * 86400)
    newest = f"bench-{len(RUN_LENGTHS):02d}-{RUN_LENGTHS[-1]}"
    return newest, (project / "runs" / newest / "metrics.jsonl").stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    args = parser.parse_args()
    repeat = 3 if args.quick else args.repeat

    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        newest, size = build_runs(project)
        outcome = b"step limit reached"  # the dashboard's outcome line, from the folded records
        results: dict[str, list[float]] = {"ours: list drawn": [], "ours: dashboard filled": [], "reference: bare Textual app": [], "for scale: import torch": []}
        for _ in range(repeat):  # interleaved, so machine load affects each case alike
            listed, filled = time_until_drawn([sys.executable, "-m", "gpt2tui"], [newest.encode(), outcome], project)
            results["ours: list drawn"].append(listed)
            results["ours: dashboard filled"].append(filled)
            results["reference: bare Textual app"].append(time_until_drawn([sys.executable, "-c", BARE_APP], [b"first-screen-marker"], project)[0])
            results["for scale: import torch"].append(time_command([sys.executable, "-c", "import torch"], project))

    medians = {name: statistics.median(times) for name, times in results.items()}
    reference = medians["reference: bare Textual app"]
    print(cpu_line())
    print(f"{len(RUN_LENGTHS)} runs on disk; the newest ({newest}) has {size / 1e6:.1f} MB of metrics.jsonl")
    print(f"median of {repeat} runs, seconds from spawn until drawn (80x24 pseudo-terminal)\n")
    print(f"{'case':<30} {'median s':>9} {'min s':>7} {'vs bare Textual':>16} {'vs 1 s target':>14}")
    for name, times in results.items():
        print(f"{name:<30} {medians[name]:>9.3f} {min(times):>7.3f} {medians[name] / reference:>15.2f}x {medians[name] / TARGET_S:>13.2f}x")
    verdict = "meets" if medians["ours: list drawn"] < TARGET_S else "misses"
    print(f"\nfirst screen (list drawn) {medians['ours: list drawn']:.3f} s: {verdict} the {TARGET_S:g} s target")


if __name__ == "__main__":
    main()
