"""What the dashboard computes and draws: RunProgress folded from a real metrics file, the
ETA for whichever limit ends the run first, and the loss chart's axes."""

from __future__ import annotations

import json

from textual.app import App

from gpt2tui.run_progress import MAX_POINTS, RunProgress
from gpt2tui.widgets.loss_chart import LossChart
from tui_support import loss_at, run, write_run


def folded(path) -> RunProgress:
    progress = RunProgress()
    for line in path.read_text().splitlines():
        progress.fold(json.loads(line))
    return progress


def test_progress_folds_a_run_directory(tmp_path):
    write_run(tmp_path, "r", 30, finish="stopped", max_steps=100, hours=1.0)
    p = folded(tmp_path / "r" / "metrics.jsonl")
    assert (p.run_name, p.device, p.max_steps, p.max_epochs, p.step) == ("r", "cpu", 100, 4, 30)
    assert p.train_points[-1] == (30, loss_at(30)) and len(p.val_points) == 3
    assert p.sample == (30, "The ", "sample text at 30")
    assert [c[0] for c in p.checkpoints] == [10, 20, 30] and p.warnings == [(5, "loss spiked at step 5")]
    assert p.outcome == "stopped at step 30 (checkpoint saved; r resumes)"
    snapshot = p.snapshot()
    p.fold({"type": "step", "step": 31, "epoch": 0.6, "loss": 1.0, "lr": 1e-4, "grad_norm": 1.0, "tokens_per_sec": 1.0,
            "mfu": None, "elapsed_s": 62.0, "eta_s": None})  # fmt: skip
    assert snapshot.step == 30 and len(snapshot.train_points) == 30  # a copy, not a view
    p.fold({"type": "from-a-newer-trainer"})
    p.fold({"type": "step", "step": "garbled"})
    assert p.step == 31


def test_eta_names_the_limit_that_ends_the_run_first():
    p = RunProgress(max_steps=1000, max_training_hours=1.0)
    for step in range(1, 11):  # 1 step per second, 10 steps done
        p.fold({"type": "step", "step": step, "epoch": step / 2000, "loss": 3.0, "lr": 1e-3, "grad_norm": 1.0,
                "tokens_per_sec": 1.0, "mfu": None, "elapsed_s": float(step), "eta_s": None, "time": 1000.0 + step})  # fmt: skip
    seconds, limit = p.eta(now=1010.0)
    assert limit == "steps" and seconds == 990  # 990 steps at 1/s beats 3590 s of budget
    p.max_training_hours = 0.1  # 360 s budget, 10 used
    assert p.eta(now=1010.0) == (350.0, "hours")
    p.max_epochs = 0.01  # 20 steps per epoch-hundredth: 10 more steps
    assert p.eta(now=1010.0) == (10.0, "epochs")


def test_histories_stay_bounded():
    p = RunProgress()
    for step in range(1, 3 * MAX_POINTS):
        p.fold({"type": "step", "step": step, "epoch": 0.0, "loss": 1.0 / step, "lr": 0.0, "grad_norm": 0.0,
                "tokens_per_sec": 0.0, "mfu": None, "elapsed_s": 0.0, "eta_s": None})  # fmt: skip
    assert len(p.train_points) <= MAX_POINTS
    assert p.train_points[0][0] == 1 and p.train_points[-1][0] > 2.9 * MAX_POINTS  # both ends kept


def test_loss_chart_draws_axes_labels_and_both_series():
    class Chart(App):
        def compose(self):
            yield LossChart()

    async def body():
        app = Chart()
        async with app.run_test(size=(60, 12)) as pilot:
            chart = app.query_one(LossChart)
            assert "waiting for the first step" in str(chart.render())
            chart.set_series([(s, loss_at(s)) for s in range(1, 201)], [(s, loss_at(s) + 0.1) for s in range(20, 201, 20)])
            await pilot.pause()
            lines = str(chart.render()).splitlines()
            assert len(lines) == 12
            assert lines[0].split("┤")[0].strip() == f"{loss_at(1) + (loss_at(1) - loss_at(200)) * 0.05:.3g}"  # top label
            assert lines[-2].lstrip().startswith("└") and lines[-1].split() == ["1", "step", "200"]
            body_text = "".join(lines[:-2])
            assert "●" in body_text and any(0x2800 < ord(ch) <= 0x28FF for ch in body_text)
            # The line falls from the top-left to the bottom-right, as the loss does.
            first_dot = next(i for i, line in enumerate(lines) if any(0x2800 < ord(ch) <= 0x28FF for ch in line))
            assert first_dot == 0 and any(0x2800 < ord(ch) <= 0x28FF for ch in lines[9])

    run(body())
