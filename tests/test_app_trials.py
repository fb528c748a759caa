"""The trials screen over real Optuna storages: a SQLite database and a journal file in
optuna_results/, a storage typed in, live updates, sorting, the best trial, bad storages."""

from __future__ import annotations

import shutil

import pytest
from textual.widgets import DataTable, Input

from gpt2core import study_read
from gpt2core.study_store import StudyError
from screens.trials import TrialsScreen
from tui_support import open_console, run, wait_for


def objective(trial):
    x = trial.suggest_float("x", -4.0, 4.0)
    kind = trial.suggest_categorical("kind", ["a", "b"])
    for step in range(3):
        trial.report((x - 1) ** 2 + 3 - step, step)
    return (x - 1) ** 2 + (0.5 if kind == "b" else 0.0)


@pytest.fixture(scope="module")
def studies_made(tmp_path_factory):
    """Two real studies, made once: 6 trials in SQLite, 4 in a journal file."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results = tmp_path_factory.mktemp("studies")
    sampler = optuna.samplers.RandomSampler(seed=0)
    sqlite = optuna.create_study(study_name="in-sqlite", storage=f"sqlite:///{results}/studies.db", sampler=sampler)
    sqlite.optimize(objective, n_trials=6)
    journal = optuna.create_study(
        study_name="in-journal", storage=optuna.storages.JournalStorage(JournalFileBackend(str(results / "search.journal"))), sampler=sampler
    )
    journal.optimize(objective, n_trials=4)
    return results


@pytest.fixture
def project(tmp_path, monkeypatch, studies_made):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(studies_made, tmp_path / "optuna_results")
    return tmp_path


def column(table: DataTable, key: str) -> list[str]:
    return [str(table.get_cell(row, key)) for row in table.rows]


def test_studies_from_sqlite_and_journal_with_a_live_sortable_trials_table(project):
    import optuna

    async def body():
        async with open_console(project, size=(120, 40), press=("f3",)) as (app, pilot, notes):
            screen = app.screen
            assert isinstance(screen, TrialsScreen)
            studies = screen.query_one("#studies", DataTable)
            await wait_for(pilot, lambda: studies.row_count == 2, what="two studies")
            assert sorted(column(studies, studies.ordered_columns[1].key)) == ["in-journal", "in-sqlite"]
            trials = screen.query_one("#trials", DataTable)
            await wait_for(pilot, lambda: trials.row_count > 0, what="trials")
            first_study = screen.current[1]
            expected = 4 if first_study == "in-journal" else 6
            assert trials.row_count == expected
            assert [c.key.value for c in trials.ordered_columns] == ["number", "state", "value", "duration", "curve", "x", "kind"]

            # The best trial is marked; b moves the cursor to it.
            best_number = screen.shown.best_number
            await pilot.press("b")
            assert trials.coordinate_to_cell_key(trials.cursor_coordinate).row_key.value == str(best_number)
            assert str(trials.get_cell(str(best_number), "number")) == f"★{best_number}"

            # o sorts by the column under the cursor; again reverses.
            trials.move_cursor(column=2)
            await pilot.press("o")
            values = [float(v) for v in column(trials, "value")]
            assert values == sorted(values)
            await pilot.press("o")
            assert [float(v) for v in column(trials, "value")] == sorted(values, reverse=True)

            # Live: a trial added by another process appears on the next refresh.
            storage = f"sqlite:///{project}/optuna_results/studies.db" if first_study == "in-sqlite" else None
            if storage is None:
                from optuna.storages.journal import JournalFileBackend

                storage = optuna.storages.JournalStorage(JournalFileBackend(str(project / "optuna_results" / "search.journal")))
            optuna.load_study(study_name=first_study, storage=storage).optimize(objective, n_trials=1)
            await wait_for(pilot, lambda: trials.row_count == expected + 1, timeout=8, what="the new trial")

            # The other study, by moving in the studies table.
            studies.focus()
            await pilot.press("down" if studies.cursor_row == 0 else "up")
            await wait_for(pilot, lambda: screen.shown is not None and screen.shown.name != first_study, what="the other study")

    run(body())


def test_a_storage_typed_in_and_a_broken_one(project):
    elsewhere = project / "elsewhere.journal"
    (project / "optuna_results" / "search.journal").rename(elsewhere)
    (project / "optuna_results" / "junk.db").write_text("this is not sqlite")

    async def body():
        async with open_console(project, press=("f3",)) as (app, pilot, notes):
            screen = app.screen
            studies = screen.query_one("#studies", DataTable)
            await wait_for(pilot, lambda: studies.row_count == 1 and notes.errors(), what="one study and an error")
            assert "junk.db" in notes.errors()[0]
            await pilot.press("u")
            assert app.focused is screen.query_one("#storage", Input)
            screen.query_one("#storage", Input).value = str(elsewhere)
            await pilot.press("enter")
            await wait_for(pilot, lambda: studies.row_count == 2, what="the typed storage's study")
            await pilot.press("g")  # refresh now: the same error is not repeated
            await pilot.pause(0.3)
            assert len(notes.errors()) == 1

    run(body())


def test_reading_never_writes_tables_into_a_foreign_database(tmp_path):
    import sqlite3

    path = tmp_path / "mine.db"
    with sqlite3.connect(path) as db:
        db.execute("create table notes (text)")
    with pytest.raises(StudyError):
        study_read.list_studies(f"sqlite:///{path}")
    with sqlite3.connect(path) as db:
        tables = [row[0] for row in db.execute("select name from sqlite_master where type='table'")]
    assert tables == ["notes"]


def test_one_discovery_serves_the_cli_and_the_screen(tmp_path):
    """study_store.find_storages finds journals (*.journal, *.log) and SQLite files, newest first;
    the screen lists the same files by name, so its table does not reorder while a study writes."""
    import os

    from gpt2core.study_store import find_storages

    names = ["b.journal", "a.log", "c.db", "d.sqlite", "s-best.toml", "b.journal.lock", ".s.claim.lock"]
    for age, name in enumerate(names):
        (tmp_path / name).write_text("")
        os.utime(tmp_path / name, (1000 + age, 1000 + age))
    (tmp_path / "folder.db").mkdir()
    assert [p.name for p in find_storages(tmp_path)] == ["d.sqlite", "c.db", "a.log", "b.journal"]
    assert study_read.discover(tmp_path) == [
        str(tmp_path / "a.log"), str(tmp_path / "b.journal"), f"sqlite:///{tmp_path / 'c.db'}", f"sqlite:///{tmp_path / 'd.sqlite'}",
    ]  # fmt: skip
    assert find_storages(tmp_path / "missing") == [] and study_read.discover(tmp_path / "missing") == []


def test_curves_share_one_scale_so_trials_differ():
    """Each trial's curve on the study's scale: a better trial's sits lower, a pruned one's
    stops early (scaled each to its own range, every curve looked the same)."""
    from gpt2core.study_read import StudyTrials, TrialRow
    from gpt2tui.widgets.trials_table import _curve_scale, curve_text

    def trial(number, values):
        return TrialRow(number, "COMPLETE", values[-1], 1.0, {}, tuple(values), "complete")

    study = StudyTrials("s", "s", "minimize", 1, (), (trial(0, [6.0, 5.0, 4.0, 3.0]), trial(1, [4.0, 3.0, 2.0, 1.0]), trial(2, [6.0, 5.5])))
    scale = _curve_scale(study)
    curves = [str(curve_text(t.intermediate, *scale)) for t in study.trials]
    assert curves == ["█▇▅▄", "▅▄▂▁", "█▇"]  # 1..6 over eight heights
    assert str(curve_text((float("nan"), 1.0), 1.0, 2.0, 2)) == "×▁"


def test_enter_opens_a_trials_run_and_each_study_starts_unsorted(project):
    """A gpt2tui study records each trial's run name: enter on the trial shows that run on the
    runs screen. A sort chosen on one study does not carry over to the next."""
    import optuna

    from tui_support import write_run

    write_run(project / "runs", "other", 5)
    write_run(project / "runs", "walk-trial-2", 30)

    def recorded(trial):  # as gpt2core.search records a trial's run
        trial.set_user_attr("run_name", f"walk-trial-{trial.number}")
        return objective(trial)

    walk = optuna.create_study(study_name="walk", storage=f"sqlite:///{project}/optuna_results/studies.db", sampler=optuna.samplers.RandomSampler(seed=1))
    walk.optimize(recorded, n_trials=4)

    async def body():
        async with open_console(project, press=("f3",)) as (app, pilot, notes):
            screen = app.screen
            studies = screen.query_one("#studies", DataTable)
            trials = screen.query_one("#trials", DataTable)

            def open_study(name: str, count: int):
                studies.move_cursor(row=[s.name for s in screen.studies.values()].index(name))
                return wait_for(pilot, lambda: screen.shown is not None and screen.shown.name == name and trials.row_count == count, what=name)

            await wait_for(pilot, lambda: studies.row_count == 3, what="three studies")
            await open_study("walk", 4)
            trials.focus()
            trials.move_cursor(column=2)
            await pilot.press("o")
            assert "sorted by value" in str(trials.border_title)
            await open_study("in-sqlite", 6)
            assert "sorted by number" in str(trials.border_title)

            await open_study("walk", 4)
            trials.focus()
            trials.move_cursor(row=trials.get_row_index("2"), column=0)
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.current_mode == "runs" and app.screen.selected == "walk-trial-2", what="the trial's run")
            await wait_for(pilot, lambda: app.screen.query_one("Dashboard").progress.step == 30, what="its dashboard")

            await pilot.press("f3")
            trials.focus()
            trials.move_cursor(row=trials.get_row_index("3"))
            await pilot.press("enter")  # its run directory does not exist here
            await wait_for(pilot, lambda: "No run walk-trial-3" in notes.text(), what="the missing run")

    run(body())


def test_a_study_started_here_reads_finishing_not_starting_after_its_trials(project, tmp_path):
    """While our `optimize` process lives with no trial running, the study was 'starting'
    even after all its trials ended; after a trial of this launch it is 'finishing'."""
    import subprocess
    import time

    from gpt2tui import launch, study_launch

    async def body():
        async with open_console(project, press=("f3",)) as (app, pilot, notes):
            screen = app.screen
            studies = screen.query_one("#studies", DataTable)
            await wait_for(pilot, lambda: studies.row_count == 2)
            row = next(s for s in screen.studies.values() if s.name == "in-sqlite")
            process = subprocess.Popen(["sleep", "30"])  # stands for the study's process, still writing its summary
            try:
                started = study_launch.StudyLaunch("in-sqlite", row.storage, launch.Launched("optimize-in-sqlite", [], tmp_path / "log", process))
                screen.tracker.started(started)
                screen.launched_at[(row.storage, row.name)] = time.time()  # launched now: no trial of ours yet
                assert screen._state(row) == "starting"
                screen.launched_at[(row.storage, row.name)] = row.last_started - 1  # its trials came after the launch
                assert screen._state(row) == "finishing"
            finally:
                process.kill()
                process.wait()
            assert screen._state(row) == "done"

    run(body())
