"""One read model per run (gpt2core/run_read.py): the ETA that `gpt2tui train` prints, the one
`gpt2tui runs` lists and the one the dashboard shows are one number for the same records. A real
`gpt2tui train` process writes the records; its own plain log, a real `gpt2tui runs --json`
and the real Dashboard widget read them."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from textual.app import App

from gpt2core.run_read import Eta, RunProgress, read_progress
from gpt2core.rundir import request_stop
from gpt2core.states import EndReason, ExitCode
from gpt2tui.humanize import duration
from reliability_helpers import cold, train_flags
from screens.dashboard import Dashboard
from tui_support import write_run

STEP_LINE = re.compile(r"^step (\d+)/100000 \|.*\| [^|]* elapsed, ETA ([^|\n]+?) *(?:\||$)", re.MULTILINE)  # '1d 16:53:01' has a space


def _records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.endswith("}")]


def _wait_for_measured_steps(run_dir, process, count: int) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        if (run_dir / "metrics.jsonl").exists():
            steps = [r for r in _records(run_dir) if r["type"] == "step" and r["eta_s"] is not None]
            if len(steps) >= count:
                return
        time.sleep(0.2)
    raise AssertionError(f"the trainer did not write {count} measured steps (exit {process.poll()})")


def _dashboard_lines(records: list[dict]) -> dict[int, str]:
    """What the real Dashboard's ETA line says, fed the records up to each step record, at the
    moment that record was written."""

    class Host(App):
        def compose(self):
            yield Dashboard()

    async def body() -> dict[int, str]:
        shown: dict[int, str] = {}
        async with Host().run_test(size=(100, 40)) as pilot:
            dashboard = pilot.app.query_one(Dashboard)
            progress = RunProgress()
            for record in records:
                progress.fold(record)
                if record["type"] == "step":
                    dashboard.show_progress(progress.snapshot())
                    shown[record["step"]] = dashboard.eta_text(record["time"], live=True)
        return shown

    return asyncio.run(body())


def test_a_long_metrics_file_is_read_by_its_ends_with_the_same_eta(tmp_path, monkeypatch):
    """`gpt2tui runs` reads a live run's file once: a long one by its head (the run_started) and
    its tail (the latest step), and the ETA is the one the whole file gives."""
    from gpt2core import run_read

    write_run(tmp_path, "long", 100, finish=None, max_steps=1000, hours=1.0)
    whole = read_progress(tmp_path / "long")
    size = (tmp_path / "long" / "metrics.jsonl").stat().st_size
    monkeypatch.setattr(run_read, "READ_WHOLE_BYTES", size // 4)
    monkeypatch.setattr(run_read, "READ_END_BYTES", size // 8)
    ends = read_progress(tmp_path / "long")
    assert len(ends.train_points) < len(whole.train_points) == 100  # the middle was not read
    assert (ends.run_name, ends.max_steps, ends.step) == ("long", 1000, 100)
    assert ends.eta(now=whole.last_step_at) == whole.eta(now=whole.last_step_at) == Eta(1800.0, EndReason.MAX_STEPS)


def test_a_missing_or_hostile_metrics_file_reads_as_nothing(tmp_path):
    (tmp_path / "fifo").mkdir()
    os.mkfifo(tmp_path / "fifo" / "metrics.jsonl")  # opening it would block: it is never opened
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "metrics.jsonl").write_text("[" * 100_000 + "\n" + json.dumps({"type": "step", "step": "x"}) + "\n")
    (tmp_path / "texts").mkdir()  # numbers as text where the ETA does arithmetic: those records are skipped
    started = {"type": "run_started", "run_name": "t", "config": {}, "device": "cpu", "num_params": 1, "max_steps": 10, "max_training_hours": "1"}
    step = {"type": "step", "step": 1, "epoch": 0.0, "loss": 3.0, "lr": 0.1, "grad_norm": 1.0, "tokens_per_sec": 1.0, "mfu": None, "elapsed_s": 1.0}
    lines = [started, {**step, "eta_s": "soon"}, {**step, "eta_s": 9.0, "elapsed_s": "1"}]
    (tmp_path / "texts" / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    for name in ("none", "fifo", "deep", "texts"):
        progress = read_progress(tmp_path / name)
        assert (progress.step, progress.eta()) == (0, None)


@pytest.mark.slow
def test_the_cli_runs_and_the_dashboard_show_one_eta(tmp_path):
    run_dir = tmp_path / "runs" / "eta"
    with open(tmp_path / "train.log", "w") as log:
        trainer = cold(train_flags(tmp_path, steps=100_000, run_name="eta"), tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_measured_steps(run_dir, trainer, 5)
        # Frozen, the trainer writes nothing while `gpt2tui runs` reads: the ETA it lists is the
        # read model's, counted down to a moment between t0 and t1.
        os.kill(trainer.pid, signal.SIGSTOP)
        try:
            t0 = time.time()
            listed = subprocess.run(
                [sys.executable, "-m", "gpt2tui", "runs", "--json", "--runs-dir", str(tmp_path / "runs")],
                cwd=tmp_path, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            t1 = time.time()
            wide = {**os.environ, "COLUMNS": "200"}
            t2 = time.time()
            table = subprocess.run([sys.executable, "-m", "gpt2tui", "runs", "--runs-dir", str(tmp_path / "runs")], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=wide)
            t3 = time.time()
            frozen = read_progress(run_dir)
        finally:
            os.kill(trainer.pid, signal.SIGCONT)
        assert listed.returncode == 0, listed.stderr
        (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
        assert row["state"] == "running" and row["ends_by"] == EndReason.MAX_STEPS
        assert frozen.eta(now=t1).seconds <= row["eta_s"] <= frozen.eta(now=t0).seconds
        between = range(int(frozen.eta(now=t3).seconds), int(frozen.eta(now=t2).seconds) + 1)  # whole seconds, as shown
        assert any(f"  {duration(seconds)}  " in table.stdout for seconds in between), table.stdout  # the ETA column
        request_stop(run_dir)
        assert trainer.wait(timeout=120) == ExitCode.STOPPED
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait()

    printed = {int(step): eta for step, eta in STEP_LINE.findall((tmp_path / "train.log").read_text())}
    shown = _dashboard_lines(_records(run_dir))
    assert len(printed) >= 5 and set(printed) <= set(shown)
    measured = {step: eta for step, eta in printed.items() if eta != "–"}
    assert len(measured) >= 5 and any(eta != "0:00" for eta in measured.values())  # minutes left, not a trivial 0:00
    for step, eta in printed.items():
        assert shown[step] == (f"ETA {eta} · ends at the step limit" if eta != "–" else "ETA: measuring speed…"), step
