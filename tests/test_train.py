"""The trainer, end to end on a micro model: resume exactness, run files, TensorBoard, NaN,
schedules and limits, stopping."""

from __future__ import annotations

import json
import math
import threading

import pytest
import torch
from train_helpers import dirs, one_thread, tiny_config  # noqa: F401  (one_thread is a fixture)

from gpt2core.checkpoint import CheckpointStore, load_checkpoint, load_trainer_state
from gpt2core.defaults import config_for_resume
from gpt2core.errors import ConfigError
from gpt2core.events import EvalEvent, StepEvent, event_from_dict
from gpt2core.schedule import CosineSchedule, RunPlan
from gpt2core.train import train

pytestmark = pytest.mark.usefixtures("one_thread")


def _collect(stop_at: int | None = None, stop: threading.Event | None = None):
    events, stop = [], stop or threading.Event()

    def on_event(event):
        events.append(event)
        if stop_at is not None and isinstance(event, StepEvent) and event.step == stop_at:
            stop.set()

    return events, stop, on_event


def _step_records(events) -> dict[int, tuple]:
    return {e.step: (e.loss, e.lr, e.grad_norm) for e in events if isinstance(e, StepEvent)}


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_interrupted_and_resumed_run_repeats_the_straight_run_exactly(tmp_path, grad_accum):
    # Dropout on, so the global RNG matters; an eval (with a sample) inside both halves.
    config = tiny_config(tmp_path, dropout=0.1, grad_accum=grad_accum, max_steps=10, eval_interval=3, sample_tokens=4)
    straight, _, on_event = _collect()
    train(config, run_name="straight", on_event=on_event, tensorboard=False, **dirs(tmp_path))

    first, stop, on_event = _collect(stop_at=5)
    result = train(config, run_name="split", on_event=on_event, stop=stop, tensorboard=False, **dirs(tmp_path))
    assert (result.reason, result.step) == ("stopped", 5)
    second, _, on_event = _collect()
    result = train(resume_from="split", on_event=on_event, tensorboard=False, **dirs(tmp_path))
    assert (result.reason, result.step) == ("max_steps", 10)

    resumed = {**_step_records(first), **_step_records(second)}
    assert sorted(resumed) == list(range(1, 11))
    assert resumed == _step_records(straight)  # bit-for-bit: losses, learning rates, grad norms
    val = lambda evs: [(e.step, e.val_loss) for e in evs if isinstance(e, EvalEvent) and e.step > 5]
    assert val(second) == val(straight)
    a = load_checkpoint(tmp_path / "checkpoints" / "straight" / "step-00000010").model.state_dict()
    b = load_checkpoint(tmp_path / "checkpoints" / "split" / "step-00000010").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("native_bf16", ["0", "1"])  # auto precision: fp32 / bf16, on any CPU
def test_run_directory_records_events_status_config_and_tensorboard(tmp_path, monkeypatch, native_bf16):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from gpt2core.precision import CPU_BF16_ENV, choose_precision, peak_flops

    monkeypatch.setenv(CPU_BF16_ENV, native_bf16)
    config = tiny_config(tmp_path, max_steps=6, eval_interval=3, log_interval=2, sample_tokens=5, sample_prompt="To be")
    precision = choose_precision(config.train, torch.device("cpu"))
    assert precision.name == ("bf16" if native_bf16 == "1" else "fp32")
    result = train(config, run_name="files", **dirs(tmp_path))
    run = tmp_path / "runs" / "files"

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    kinds = [r["type"] for r in records]
    assert kinds[0] == "run_started" and kinds[-1] == "finished"
    assert [r["step"] for r in records if r["type"] == "step"] == [2, 4, 6]
    assert [r["step"] for r in records if r["type"] == "eval"] == [0, 3, 6]
    samples = [r for r in records if r["type"] == "sample"]
    assert [s["step"] for s in samples] == [3, 6] and all(s["prompt"] == "To be" and s["text"] for s in samples)
    assert all(event_from_dict(r) is not None for r in records)

    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["reason"] == "max_steps" and status["step"] == 6
    assert status["best_val_loss"] == pytest.approx(result.best_val_loss)
    assert status["last_checkpoint"].endswith("step-00000006")
    saved = json.loads((run / "config.json").read_text())
    assert saved["run_name"] == "files" and saved["train"]["max_steps"] == 6
    assert saved["model"]["vocab_size"] == load_checkpoint(result.last_checkpoint).tokenizer.vocab_size

    accumulator = EventAccumulator(str(run), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    scalars = set(accumulator.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "perf/tokens_per_sec", "val/loss", "val/perplexity"} <= scalars
    assert saved["precision"] == precision.name
    # MFU is reported exactly where the device's peak for the run's precision is known (every CPU
    # precision has an estimate; only an unreadable clock leaves it unknown), in every sink alike.
    mfu_known = peak_flops(torch.device("cpu"), precision) is not None
    assert ("perf/mfu" in scalars) == mfu_known
    assert all((r["mfu"] is not None) == mfu_known for r in records if r["type"] == "step")
    assert [e.step for e in accumulator.Scalars("val/loss")] == [0, 3, 6]
    assert accumulator.Scalars("train/loss")[-1].value == pytest.approx([r for r in records if r["type"] == "step"][-1]["loss"])
    text_tags = set(accumulator.Tags()["tensors"])
    assert {"sample/text_summary", "config/text_summary"} <= text_tags
    sample_text = accumulator.Tensors("sample/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "To be" in sample_text and samples[-1]["text"].strip()[:3] in sample_text
    hparams = EventAccumulator(str(run), size_guidance={"scalars": 0})
    hparams.Reload()
    assert "hparam/best_val_loss" in hparams.Tags()["scalars"]


def test_nan_loss_skips_updates_stops_and_keeps_the_good_checkpoint(tmp_path):
    # A step at a sane lr writes a good checkpoint; resuming at lr 1e6 blows the weights up.
    good = train(tiny_config(tmp_path, max_steps=2), run_name="nan", tensorboard=False, **dirs(tmp_path))
    good_path = good.last_checkpoint
    events, _, on_event = _collect()
    resumed_config, directory = config_for_resume("nan", {"learning_rate": 1e6, "max_steps": 40, "eval_interval": 2}, tmp_path / "checkpoints")
    result = train(resumed_config, resume_from=directory, on_event=on_event, tensorboard=False, **dirs(tmp_path))
    assert result.reason == "diverged" and "NaN/Inf 5 steps in a row" in result.message
    warnings = [e.message for e in events if e.kind == "warning"]
    assert sum("update skipped" in w for w in warnings) == 5
    assert any("checkpoint not written" in w for w in warnings)
    steps = CheckpointStore(tmp_path / "checkpoints" / "nan", cleanup=False).steps()
    assert [s for s, _ in steps] == [2]  # nothing after the good one
    assert all(torch.isfinite(p).all() for p in load_checkpoint(good_path).model.parameters())
    status = json.loads((tmp_path / "runs" / "nan" / "status.json").read_text())
    assert status["state"] == "failed" and "diverged" in status["message"]
    assert status["reason"] == "diverged"  # recorded for launchers: they never parse the message


def test_cosine_schedule_shape():
    s = CosineSchedule(peak_lr=1.0, min_lr=0.1, warmup_steps=10, horizon=110)
    warm = [s.lr(i) for i in range(10)]
    assert all(b > a for a, b in zip(warm, warm[1:])) and warm[-1] < 1.0
    assert s.lr(10) == pytest.approx(1.0)
    decay = [s.lr(i) for i in range(10, 110)]
    assert all(b <= a for a, b in zip(decay, decay[1:]))
    assert s.lr(60) == pytest.approx(0.55, abs=0.01)  # half-way down the cosine
    assert s.lr(109) == pytest.approx(0.1) and s.lr(500) == pytest.approx(0.1)


def test_run_plan_fits_the_horizon_to_the_budget():
    plan = RunPlan(CosineSchedule(1.0, 0.1, 0, 1 << 40), step_limit=None, step_reason="max_steps", budget_s=100.0)
    plan.observe(step=10, train_time_s=10.0, sec_per_step=1.0, reserve_s=5.0)
    assert plan.schedule.horizon == 10 + 85
    assert plan.end_reason(10, 10.0) is None and plan.end_reason(95, 94.5) == "time_budget"
    assert plan.eta_s(10, 10.0) == pytest.approx(90.0)
    capped = RunPlan(CosineSchedule(1.0, 0.1, 0, 50), step_limit=50, step_reason="max_epochs", budget_s=100.0)
    capped.observe(step=10, train_time_s=10.0, sec_per_step=1.0, reserve_s=0.0)
    assert capped.schedule.horizon == 50 and capped.end_reason(50, 60.0) == "max_epochs"


def test_time_budget_ends_the_run_with_the_decay_finished(tmp_path):
    events, _, on_event = _collect()
    budget_s = 4.0
    config = tiny_config(tmp_path, max_steps=None, max_training_hours=budget_s / 3600, learning_rate=1e-2, min_lr=1e-4, warmup_steps=3)
    result = train(config, run_name="budget", on_event=on_event, tensorboard=False, **dirs(tmp_path))
    assert result.reason == "time_budget"
    assert result.elapsed_s < budget_s + 2.0
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert len(steps) > 20
    lrs = [e.lr for e in steps]
    assert max(lrs) > 0.5e-2  # it warmed up to near the peak...
    assert lrs[-1] < 1e-4 + 0.1 * (1e-2 - 1e-4)  # ...and decayed to (nearly) the floor by the end
    assert steps[len(steps) // 2].lr > 2 * lrs[-1]  # a decay across the run, not a cliff at the end
    assert all(e.eta_s is not None and e.eta_s <= budget_s for e in steps[2:])


def test_stop_flag_and_stop_request_file_end_the_run_with_a_checkpoint(tmp_path):
    events, stop, on_event = _collect(stop_at=3)
    result = train(tiny_config(tmp_path, max_steps=1000), run_name="flag", on_event=on_event, stop=stop, tensorboard=False, **dirs(tmp_path))
    assert (result.reason, result.step) == ("stopped", 3)
    assert result.last_checkpoint.name == "step-00000003"
    assert load_trainer_state(result.last_checkpoint)["step"] == 3
    assert json.loads((tmp_path / "runs" / "flag" / "status.json").read_text())["state"] == "stopped"

    def request_stop(event):
        if isinstance(event, StepEvent) and event.step == 2:
            (tmp_path / "runs" / "file" / "stop_request").touch()

    result = train(tiny_config(tmp_path, max_steps=1000), run_name="file", on_event=request_stop, tensorboard=False, **dirs(tmp_path))
    assert (result.reason, result.step) == ("stopped", 2)


def test_existing_run_name_is_refused_and_checkpoints_are_pruned(tmp_path):
    config = tiny_config(tmp_path, max_steps=8, eval_interval=2, keep_last=2)
    result = train(config, run_name="same", tensorboard=False, **dirs(tmp_path))
    store = CheckpointStore(tmp_path / "checkpoints" / "same", cleanup=False)
    assert [s for s, _ in store.steps()] == [6, 8]
    assert store.best() is not None and result.best_checkpoint == store.best()
    with pytest.raises(ConfigError, match="already exists.*--resume-from same"):
        train(config, run_name="same", tensorboard=False, **dirs(tmp_path))


def test_warmup_longer_than_the_run_is_shortened_with_a_warning(tmp_path):
    events, _, on_event = _collect()
    train(tiny_config(tmp_path, max_steps=10, warmup_steps=2000), run_name="warm", on_event=on_event, tensorboard=False, **dirs(tmp_path))
    assert any("warmup of 2000 steps" in e.message for e in events if e.kind == "warning")
    lrs = [e.lr for e in events if isinstance(e, StepEvent)]
    assert lrs[0] == pytest.approx(3e-3 / 2) and lrs[-1] == pytest.approx(3e-4)


def test_epoch_limit_counts_training_tokens(tmp_path):
    config = tiny_config(tmp_path, max_steps=None, max_epochs=0.5)
    result = train(config, run_name="epochs", tensorboard=False, **dirs(tmp_path))
    assert result.reason == "max_epochs"
    info = load_checkpoint(result.last_checkpoint).info.meta
    tokens_per_step = 4 * 32
    assert info["epoch"] >= 0.5 and info["epoch"] - 0.5 < tokens_per_step / info["data"]["tokens"]["train"]
    assert math.isfinite(result.unigram_loss) and result.best_val_loss < result.unigram_loss + 1.0


def test_gpt2_preset_with_wikitext_gives_the_specification_defaults():
    from gpt2core.defaults import build_run_config

    config = build_run_config({"preset": "gpt2", "dataset_name": "wikitext", "dataset_config": "wikitext-2-raw-v1"})
    t = config.train
    assert (t.batch_size, t.learning_rate, t.weight_decay, t.max_epochs, t.max_training_hours) == (8, 3e-4, 0.01, 10, 12.0)
    assert (t.warmup_steps, t.gradient_clip, t.mixed_precision) == (2000, 1.0, True)
    m = config.model
    assert (m.d_model, m.num_heads, m.num_layers, m.d_ff, m.context_length, m.dropout) == (768, 12, 12, 3072, 1024, 0.1)
    assert config.data.tokenizer == "gpt2" and config.data.dataset_name == "wikitext"


def test_the_no_option_run_is_a_few_minutes_on_the_built_in_corpus():
    from gpt2core.defaults import build_run_config

    config = build_run_config({"device": "cpu"})
    assert config.data.source == "builtin" and config.data.tokenizer in ("bpe", "char")
    assert config.train.max_training_hours * 60 <= 5.0
    explicit = build_run_config({"device": "cpu", "max_training_hours": 1.0, "learning_rate": 1e-3})
    assert explicit.train.max_training_hours == 1.0 and explicit.train.learning_rate == 1e-3
    assert explicit.model == config.model  # what was not given still comes from the plan


def test_training_modules_do_not_import_the_ui():
    import subprocess
    import sys

    code = "import gpt2core.train, gpt2core.data, gpt2core.evaluate, gpt2core.defaults, gpt2core.tensorboard_log, sys; print(' '.join(sys.modules))"
    loaded = {m.split(".")[0] for m in subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()}
    assert not loaded & {"textual", "rich", "click"}


def test_thread_tuner_keeps_the_faster_count_and_rechecks(one_thread):
    from gpt2core.threads import FIRST_RECHECK_S, PROBE_STEPS, ThreadTuner

    tuner = ThreadTuner(cores=2)
    assert tuner.current == 2
    speed = {2: 0.5, 1: 0.1}  # a busy machine: one thread is faster
    now = 0.0
    for _ in range(2 * PROBE_STEPS):
        now += speed[tuner.current]
        tuner.step_done(speed[tuner.current], now)
    assert tuner.chosen == tuner.current == 1
    assert tuner.next_check == pytest.approx(now + FIRST_RECHECK_S)
    speed = {2: 0.05, 1: 0.1}  # the machine went quiet: the next check switches back
    while tuner.chosen == 1 and now < 200:
        now += speed[tuner.current]
        tuner.step_done(speed[tuner.current], now)
    assert tuner.chosen == tuner.current == 2
    tuner.restore()
    assert torch.get_num_threads() == 1  # what it was before the tuner (the fixture's setting)
