import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpt2core.events import EvalEvent, FinishedEvent, RunStarted, StepEvent, event_from_dict
from gpt2core.rundir import (
    METRICS,
    MetricsTail,
    RunBusyError,
    RunWriter,
    list_runs,
    read_run,
    request_stop,
    writer_alive,
)


def _started(name="r"):
    return RunStarted(run_name=name, config={}, device="cpu", num_params=10, max_steps=100, max_training_hours=1.0)


def _step(step, loss=2.0):
    return StepEvent(step=step, epoch=0.1, loss=loss, lr=1e-3, grad_norm=0.5, tokens_per_sec=100.0, mfu=None, elapsed_s=1.0, eta_s=9.0)


def test_writer_records_events_and_status(tmp_path):
    run = tmp_path / "r"
    with RunWriter(run, config={"lr": 1}) as writer:
        writer.on_event(_started())
        writer.on_event(_step(1, float("nan")))
        writer.on_event(EvalEvent(step=1, val_loss=1.5, perplexity=4.48, best_val_loss=1.5, is_best=True))
        assert read_run(run).state == "running"
        writer.on_event(FinishedEvent(step=1, reason="max_steps", best_val_loss=1.5, best_checkpoint=None, last_checkpoint=None, elapsed_s=2))
    lines = [json.loads(line) for line in (run / METRICS).read_text().splitlines()]
    assert [line["type"] for line in lines] == ["run_started", "step", "eval", "finished"]
    assert lines[1]["loss"] is None  # NaN is written as null, keeping the file valid JSON
    summary = read_run(run)
    assert (summary.state, summary.step, summary.best_val_loss) == ("finished", 1, 1.5)
    assert json.loads((run / "config.json").read_text()) == {"lr": 1}


def test_events_round_trip_through_json():
    for event in (_started(), _step(3), EvalEvent(step=3, val_loss=1.0, perplexity=2.7, best_val_loss=1.0, is_best=True)):
        assert event_from_dict(json.loads(json.dumps(event.to_dict()))) == event
    assert event_from_dict({"type": "from-the-future"}) is None


def test_second_writer_is_refused(tmp_path):
    with RunWriter(tmp_path / "r"):
        with pytest.raises(RunBusyError, match="another process"):
            RunWriter(tmp_path / "r")


def test_run_ending_without_finish_is_marked_failed(tmp_path):
    writer = RunWriter(tmp_path / "r")
    writer.on_event(_started())
    writer.close()
    assert read_run(tmp_path / "r").state == "failed"


def _writer_process(run: Path, *, before: str = "", after: str = "time.sleep(60)\n") -> subprocess.Popen:
    """Another process with a live RunWriter on ``run`` that has started its run, then printed
    'ready' (its first line of stdout); ``before`` runs before the writer opens, ``after`` then."""
    code = (
        "import signal, sys, time\n"
        "from gpt2core.rundir import RunWriter\n"
        "from gpt2core.events import RunStarted\n"
        f"{before}"
        f"w = RunWriter({str(run)!r})\n"
        "w.on_event(RunStarted(run_name='r', config={}, device='cpu', num_params=1, max_steps=1, max_training_hours=None))\n"
        "print('ready', flush=True)\n"
        f"{after}"
    )
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_killed_writer_is_stale(tmp_path):
    run = tmp_path / "r"
    proc = _writer_process(run)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert writer_alive(run) is True
        assert read_run(run).state == "running"
        proc.kill()
        proc.wait()
        assert writer_alive(run) is False
        assert read_run(run).state == "stale"
    finally:
        proc.kill()


def test_request_stop_reaches_the_writer(tmp_path):
    with RunWriter(tmp_path / "r") as writer:
        assert not writer.stop_requested()
        # The file half of request_stop (its signal half would hit this test process itself).
        (tmp_path / "r" / "stop_request").touch()
        assert writer.stop_requested()
    # A new run in the same directory does not inherit an old request.
    with RunWriter(tmp_path / "r") as writer:
        assert not writer.stop_requested()


def test_request_stop_signals_a_live_local_writer(tmp_path):
    run = tmp_path / "r"
    proc = _writer_process(
        run,
        before="got = []\nsignal.signal(signal.SIGTERM, lambda *a: got.append(1))\n",
        after="deadline = time.time() + 20\nwhile not got and time.time() < deadline: time.sleep(0.05)\nprint('stopped' if got and w.stop_requested() else 'no', flush=True)\n",
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        request_stop(run)
        assert proc.stdout.readline().strip() == "stopped"
    finally:
        proc.kill()


def test_metrics_tail_waits_for_whole_lines(tmp_path):
    path = tmp_path / METRICS
    path.write_text('{"a": 1}\n{"b"')
    tail = MetricsTail(path)
    assert tail.read_new() == [{"a": 1}]
    with open(path, "a") as f:
        f.write(': 2}\nnot json\n{"c": 3}\n')
    assert tail.read_new() == [{"b": 2}, {"c": 3}]
    assert tail.read_new() == []
    path.write_text('{"d": 4}\n')  # replaced by a shorter file: read from the start
    assert tail.read_new() == [{"d": 4}]


def test_list_runs_newest_first(tmp_path):
    for name in ("old", "new"):
        with RunWriter(tmp_path / name) as w:
            w.on_event(_started(name))
            w.on_event(FinishedEvent(step=0, reason="max_steps", best_val_loss=None, best_checkpoint=None, last_checkpoint=None, elapsed_s=0))
        time.sleep(0.01)
    (tmp_path / "not-a-run").mkdir()
    assert [r.name for r in list_runs(tmp_path)] == ["new", "old"]
