"""What the dashboard computes and draws: RunProgress folded from a real metrics file, the
ETA for whichever limit ends the run first, and the loss chart's axes."""

from __future__ import annotations

import json

from textual.app import App

from gpt2core.run_read import MAX_POINTS, Eta, RunProgress
from gpt2core.states import EndReason
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
    assert (p.run_name, p.device, p.max_steps, p.max_epochs, p.step) == ("r", "cpu", 100, None, 30)
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


def _started(max_steps: int, hours: float | None, **more) -> dict:
    return {"type": "run_started", "run_name": "r", "config": {}, "device": "cpu", "num_params": 1,
            "max_steps": max_steps, "max_training_hours": hours, "time": 1000.0, **more}  # fmt: skip


def _step(step: int, eta_s: float | None) -> dict:
    return {"type": "step", "step": step, "epoch": step / 2000, "loss": 3.0, "lr": 1e-3, "grad_norm": 1.0,
            "tokens_per_sec": 1.0, "mfu": None, "elapsed_s": float(step), "eta_s": eta_s, "time": 1000.0 + step}  # fmt: skip


def test_eta_is_the_trainers_estimate_and_names_the_limit_it_is_for():
    p = RunProgress()
    p.fold(_started(1000, 1.0, step_limit_from="max_steps"))
    p.fold(_step(10, None))
    assert p.eta(now=1010.0) is None and not p.budget_binds()  # speed not measured yet
    p.fold(_step(10, 990.0))  # 990 steps at 1 s each beats 3590 s of budget
    assert p.eta(now=1010.0) == Eta(990.0, EndReason.MAX_STEPS) and not p.budget_binds()
    assert p.eta(now=1015.0).seconds == 985.0 and p.eta(now=1015.0, live=False).seconds == 990.0  # counts down while live
    p.fold(_started(1000, 0.1, step_limit_from="max_steps"))  # 360 s budget, 10 used by the next step
    p.fold(_step(10, 350.0))
    assert p.eta(now=1010.0) == Eta(350.0, EndReason.TIME_BUDGET) and p.budget_binds()
    p.fold(_started(20, 0.1, step_limit_from="max_epochs", max_epochs=0.01))  # the epoch limit is 20 steps
    p.fold(_step(10, 10.0))
    assert p.eta(now=1010.0) == Eta(10.0, EndReason.MAX_EPOCHS) and p.eta(now=1010.0).limit_words == "epoch limit"


def test_eta_of_a_file_written_before_run_started_named_its_limits():
    """Older metrics.jsonl files say which option set the step limit only in the run config."""
    p = RunProgress()
    p.fold({**_started(200, None), "config": {"train": {"max_steps": None, "max_epochs": 4}}})
    p.fold(_step(10, 190.0))
    assert (p.max_epochs, p.eta(now=1010.0)) == (4, Eta(190.0, EndReason.MAX_EPOCHS))
    p.fold({**_started(100, None), "config": {"train": {"max_steps": 100, "max_epochs": 4}}})
    p.fold(_step(10, 90.0))
    assert p.eta(now=1010.0).limit == EndReason.MAX_STEPS


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
