"""Snapshot tests (pytest-textual-snapshot) of every screen at 80x24 and 120x40.

The project holds a finished run, a stopped one and a live one (its writer open in this
process, so it reads 'running') with a hostile name and a long sample, a seeded Optuna study
and a micro checkpoint. The wall clock is frozen (``time.time``) while the pictures are taken,
so ages, elapsed times and heartbeats read the same on every machine and every run; the
pictures change only when the console's look does. Review changes with
`pytest tests/test_app_snapshots.py --snapshot-report`, accept with `--snapshot-update`.
"""

from __future__ import annotations

import json
import time

import pytest
from textual.widgets import DataTable, Input

from gpt2core.events import SampleEvent
from gpt2tui.app import GPT2App
from gpt2tui.widgets.transcript import Turn
from tui_support import save_micro_checkpoint, wait_for, write_run

DAY = 86400.0
NOW = 1_780_000_000.0  # the frozen clock: a fixed day, so every relative time is the same
SIZES = [(80, 24), (120, 40)]
LIVE = "[b]live [@click=app.quit]run [red"  # hostile, and a legal folder name (no "/")
LONG_SAMPLE = " ".join(f"[{word}]" if i % 7 == 0 else word for i, word in enumerate(("the model writes a long sample that wraps " * 12).split()))


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "time", lambda: NOW)
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    base = NOW - 3 * DAY - 3600  # 'age' reads '3d'
    write_run(runs, "tiny-baseline", 100, t0=base - DAY)
    write_run(runs, "micro-lr-sweep", 40, finish="stopped", max_steps=200, hours=None, t0=base)
    for name, t0 in (("tiny-baseline", base - DAY), ("micro-lr-sweep", base)):
        status_path = runs / name / "status.json"
        status = json.loads(status_path.read_text())
        status.update(started=t0, heartbeat=t0 + 300)
        status_path.write_text(json.dumps(status))
    live = write_run(runs, LIVE, 60, finish=None, keep_open=True, max_steps=500, hours=2.0, t0=NOW - 120.0)
    live.on_event(SampleEvent(step=60, prompt="[The] ", text=LONG_SAMPLE, time=NOW - 1.0))
    save_micro_checkpoint(tmp_path / "checkpoints" / "micro-lr-sweep", steps=(40,))
    make_study(tmp_path / "optuna_results" / "lr-search.journal")
    yield tmp_path
    live.close()


def make_study(path) -> None:
    """A seeded study with a few complete and pruned trials (times from the frozen clock)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    study = optuna.create_study(study_name="lr-search", storage=storage, sampler=optuna.samplers.TPESampler(seed=1))

    def objective(trial):
        lr = trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
        layers = trial.suggest_int("num_layers", 2, 6)
        loss = 4.0
        for step in range(6):
            loss = loss * 0.8 + abs(lr - 3e-3) * 50 + 0.05 * layers
            trial.report(loss, step)
        return loss

    study.optimize(objective, n_trials=6)


def make_app() -> GPT2App:
    return GPT2App(runs_dir="runs", checkpoints_dir="checkpoints", optuna_dir="optuna_results")  # relative: no tmp paths in the pictures


async def steady(pilot) -> None:
    """No blinking cursors in a picture."""
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False
    await pilot.pause(0.3)


async def runs_listed(pilot) -> None:
    table = pilot.app.screen.query_one("#runs", DataTable)
    await wait_for(pilot, lambda: table.row_count == 3 and pilot.app.screen.query_one("Dashboard").progress is not None, timeout=20)
    await steady(pilot)


async def live_run_samples(pilot) -> None:
    await runs_listed(pilot)
    table = pilot.app.screen.query_one("#runs", DataTable)
    table.move_cursor(row=table.get_row_index(LIVE))
    await wait_for(pilot, lambda: (p := pilot.app.screen.query_one("Dashboard").progress) is not None and p.run_name == LIVE and p.step == 60, timeout=20)
    await pilot.press("t", "t")  # the samples tab: the long sample wraps
    await steady(pilot)


async def compare(pilot) -> None:
    await runs_listed(pilot)
    await pilot.press("space", "down", "space", "down", "space", "v")
    await steady(pilot)


async def new_run_form(pilot) -> None:
    await runs_listed(pilot)
    await pilot.press("n")
    form = pilot.app.screen
    form.query_one("#run_name", Input).value = "tiny-try"
    form.query_one("#max_steps", Input).value = "2000"
    form.query_one("#init_from", Input).value = "checkpoints/micro-lr-sweep"
    form.query_one("#extra", Input).value = "--seed 3 --d-model 128 --sample-prompt '[b]Once upon a time[/b]'"
    await steady(pilot)


async def trials(pilot) -> None:
    await pilot.press("f3")
    table = pilot.app.screen.query_one("#trials", DataTable)
    await wait_for(pilot, lambda: table.row_count == 6, timeout=30)
    await steady(pilot)


async def new_study_form(pilot) -> None:
    await trials(pilot)
    await pilot.press("n")
    pilot.app.screen.query_one("#study_name", Input).value = "walk-study"
    await steady(pilot)


async def chat(pilot) -> None:
    await pilot.press("f4")
    screen = pilot.app.screen
    screen.load_checkpoint("checkpoints/micro-lr-sweep/best")
    await wait_for(pilot, lambda: screen.model is not None, timeout=30)
    settings = screen.query_one("SamplerPanel").sample_settings()
    for prompt, reply in (("The [b]object", "e of a [link=x]model[/link] is"), ("Once upon", " a time\nthere was a [")):
        turn = Turn(prompt, reply=reply, seed=7, settings=settings, outcome="42 tokens · 300 tok/s · length · seed 7", model=screen.model_label)
        screen.query_one("Transcript").add_turn(turn)  # fixed turns: a generated one carries its speed
    await steady(pilot)


async def help_screen(pilot) -> None:
    await runs_listed(pilot)
    await pilot.press("f1")
    await steady(pilot)


SCREENS = {
    "runs": runs_listed,
    "live-samples": live_run_samples,
    "compare": compare,
    "new-run": new_run_form,
    "trials": trials,
    "new-study": new_study_form,
    "chat": chat,
    "help": help_screen,
}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("screen", list(SCREENS))
def test_screen(snap_compare, project, screen, size):
    assert snap_compare(make_app(), terminal_size=size, run_before=SCREENS[screen])
