"""Helpers for the console tests: real run directories, real checkpoints, a project folder, the
app opened under Pilot with its notifications kept, typing into its forms, and waiting on it
until something is true (workers post their messages asynchronously)."""

from __future__ import annotations

import asyncio
import math
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Callable

from gpt2core.events import (
    CheckpointEvent,
    EvalEvent,
    FinishedEvent,
    RunStarted,
    SampleEvent,
    StepEvent,
    WarningEvent,
)
from gpt2core.rundir import RunWriter


def loss_at(step: int) -> float:
    return 5.0 * math.exp(-step / 30) + 1.5


def write_run(
    runs_dir: Path,
    name: str,
    steps: int,
    *,
    finish: str | None = "max_steps",
    max_steps: int = 100,
    hours: float | None = 1.0,
    t0: float | None = None,
    keep_open: bool = False,
) -> RunWriter:
    """A run directory written the way the trainer writes it: RunWriter + real events.
    ``t0`` fixes the wall clock (for snapshots); ``keep_open`` leaves the writer live."""
    t0 = time.time() - steps * 2.0 if t0 is None else t0
    writer = RunWriter(runs_dir / name, config={"preset": "micro"})
    writer.on_event(
        RunStarted(
            run_name=name, config={"train": {"max_steps": max_steps, "max_epochs": None}}, device="cpu", num_params=34_000,
            max_steps=max_steps, max_training_hours=hours, time=t0, max_epochs=None, step_limit_from="max_steps",
        )
    )  # fmt: skip
    for step in range(1, steps + 1):
        when = t0 + step * 2.0
        # The trainer's estimate (RunPlan.eta_s): the nearer of the step limit at 2 s a step and the budget.
        eta = min([(max_steps - step) * 2.0] + ([hours * 3600 - step * 2.0] if hours else []))
        writer.on_event(
            StepEvent(
                step=step, epoch=step / 50, loss=loss_at(step), lr=3e-4, grad_norm=0.75, tokens_per_sec=12_345.0,
                mfu=None, elapsed_s=step * 2.0, eta_s=eta, tokens_seen=step * 512, time=when,
            )
        )  # fmt: skip
        if step % 10 == 0:
            val = loss_at(step) + 0.1
            writer.on_event(EvalEvent(step=step, val_loss=val, perplexity=math.exp(val), best_val_loss=val, is_best=True, time=when))
            writer.on_event(SampleEvent(step=step, prompt="The ", text=f"sample text at {step}", time=when))
            writer.on_event(CheckpointEvent(step=step, path=f"checkpoints/{name}/step-{step:08d}", is_best=True, reason="eval", time=when))
    if steps >= 5:
        writer.on_event(WarningEvent(step=5, message="loss spiked at step 5", time=t0 + 10))
    if finish:
        writer.on_event(
            FinishedEvent(
                step=steps, reason=finish, best_val_loss=loss_at(steps) + 0.1, best_checkpoint=None,
                last_checkpoint=None, elapsed_s=steps * 2.0, time=t0 + steps * 2.0,
            )
        )  # fmt: skip
    if not keep_open:
        writer.close()
    return writer


def save_micro_checkpoint(root: Path, steps: tuple[int, ...] = (10,), *, endless: bool = True, preset_name: str = "micro") -> Path:
    """A run's checkpoint folder holding a micro (or ``preset_name``) model with a char
    tokenizer; returns it.

    ``endless``: the final LayerNorm's output is pinned to a constant whose dot product with
    the end-of-text embedding is -50, so the model never ends a reply by itself. Streaming
    and Esc tests then do not depend on when a random model happens to sample EOS."""
    import torch

    from gpt2core.checkpoint import CheckpointStore
    from gpt2core.config import preset
    from gpt2core.model import GPT
    from gpt2core.tokenizer import train_char

    tokenizer = train_char(["The quick brown fox jumps over the lazy dog. " * 20])
    torch.manual_seed(0)
    model = GPT(preset(preset_name).replace(vocab_size=tokenizer.vocab_size))
    if endless:
        with torch.no_grad():
            ln_f = model.transformer.ln_f
            ln_f.weight.zero_()
            ln_f.bias.zero_()
            ln_f.bias[0] = 1.0  # (C,): every position's final hidden state is e0
            model.transformer.wte.weight[tokenizer.eos_id, 0] = -50.0  # logit(EOS) = -50
    store = CheckpointStore(root)
    for step in steps:
        store.save(step, model, tokenizer, is_best=True)
    return root


PROJECT_FOLDERS = ("runs", "checkpoints", "optuna_results")  # what the console reads


def project_folder(tmp_path: Path, monkeypatch, *folders: str) -> Path:
    """``tmp_path`` as the working folder (the console's default paths are relative), with
    ``folders`` made in it."""
    monkeypatch.chdir(tmp_path)
    for name in folders:
        (tmp_path / name).mkdir()
    return tmp_path


def fill(form, **values) -> None:
    """Type into a form: each field, by id, gets its value (an Input's text, a Select's option)."""
    for name, value in values.items():
        form.query_one(f"#{name}").value = value


async def typed_preview(pilot, form, **values) -> str:
    """Fill a form (see ``fill``) and return the command its preview shows once it has updated."""
    fill(form, **values)
    await pilot.pause()
    return str(form.query_one("#command-preview").render())


def make_app(project: Path):
    """The console on a project folder's runs/, checkpoints/ and optuna_results/."""
    from gpt2tui.app import GPT2App

    return GPT2App(runs_dir=str(project / "runs"), checkpoints_dir=str(project / "checkpoints"), optuna_dir=str(project / "optuna_results"))


@asynccontextmanager
async def open_console(project: Path, *, size: tuple[int, int] = (80, 24), press: tuple[str, ...] = (), **run_test):
    """The console on ``project`` under Pilot with every notification kept, ``press`` pressed
    first: yields (app, pilot, notes). ``run_test`` goes to App.run_test as it is."""
    notes = NoteLog()
    app = make_app(project)
    async with app.run_test(size=size, message_hook=notes, **run_test) as pilot:
        if press:
            await pilot.press(*press)
        yield app, pilot, notes


async def wait_for(pilot, condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Let the app run until ``condition()`` holds (workers post from other threads)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.05)


class NoteLog:
    """A run_test message_hook that keeps every notification: (severity, title, message)."""

    def __init__(self) -> None:
        self.notes: list[tuple[str, str, str]] = []

    def __call__(self, message) -> None:
        from textual.notifications import Notify

        if isinstance(message, Notify):
            n = message.notification
            self.notes.append((n.severity, n.title, n.message))

    def errors(self) -> list[str]:
        return [f"{title}: {message}" for severity, title, message in self.notes if severity == "error"]

    def text(self) -> str:
        return "\n".join(f"{title}: {message}" for _, title, message in self.notes)


def run(coro) -> None:
    """Run one async test body (no pytest-asyncio needed)."""
    asyncio.run(coro)
