"""The new-run and new-study forms at 80x24: what stays visible, where Tab goes, what is
checked before launching (with the core's checks), the remembered values, `--init-from`,
and dropdowns that have a border."""

from __future__ import annotations

from textual.geometry import Region
from textual.widgets import Button, Input, Select

from screens.new_run import NewRunScreen
from screens.new_study import NewStudyScreen
from tui_support import open_console, project_folder, run, typed_preview, wait_for

import pytest


@pytest.fixture
def project(tmp_path, monkeypatch):
    return project_folder(tmp_path, monkeypatch, "runs")


def visible(app, widget) -> bool:
    region = widget.region
    return region.area > 0 and Region(0, 0, *app.size).contains_region(region)


def test_long_flags_keep_the_buttons_and_tab_lands_only_on_visible_fields(project):
    async def body():
        async with open_console(project, press=("n",)) as (app, pilot, notes):
            form = app.screen
            assert isinstance(form, NewRunScreen)
            form.query_one("#extra", Input).value = " ".join(["--d-model 32 --n-layer 2 --seed 1"] * 20)
            await pilot.pause()
            for button in form.query(Button):
                assert visible(app, button), button.id
            form.query_one("#run_name", Input).focus()
            seen = []
            for _ in range(20):
                await pilot.press("tab")
                focused = app.focused
                assert visible(app, focused), f"tab landed on {focused!r} at {focused.region}"
                seen.append(focused.id)
            assert {"start", "cancel", "init_from", "extra"} <= set(seen)

    run(body())


def test_start_checks_the_data_like_the_trainer_and_keeps_the_form(project):
    (project / "binary.txt").write_bytes(b"abc\x00def")
    (project / "ok.txt").write_text("hello world " * 50)

    async def body():
        async with open_console(project, press=("n",)) as (app, pilot, notes):
            form = app.screen
            problem = form.query_one("#form-problem")
            for data, expected in (("nowhere", "--data nowhere: no such file or directory"), ("binary.txt", "looks binary")):
                form.query_one("#data", Input).value = data
                await pilot.press("ctrl+s")
                await wait_for(pilot, lambda: expected in str(problem.render()), what=f"the problem with {data}")
                assert app.screen is form and expected in notes.errors()[-1]
            form.query_one("#run_name", Input).value = "bad/name"
            await pilot.press("ctrl+s")
            assert "cannot be a folder name" in str(problem.render())  # the core's check_run_name
        assert not (project / "runs" / ".launch").exists()  # nothing was started

    run(body())


def test_n_again_starts_from_the_last_form_and_start_from_becomes_init_from(project):
    async def body():
        async with open_console(project, press=("n",)) as (app, pilot, notes):
            form = app.screen
            preview = await typed_preview(pilot, form, run_name="kept-name", preset="micro", max_steps="77", init_from="checkpoints/base/best")
            assert "--init-from checkpoints/base/best" in preview and "--max-steps 77" in preview
            await pilot.press("escape")
            await pilot.press("n")
            again = app.screen
            assert again is not form and isinstance(again, NewRunScreen)
            assert again.query_one("#run_name", Input).value == "kept-name"
            assert again.query_one("#preset", Select).value == "micro"
            assert again.query_one("#max_steps", Input).value == "77"
            assert again.query_one("#init_from", Input).value == "checkpoints/base/best"

    run(body())


def test_study_storage_shows_its_start_and_dropdowns_have_a_border(project):
    async def body():
        async with open_console(project, press=("f3", "n")) as (app, pilot, notes):
            form = app.screen
            assert isinstance(form, NewStudyScreen)
            storage = form.query_one("#storage", Input)
            assert "optuna_results/study-" in storage.value and storage.cursor_position == 0
            form.query_one("#study_name", Input).focus()
            await pilot.press("end", *"-longer-name")
            await pilot.press("tab", "tab")  # through the storage field and out: it shows its start again
            assert storage.value.endswith("-longer-name.journal") and storage.cursor_position == 0
            pruner = form.query_one("#pruner", Select)
            pruner.focus()
            await pilot.press("enter")
            overlay = pruner.query_one("SelectOverlay")
            await pilot.pause()
            assert pruner.expanded and overlay.styles.border_top[0] == "round" and overlay.styles.background.a == 1

    run(body())
