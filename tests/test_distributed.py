"""Training on several processes: real torchrun launches of `gpt2tui train` with two CPU
processes talking over gloo, compared with single-process runs of the same global batch.

The runs use a constant learning rate (warmup 0, min-lr = lr) and no dropout, so a run that
stops at step 8 and resumes to 12 follows the same path as one that goes straight to 12, and
two ranks of 2 sequences each must train exactly like one process of 4 (up to float summation
order). Every launch costs ~10 s of process start-up on two cores, so the runs are few and small.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from train_helpers import one_thread, tiny_config, write_corpus  # noqa: F401  (one_thread is a fixture)

from gpt2core.checkpoint import CheckpointStore, load_checkpoint, load_trainer_state
from gpt2core.defaults import config_for_resume
from gpt2core.train import train
from gpt2tui.cli import cli
from gpt2tui.commands.distributed_launch import LaunchPlan, pop_launch_plan

pytestmark = pytest.mark.usefixtures("one_thread")

LAUNCH_TIMEOUT_S = 120  # per launch; a hang shows up as a failure, not a stuck suite
# fp32 on both sides whatever the CPU: one process and two sum in different orders, which bf16
# autocast would magnify past the tolerance (the automatic choice has its own test).
SAME_PATH = dict(grad_accum=2, learning_rate=3e-3, min_lr=3e-3, warmup_steps=0, dropout=0.0, eval_interval=4, precision="fp32")


def _flags(root: Path) -> list[str]:
    """The CLI spelling of tiny_config(root, **SAME_PATH) (micro model, char tokenizer, batch 4)."""
    corpus = write_corpus(root / "data")
    return [
        "--preset", "micro", "--data", str(corpus), "--tokenizer", "char", "--cache-dir", str(root / "cache"),
        "--context-length", "32", "--batch-size", "4", "--grad-accum", "2", "--learning-rate", "3e-3",
        "--min-lr", "3e-3", "--warmup-steps", "0", "--dropout", "0", "--eval-iters", "2", "--eval-interval", "4",
        "--log-interval", "1", "--sample-tokens", "0", "--max-epochs", "0", "--max-training-hours", "0",
        "--device", "cpu", "--precision", "fp32", "--plain", "--checkpoints-dir", str(root / "checkpoints"), "--runs-dir", str(root / "runs"),
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "GPT2TUI_DIST_TIMEOUT": "60",  # a collective that hangs fails within the test's time
        "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "60",
    }


def _gpt2tui(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpt2tui", "train", *args], cwd=root, env=_env(), capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S
    )


def _torchrun(root: Path, *args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "gpt2tui", "train", *args]
    return subprocess.Popen(command, cwd=root, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class _Lines:
    """Reads a process's stderr in a thread, so a test can wait for a line with a deadline."""

    def __init__(self, process: subprocess.Popen):
        self.lines: list[str] = []
        self.thread = threading.Thread(target=lambda: self.lines.extend(process.stderr), daemon=True)
        self.thread.start()

    def wait_for(self, prefix: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(line.startswith(prefix) for line in list(self.lines)):
            assert time.monotonic() < deadline, f"no line starting {prefix!r}:\n" + "".join(self.lines)
            time.sleep(0.1)

    def text(self) -> str:
        self.thread.join(timeout=10)
        return "".join(self.lines)


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _losses(records: list[dict]) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in records if r["type"] == "step"}


def _val_losses(records: list[dict]) -> dict[int, float]:
    return {r["step"]: r["val_loss"] for r in records if r["type"] == "eval"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, global batch 4 x 2 micro-steps, straight to step 12."""
    root = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(tiny_config(root, max_steps=12, **SAME_PATH), run_name="ref", runs_dir=root / "runs", checkpoints_dir=root / "checkpoints", tensorboard=False)
    finally:
        torch.set_num_threads(threads)
    records = _records(root / "runs" / "ref")
    return _losses(records), _val_losses(records)


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    """`gpt2tui train --nproc 2` with the reference's flags, to step 8."""
    root = tmp_path_factory.mktemp("two")
    done = _gpt2tui(root, *_flags(root), "--max-steps", "8", "--run-name", "two", "--nproc", "2")
    return root, done


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_same_global_batch(reference, two_rank_run):
    ref_losses, ref_val = reference
    root, done = two_rank_run
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("run two: max_steps at step 8") == 1  # rank 0 alone reports
    assert "(fp32) x 2 processes (gloo); batch 4 sequences per micro-step (2 per process) x 2 accumulation = 8 per step" in done.stderr
    assert done.stderr.count("step 8/8 | loss") == 1 and " per rank) | MFU" in done.stderr

    records = _records(root / "runs" / "two")
    losses = _losses(records)
    assert sorted(losses) == list(range(1, 9))
    assert losses == pytest.approx({s: ref_losses[s] for s in losses}, rel=1e-5)
    assert _val_losses(records) == pytest.approx({s: ref_val[s] for s in (0, 4, 8)}, rel=1e-5)
    assert losses[8] < losses[1] - 0.1  # and it learns

    # one run, written once: a single metrics stream, TensorBoard file, status and set of checkpoints
    assert [p.name for p in (root / "runs").iterdir()] == ["two"]
    assert [r["type"] for r in records].count("run_started") == 1 and [r["type"] for r in records].count("finished") == 1
    started = next(r for r in records if r["type"] == "run_started")
    assert started["world_size"] == 2 and started["config"]["backend"] == "gloo"
    assert started["config"]["batch"] == {
        "world_size": 2, "batch_size": 4, "per_rank_batch_size": 2, "grad_accum": 2, "sequences_per_step": 8, "tokens_per_step": 256,
    }  # fmt: skip
    steps = [r for r in records if r["type"] == "step"]
    assert all(r["world_size"] == 2 and len(r["rank_tokens_per_sec"]) == 2 and min(r["rank_tokens_per_sec"]) > 0 for r in steps)
    writers = {path.name.split(".")[-2] for path in (root / "runs" / "two").glob("events.out.tfevents*")}
    assert len(writers) == 1  # TensorBoard files of one process (events.out.tfevents.<time>.<host>.<pid>.<n>)
    saved = [(r["step"], r["is_best"]) for r in records if r["type"] == "checkpoint"]
    assert len(saved) == len(set(saved))
    assert sorted(p.name for p in (root / "checkpoints" / "two").iterdir()) == ["best", "step-00000004", "step-00000008"]
    status = json.loads((root / "runs" / "two" / "status.json").read_text())
    assert (status["state"], status["step"], status["world_size"]) == ("finished", 8, 2)
    state = load_trainer_state(root / "checkpoints" / "two" / "step-00000008")
    assert len(state["rank_rng"]) == 1  # rank 1's dropout stream, beside rank 0's own "rng"
    assert load_checkpoint(root / "checkpoints" / "two" / "step-00000008").info.meta["world_size"] == 2


@pytest.mark.slow
def test_a_two_process_checkpoint_resumes_on_one(reference, two_rank_run):
    ref_losses, _ = reference
    root, done = two_rank_run
    assert done.returncode == 0, done.stderr
    config, directory = config_for_resume("two", {"max_steps": 12}, root / "checkpoints")
    result = train(config, resume_from=directory, runs_dir=root / "runs", checkpoints_dir=root / "checkpoints", tensorboard=False)
    assert (result.reason, result.step) == ("max_steps", 12)
    records = _records(root / "runs" / "two")
    resumed = next(r for r in reversed(records) if r["type"] == "run_started")
    assert (resumed["world_size"], resumed["start_step"]) == (1, 8)
    losses = _losses(records)
    assert {s: losses[s] for s in range(9, 13)} == pytest.approx({s: ref_losses[s] for s in range(9, 13)}, rel=1e-5)


@pytest.mark.slow
def test_a_one_process_checkpoint_resumes_on_two_and_sigterm_to_the_launcher_stops_it(tmp_path, reference):
    # The constant learning rate makes the step limit irrelevant to the path: the resumed run
    # goes on until the launcher is told to stop, after step 12.
    ref_losses, _ = reference
    train(tiny_config(tmp_path, max_steps=8, **SAME_PATH), run_name="solo", runs_dir=tmp_path / "runs", checkpoints_dir=tmp_path / "checkpoints", tensorboard=False)
    flags = _flags(tmp_path)
    resume = ["--resume-from", "solo", "--max-steps", "100000", "--nproc", "2", "--plain", *flags[flags.index("--checkpoints-dir") :]]
    command = [sys.executable, "-m", "gpt2tui", "train", *resume]
    process = subprocess.Popen(command, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = _Lines(process)
    try:
        lines.wait_for("step 12/", LAUNCH_TIMEOUT_S)
        process.send_signal(signal.SIGTERM)
        stdout = process.stdout.read()
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = lines.text()
    assert process.returncode == 130, stderr
    assert "resuming at step 8" in stderr and " x 2 processes (gloo)" in stderr
    assert "SIGTERM: every process finishes this step" in stderr and "Traceback" not in stderr
    assert "continue it:" in stdout

    records = _records(tmp_path / "runs" / "solo")
    losses = _losses(records)
    assert {s: losses[s] for s in range(9, 13)} == pytest.approx({s: ref_losses[s] for s in range(9, 13)}, rel=1e-5)
    reasons = [r["reason"] for r in records if r["type"] == "checkpoint"]
    assert reasons[-1] == "stop" and reasons.count("stop") == 1
    status = json.loads((tmp_path / "runs" / "solo" / "status.json").read_text())
    assert (status["state"], status["world_size"]) == ("stopped", 2)
    assert load_trainer_state(CheckpointStore(tmp_path / "checkpoints" / "solo", cleanup=False).latest())["step"] == status["step"]


@pytest.mark.slow
def test_sigterm_to_torchrun_stops_both_ranks_with_one_final_checkpoint(tmp_path):
    process = _torchrun(tmp_path, *_flags(tmp_path), "--max-steps", "100000", "--eval-interval", "100000", "--run-name", "sig")
    lines = _Lines(process)
    try:
        lines.wait_for("step 3", LAUNCH_TIMEOUT_S)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = lines.text()
    assert "forcefully exiting" not in stderr and "Error:" not in stderr, stderr  # no worker had to be killed
    assert stderr.count("SIGTERM: finishing this step") == 1  # said once, by rank 0
    records = _records(tmp_path / "runs" / "sig")
    stops = [r for r in records if r["type"] == "checkpoint"]
    assert [r["reason"] for r in stops] == ["stop"]
    status = json.loads((tmp_path / "runs" / "sig" / "status.json").read_text())
    assert status["state"] == "stopped"
    assert load_trainer_state(CheckpointStore(tmp_path / "checkpoints" / "sig", cleanup=False).latest())["step"] == status["step"] == stops[0]["step"]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the worker through /proc")
def test_a_rank_that_dies_fails_the_job_in_bounded_time(tmp_path):
    process = _torchrun(tmp_path, *_flags(tmp_path), "--max-steps", "100000", "--eval-interval", "100000", "--run-name", "dies")
    lines = _Lines(process)
    try:
        lines.wait_for("step 3", LAUNCH_TIMEOUT_S)
        children = [int(pid) for path in Path(f"/proc/{process.pid}/task").glob("*/children") for pid in path.read_text().split()]
        rank_1 = [pid for pid in children if b"\0RANK=1\0" in b"\0" + Path(f"/proc/{pid}/environ").read_bytes()]
        assert len(rank_1) == 1, children
        os.kill(rank_1[0], signal.SIGKILL)
        killed_at = time.monotonic()
        process.wait(timeout=60)
        took = time.monotonic() - killed_at
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0 and took < 30, (process.returncode, took)
    status = json.loads((tmp_path / "runs" / "dies" / "status.json").read_text())
    assert status["state"] == "failed" and "lost each other" in status["message"]
    assert "lost each other" in lines.text()


@pytest.mark.slow
def test_the_dashboard_shows_world_size_and_per_rank_speed(two_rank_run):
    from textual.app import App

    from gpt2core.run_read import RunProgress
    from screens.dashboard import Dashboard

    root, done = two_rank_run
    assert done.returncode == 0, done.stderr
    progress = RunProgress()
    records = _records(root / "runs" / "two")
    for record in records[: [r["type"] for r in records].index("finished") + 1]:  # the 2-process part (a test resumes it on 1)
        progress.fold(record)
    assert progress.world_size == 2 and len(progress.rank_tokens_per_sec) == 2

    class Host(App):
        def compose(self):
            yield Dashboard()

    async def body() -> tuple[str, str]:
        async with Host().run_test(size=(100, 40)) as pilot:
            dashboard = pilot.app.query_one(Dashboard)
            dashboard.show_progress(progress)
            await pilot.pause()
            return str(dashboard.query_one("#dash-title").render()), str(dashboard.query_one("#ranks").render())

    import asyncio

    title, ranks = asyncio.run(body())
    assert "2 processes" in title
    assert ranks.startswith("2 processes · tokens/s per rank: r0 ") and " r1 " in ranks


def test_forwarded_flags_repeat_what_was_given():
    from gpt2tui.commands.train import train as train_command
    from gpt2tui.commands.distributed_launch import forwarded_args

    given = ["--data", "a.txt", "--data", "b.txt", "--lr", "0.01", "--no-tensorboard", "--plain", "--betas", "0.8,0.9", "--nproc", "2", "--run-name", "x"]
    ctx = train_command.make_context("train", given)
    assert forwarded_args(ctx, {"nproc", "run_name"}) == [
        "--data", "a.txt", "--data", "b.txt", "--learning-rate", "0.01", "--betas", "0.8,0.9", "--no-tensorboard", "--plain",
    ]  # fmt: skip


def test_launch_flags_are_checked_before_anything_starts(tmp_path):
    flags = _flags(tmp_path)
    cases = [
        (["--nproc", "3"], "--batch-size 4 does not split evenly over 3 processes"),
        (["--node-rank", "1"], "only apply to runs on several processes"),
        (["--nproc", "2", "--nnodes", "2"], "needs a meeting point"),
        (["--nproc", "2", "--nnodes", "2", "--master-addr", "10.0.0.1"], "needs its own --node-rank"),
        (["--nproc", "2", "--nnodes", "2", "--master-addr", "10.0.0.1", "--node-rank", "2"], "out of range"),
    ]
    for extra, message in cases:
        out = CliRunner().invoke(cli, ["train", *flags, "--max-steps", "2", *extra])
        assert out.exit_code in (1, 2) and message in out.output and "Traceback" not in out.output, out.output
    assert not (tmp_path / "runs").exists()


def test_torchrun_placement_follows_the_flags():
    one = pop_launch_plan({"nproc": 4, "max_steps": 3})
    assert one == LaunchPlan(nproc=4) and one.torchrun_args("r") == ["--nproc-per-node", "4", "--standalone"]
    assert pop_launch_plan({"nproc": 1}) is None and pop_launch_plan({}) is None
    rdzv = pop_launch_plan({"nproc": 8, "nnodes": 2, "rdzv_endpoint": "head:29400"})
    assert rdzv.world_size == 16
    assert rdzv.torchrun_args("job") == ["--nproc-per-node", "8", "--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", "head:29400", "--rdzv-id", "job"]
    static = pop_launch_plan({"nproc": 2, "nnodes": 2, "master_addr": "head", "node_rank": 1, "master_port": 1234})
    assert static.torchrun_args(None)[-6:] == ["--node-rank", "1", "--master-addr", "head", "--master-port", "1234"]
