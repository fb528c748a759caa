"""Which limit ends a run, how many threads it uses, and when the clock may shape its schedule.

Explicit limits are never cut or reshaped by implicit ones; a run with an explicit step or
epoch limit gets a fixed thread count, recorded and reused on resume; a budget moves the
learning-rate horizon only once it is the limit that will end the run, says so, and the
settled schedule survives a resume.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from reliability_helpers import start_forkserver, train_flags, warm

from gpt2core.defaults import build_run_config
from gpt2core.schedule import CosineSchedule, RunPlan


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_an_explicit_epoch_limit_gets_no_implicit_budget_or_step_limit():
    t = build_run_config({"device": "cpu", "max_epochs": 10}).train
    assert (t.max_epochs, t.max_steps, t.max_training_hours) == (10, None, None)
    assert t.threads is None  # a fixed count (torch's), not the tuner
    named = build_run_config({"preset": "micro", "max_steps": 5}).train
    assert (named.max_steps, named.max_epochs, named.max_training_hours) == (5, None, None)


def test_the_no_option_run_keeps_its_budget_and_thread_tuner():
    t = build_run_config({"device": "cpu"}).train
    assert t.max_training_hours is not None and t.max_training_hours * 60 <= 5 and t.threads == "auto"
    assert build_run_config({"device": "cpu", "max_steps": 100, "threads": "auto"}).train.threads == "auto"


def test_a_learning_rate_without_min_lr_gets_lr_over_ten():
    t = build_run_config({"device": "cpu", "learning_rate": 5e-5}).train
    assert t.min_lr is None and t.final_lr == pytest.approx(5e-6)


def test_the_budget_moves_the_horizon_only_once_it_will_end_the_run():
    plan = RunPlan(CosineSchedule(1e-3, 1e-4, 5, 100), step_limit=100, step_reason="max_steps", budget_s=60.0)
    assert plan.observe(10, 10.0, 0.05, 0.0) is None  # 1000 steps would fit: the step limit ends it
    assert plan.schedule.horizon == 100 and not plan.budget_governs
    assert plan.observe(20, 20.0, 0.3, 0.0) is None  # a slow patch that still fits 153 steps
    assert plan.schedule.horizon == 100
    notice = plan.observe(30, 40.0, 1.0, 0.0)  # 50 steps fit: the budget will end it
    assert notice and "time budget will end this run" in notice and plan.budget_governs
    assert plan.schedule.horizon == 50
    resumed = RunPlan(CosineSchedule(1e-3, 1e-4, 5, 100), step_limit=100, step_reason="max_steps", budget_s=60.0)
    resumed.load_state_dict(json.loads(json.dumps(plan.state_dict())))
    assert resumed.budget_governs and resumed.schedule.horizon == 50  # the settled schedule continues
    longer = RunPlan(CosineSchedule(1e-3, 1e-4, 5, 200), step_limit=200, step_reason="max_steps", budget_s=None)
    longer.load_state_dict(plan.state_dict())
    assert longer.schedule.horizon == 200 and not longer.budget_governs  # a changed limit re-plans


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    start_forkserver()
    return tmp_path_factory.mktemp("limits")


def _without(args: list[str], *names: str) -> list[str]:
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in names:
            skip = True
            continue
        out.append(arg)
    return out


def test_threads_are_fixed_recorded_and_reused_on_resume(root):
    """No --threads, an explicit --max-steps: one fixed count, said in the first line and the
    summary, recorded in the checkpoint; the resume (with another step limit) uses it again."""
    args = _without(train_flags(root, steps=6), "--threads", "--max-training-hours", "--max-epochs")
    child = warm([*args, "--run-name", "fixed", "--threads", "1"], root, root / "fixed.log")
    assert child.wait() == 0, child.output()
    assert "threads: 1, fixed" in child.output() and "finished at step 6 (max_steps)" in child.output()
    started = _events(root / "runs" / "fixed")[0]
    assert started["threads"] == 1 and started["max_training_hours"] is None
    resumed = warm(["train", "--plain", "--no-tensorboard", "--resume-from", "fixed", "--max-steps", "9", "--runs-dir", str(root / "runs"), "--checkpoints-dir", str(root / "checkpoints")], root, root / "fixed-2.log")
    assert resumed.wait() == 0, resumed.output()
    events = _events(root / "runs" / "fixed")
    again = [e for e in events if e["type"] == "run_started"][-1]
    assert again["threads"] == 1 and again["start_step"] == 6
    finished = [e for e in events if e["type"] == "finished"][-1]
    assert (finished["reason"], finished["step"], finished["threads"]) == ("max_steps", 9, 1)
    implicit = warm([*args, "--run-name", "implicit"], root, root / "implicit.log")
    assert implicit.wait() == 0, implicit.output()
    assert isinstance(_events(root / "runs" / "implicit")[0]["threads"], int)  # not "auto"


def test_a_budget_that_ends_the_run_says_so_and_saves_its_schedule(root):
    from gpt2core.checkpoint import load_trainer_state

    args = _without(train_flags(root, steps=100_000), "--max-training-hours")
    child = warm([*args, "--run-name", "budget", "--max-training-hours", "0.0008"], root, root / "budget.log")  # ~3 s
    assert child.wait() == 0, child.output()
    events = _events(root / "runs" / "budget")
    notices = [e for e in events if e["type"] == "warning" and "time budget will end this run" in e["message"]]
    assert len(notices) == 1
    assert [e for e in events if e["type"] == "finished"][-1]["reason"] == "time_budget"
    last = sorted((root / "checkpoints" / "budget").glob("step-*"))[-1]
    schedule = load_trainer_state(last)["schedule"]
    assert schedule["budget_governs"] is True and schedule["horizon"] < 100_000


def test_a_flag_the_user_fixed_is_taken_out_of_the_search(root):
    import subprocess
    import sys

    from gpt2core.search_space import DEFAULT_SPACE, SearchSpace

    space = SearchSpace(DEFAULT_SPACE).without_fixed({"batch_size": 4, "min_lr": 1e-5})
    enabled = {p.name for p in space.enabled}
    assert "batch_size" not in enabled and "min_lr_ratio" not in enabled and "learning_rate" in enabled
    shown = subprocess.run([sys.executable, "-m", "gpt2tui", "optimize", "--batch-size", "4", "--show-space"], capture_output=True, text=True, cwd=root)
    assert shown.returncode == 0, shown.stderr
    block = shown.stdout.split("[params.batch_size]")[1].split("[params.")[0]
    assert "enabled = false" in block and "(fixed: batch-size = 4)" in shown.stdout
