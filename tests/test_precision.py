"""The automatic precision follows the CPU detection, and GPT2TUI_CPU_BF16 overrides it, so the
suite exercises both answers (fp32 and bf16 autocast) on any machine: AVX2-only or native bf16.

Runs are real `gpt2tui train` processes on the micro model (bf16 on a CPU without native bf16 is
emulated and slow, so they are a few steps long)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import write_corpus

from gpt2core.config import TrainConfig
from gpt2core.errors import ConfigError
from gpt2core.precision import CPU_BF16_ENV, Precision, choose_precision, cpu_flags, cpu_flops_per_cycle, cpu_has_native_bf16, peak_flops


def _train(tmp_path: Path, env_value: str | None, *extra: str) -> subprocess.CompletedProcess:
    corpus = write_corpus(tmp_path / "data")
    env = {k: v for k, v in os.environ.items() if k != CPU_BF16_ENV}
    if env_value is not None:
        env[CPU_BF16_ENV] = env_value
    env["OMP_NUM_THREADS"] = "1"
    command = [
        sys.executable, "-m", "gpt2tui", "train", "--preset", "micro", "--data", str(corpus), "--tokenizer", "char",
        "--cache-dir", str(tmp_path / "cache"), "--context-length", "16", "--batch-size", "2", "--max-steps", "3",
        "--eval-iters", "1", "--eval-interval", "3", "--sample-tokens", "0", "--device", "cpu", "--threads", "1",
        "--plain", "--no-tensorboard", "--run-name", "p", "--runs-dir", str(tmp_path / "runs"),
        "--checkpoints-dir", str(tmp_path / "checkpoints"), *extra,
    ]  # fmt: skip
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("yes", True), ("0", False), ("false", False)])
def test_the_override_answers_whatever_the_cpu_says(monkeypatch, value, expected):
    monkeypatch.setenv(CPU_BF16_ENV, value)
    assert cpu_has_native_bf16() is expected
    chosen = choose_precision(TrainConfig(), torch.device("cpu"))
    assert chosen.name == ("bf16" if expected else "fp32") and CPU_BF16_ENV in chosen.reason


def test_without_the_override_the_cpu_flags_decide(monkeypatch):
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)
    native = bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    assert cpu_has_native_bf16() is native
    monkeypatch.setenv(CPU_BF16_ENV, "auto")
    assert cpu_has_native_bf16() is native


def test_a_bad_override_is_refused(monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "maybe")
    with pytest.raises(ConfigError, match=f"{CPU_BF16_ENV} must be 1, 0 or auto"):
        cpu_has_native_bf16()


def test_an_explicit_precision_beats_the_detection(monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    assert choose_precision(TrainConfig(precision="fp32"), torch.device("cpu")).name == "fp32"
    assert choose_precision(TrainConfig(mixed_precision=False), torch.device("cpu")).name == "fp32"


def test_the_cpu_peak_follows_the_units_that_compute_each_precision():
    avx512 = "AVX512"
    assert cpu_flops_per_cycle("fp32", frozenset(), "AVX2") == 32
    assert cpu_flops_per_cycle("fp32", frozenset({"avx512_bf16"}), avx512) == 64
    assert cpu_flops_per_cycle("bf16", frozenset({"avx512_bf16"}), avx512) == 128
    assert cpu_flops_per_cycle("bf16", frozenset({"amx_bf16", "avx512_bf16"}), avx512) == 2048
    assert cpu_flops_per_cycle("bf16", frozenset(), "AVX2") == 32  # emulated on the fp32 units
    assert cpu_flops_per_cycle("fp16", frozenset({"avx512_bf16"}), avx512) == 64


@pytest.mark.parametrize("name", ["fp32", "bf16"])
def test_mfu_is_known_under_every_cpu_precision_or_under_none(name):
    peaks = {p: peak_flops(torch.device("cpu"), Precision(p, "cpu", "test")) for p in ("fp32", name)}
    assert (peaks["fp32"] is None) == (peaks[name] is None)  # the clock decides, not the precision
    if peaks[name] is not None:
        assert peaks[name] >= peaks["fp32"] > 0


@pytest.mark.slow
@pytest.mark.parametrize(("value", "expected"), [("0", "fp32"), ("1", "bf16")])
def test_a_real_run_trains_in_the_precision_the_detection_chooses(tmp_path, value, expected):
    done = _train(tmp_path, value)
    assert done.returncode == 0, done.stderr
    assert f"parameters on cpu (1 threads) ({expected})" in done.stderr
    saved = json.loads((tmp_path / "runs" / "p" / "config.json").read_text())
    assert saved["precision"] == expected
    steps = [json.loads(line) for line in (tmp_path / "runs" / "p" / "metrics.jsonl").read_text().splitlines()]
    mfus = {r["mfu"] is None for r in steps if r["type"] == "step"}
    assert len(mfus) == 1  # reported for every step or for none, never by chance


@pytest.mark.slow
def test_the_machine_answer_is_what_a_run_without_the_override_uses(tmp_path):
    done = _train(tmp_path, None)
    assert done.returncode == 0, done.stderr
    expected = "bf16" if cpu_flags() & {"avx512_bf16", "amx_bf16"} else "fp32"  # the machine's answer, no override
    assert f"parameters on cpu (1 threads) ({expected})" in done.stderr


@pytest.mark.slow
def test_a_bad_override_is_one_line_and_writes_nothing(tmp_path):
    done = _train(tmp_path, "perhaps")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"{CPU_BF16_ENV} must be 1, 0 or auto" in done.stderr
    assert not (tmp_path / "runs" / "p").exists() and not (tmp_path / "checkpoints" / "p").exists()
