"""`gpt2tui train` and `gpt2tui runs` as users call them: flags (dashed and underscored), a
TOML config, errors, exit codes, and a real process stopped with SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from train_helpers import one_thread, write_corpus  # noqa: F401  (one_thread is a fixture)

from gpt2core.checkpoint import CheckpointStore, load_checkpoint, load_trainer_state
from gpt2tui.cli import cli

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]


def _base_args(tmp_path: Path) -> list[str]:
    corpus = write_corpus(tmp_path / "data")
    return [
        "--runs-dir", str(tmp_path / "runs"),
        "train",
        "--preset", "micro",
        "--data", str(corpus),
        "--tokenizer", "char",
        "--cache_dir", str(tmp_path / "cache"),
        "--context-length", "32",
        "--batch_size", "4",
        "--eval-iters", "2",
        "--sample-tokens", "0",
        "--checkpoints-dir", str(tmp_path / "checkpoints"),
        "--device", "cpu",
        "--plain",
    ]  # fmt: skip


def test_train_cli_runs_logs_and_summarises(tmp_path):
    args = _base_args(tmp_path) + ["--max_steps", "6", "--eval_interval", "3", "--log-interval", "2", "--run_name", "cli", "--learning_rate", "0.01", "--betas", "0.8,0.9", "--no_tensorboard", "--threads", "1"]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    assert "gpt2tui generate --checkpoint" in out.stdout and "best val loss" in out.stdout
    assert "unigram" in out.stdout
    assert "step 2/6 | loss" in out.stderr and "eval at step 3" in out.stderr and "step" not in out.stdout.split("\n")[0][:4]
    saved = json.loads((tmp_path / "runs" / "cli" / "config.json").read_text())
    assert saved["train"]["learning_rate"] == 0.01 and (saved["train"]["beta1"], saved["train"]["beta2"]) == (0.8, 0.9)
    assert not list((tmp_path / "runs" / "cli").glob("events.out.tfevents*"))

    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 1 and "already exists" in again.output and "Traceback" not in again.output

    # resume, raising the step limit: it continues from step 6 in the same run
    resumed = CliRunner().invoke(cli, ["--runs-dir", str(tmp_path / "runs"), "train", "--resume_from", "cli", "--max-steps", "9", "--checkpoints-dir", str(tmp_path / "checkpoints"), "--plain"])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming at step 6" in resumed.stderr
    assert load_trainer_state(CheckpointStore(tmp_path / "checkpoints" / "cli", cleanup=False).latest())["step"] == 9
    listing = CliRunner().invoke(cli, ["--runs-dir", str(tmp_path / "runs"), "runs"])
    assert "cli" in listing.stdout and "finished" in listing.stdout and "9/9" in listing.stdout


def test_toml_config_is_read_and_flags_override_it(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('max-steps = 3\nrun_name = "ignored-key"\n', encoding="utf-8")
    out = CliRunner().invoke(cli, _base_args(tmp_path) + ["--config", str(config)])
    assert out.exit_code == 1 and "unknown option(s): run_name" in out.output
    config.write_text('[train]\nmax_steps = 3\nlearning_rate = 0.02\n[model]\nd_model = 16\nnum_heads = 2\n', encoding="utf-8")
    out = CliRunner().invoke(cli, _base_args(tmp_path) + ["--config", str(config), "--learning-rate", "0.005", "--run-name", "toml", "--no-tensorboard"])
    assert out.exit_code == 0, out.output
    saved = json.loads((tmp_path / "runs" / "toml" / "config.json").read_text())
    assert saved["train"]["max_steps"] == 3 and saved["train"]["learning_rate"] == 0.005
    assert saved["model"]["d_model"] == 16 and saved["model"]["d_ff"] == 64


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--data", "/no/such/file.txt"], "no such file or directory"),
        (["--num-heads", "3"], "num_heads (3) must divide d_model (32)"),
        (["--learning-rate", "-1"], "learning_rate must be positive"),
        (["--betas", "0.9"], "two numbers separated by a comma"),
        (["--context-length", "100000", "--max-steps", "1"], "fewer than one context window"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(tmp_path, extra, message):
    out = CliRunner().invoke(cli, _base_args(tmp_path) + extra)
    assert out.exit_code in (1, 2) and message in out.output
    assert "Traceback" not in out.output


def test_diverging_run_exits_3(tmp_path):
    out = CliRunner().invoke(cli, _base_args(tmp_path) + ["--max-steps", "50", "--learning-rate", "1e6", "--warmup-steps", "0", "--no-tensorboard"])
    assert out.exit_code == 3 and "training diverged" in out.stderr


@pytest.mark.slow
def test_sigint_stops_a_real_run_with_a_checkpoint(tmp_path):
    args = _base_args(tmp_path)[3:]  # drop the group's "--runs-dir DIR train": train takes --runs-dir too
    args += ["--runs-dir", str(tmp_path / "runs"), "--max-steps", "100000", "--eval-interval", "100000", "--log-interval", "1", "--run-name", "sig"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gpt2tui", "train", *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        seen = []
        for line in process.stderr:  # wait until training is under way
            seen.append(line)
            if line.startswith("step 3"):
                break
            assert time.monotonic() < deadline, "training never started"
        assert process.poll() is None, "".join(seen)
        process.send_signal(signal.SIGINT)
        time.sleep(0.05)
        process.send_signal(signal.SIGINT)  # a second Ctrl-C must not cut the checkpoint short
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "SIGINT: finishing this step" in stderr and "continue it:" in stdout
    status = json.loads((tmp_path / "runs" / "sig" / "status.json").read_text())
    assert status["state"] == "stopped" and status["reason"] == "stopped"
    latest = CheckpointStore(tmp_path / "checkpoints" / "sig", cleanup=False).latest()
    step = load_trainer_state(latest)["step"]
    assert step >= 3 and status["step"] >= step - 1
    assert load_checkpoint(latest).info.meta["run_name"] == "sig"
