"""Regenerate the console screenshots in docs/img/ (SVG, as Textual saves them).

It builds a throwaway project: a real micro run trained by `gpt2tui train` (about half a
minute on a laptop CPU), a small Optuna study whose objective is a quick synthetic function
of the parameters (the picture is about the table, not the search), then drives the app
with Pilot and saves each screen.

Usage: python docs/make_screenshots.py
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "img"


def train_demo_run(project: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "gpt2tui", "train", "--preset", "micro", "--run-name", "micro-demo", "--max-steps", "300",
         "--eval-interval", "25", "--eval-iters", "4", "--log-interval", "2", "--sample-tokens", "60", "--device", "cpu",
         "--max-training-hours", "0.05"],
        cwd=project, check=True, capture_output=True,
    )  # fmt: skip


def make_demo_study(project: Path) -> None:
    import optuna
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial):
        lr = trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
        layers = trial.suggest_int("num_layers", 2, 6)
        width = trial.suggest_categorical("d_model", [64, 128, 256])
        loss = 4.0
        for step in range(8):
            loss = loss * 0.85 + 0.3 * abs(lr - 3e-3) * 100 + 0.02 * layers + 32 / width * 0.05
            trial.report(loss, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return loss

    (project / "optuna_results").mkdir(exist_ok=True)
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(project / "optuna_results" / "lr-search.journal")))
    study = optuna.create_study(study_name="lr-search", storage=storage, sampler=optuna.samplers.TPESampler(seed=1),
                                pruner=optuna.pruners.MedianPruner(n_warmup_steps=3))  # fmt: skip
    study.optimize(objective, n_trials=14)


async def shoot(project: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from textual.widgets import DataTable, Input

    from gpt2tui.app import GPT2App
    from tui_support import wait_for

    async def steady(pilot) -> None:
        for field in pilot.app.screen.query(Input):
            field.cursor_blink = False
        await pilot.pause(0.3)

    for size, suffix in (((120, 40), ""), ((80, 24), "-80x24")):
        app = GPT2App()
        async with app.run_test(size=size) as pilot:
            dashboard = app.screen.query_one("Dashboard")
            await wait_for(pilot, lambda: dashboard.progress is not None and dashboard.progress.step > 0, timeout=20)
            await steady(pilot)
            app.save_screenshot(f"runs{suffix}.svg", path=str(OUT))
            await pilot.press("f3")
            trials = app.screen.query_one("#trials", DataTable)
            await wait_for(pilot, lambda: trials.row_count > 0, timeout=30)
            await steady(pilot)
            app.save_screenshot(f"trials{suffix}.svg", path=str(OUT))
            await pilot.press("f4")
            chat = app.screen
            chat.load_checkpoint("checkpoints/micro-demo")
            await wait_for(pilot, lambda: chat.model is not None, timeout=60)
            chat.query_one("#prompt", Input).value = "The "
            await pilot.press("enter")
            await wait_for(pilot, lambda: not chat.generating and chat.query_one("Transcript").turns, timeout=60)
            await steady(pilot)
            app.save_screenshot(f"chat{suffix}.svg", path=str(OUT))
            await pilot.press("f2", "f1")
            await steady(pilot)
            app.save_screenshot(f"help{suffix}.svg", path=str(OUT))
            await pilot.press("escape", "n")
            form = app.screen
            form.query_one("#run_name", Input).value = "micro-finetune"
            form.query_one("#init_from", Input).value = "checkpoints/micro-demo"
            form.query_one("#max_steps", Input).value = "500"
            await steady(pilot)
            app.save_screenshot(f"new-run{suffix}.svg", path=str(OUT))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        train_demo_run(project)
        make_demo_study(project)
        os.chdir(project)
        asyncio.run(shoot(project))
    print("wrote", ", ".join(sorted(p.name for p in OUT.glob("*.svg"))))


if __name__ == "__main__":
    main()
