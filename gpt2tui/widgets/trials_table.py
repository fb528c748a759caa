"""The trials screen's two tables: the studies found (``StudiesTable``), and the trials of
one study (``TrialsTable``): number, state, value, duration, the intermediate values as a
sparkline and one column per parameter, sortable, the best trial starred.

They only draw the rows of gpt2core.study_read they are given (the screen reads them in
workers); the cursor, and the trials' sort order, survive each live refresh.
"""

from __future__ import annotations

from typing import Callable

from rich.text import Text
from textual import on
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist

from gpt2tui import humanize
from gpt2core.states import StudyState, TrialStatus
from gpt2core.study_read import StudyRow, StudyTrials, TrialRow
from gpt2tui.study_launch import same_storage
from gpt2tui.text_safety import as_text

CURVE_WIDTH = 12  # cells for a trial's intermediate values
BLOCKS = "▁▂▃▄▅▆▇█"  # a curve cell's height; the height carries the value without colour (NO_COLOR)
FIXED_COLUMNS = ("number", "state", "value", "duration", "curve")
# Rich styles by the word shown; the word itself carries the meaning without colour.
STATUS_STYLES = {
    TrialStatus.COMPLETE: "green",
    TrialStatus.RUNNING: "bold cyan",
    TrialStatus.STOPPING: "bold yellow",
    TrialStatus.PRUNED: "yellow",
    TrialStatus.FAIL: "red",
    TrialStatus.STALE: "red",
    TrialStatus.INTERRUPTED: "dim yellow",
}
STUDY_STATE_STYLES = {
    StudyState.RUNNING: "bold green",
    StudyState.STARTING: "green",
    StudyState.STOPPING: "bold yellow",
    StudyState.INTERRUPTED: "yellow",
    StudyState.STOPPED: "dim",
}


class TrialsTable(DataTable):
    """The trials table; ``show`` redraws it, keeping the sort and the cursor's trial."""

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="cell", zebra_stripes=True, **kwargs)
        self.shown: StudyTrials | None = None
        self.sort_column = "number"
        self.sort_reverse = False
        self.state_shown = ""
        self.border_title = "trials"

    def reset_sort(self) -> None:
        """Back to trial order: a sort chosen for one study must not carry over to the next."""
        self.sort_column, self.sort_reverse = "number", False

    def show(self, study: StudyTrials | None, state: str = "") -> None:
        """Draw ``study``; ``state`` is the study's state as the screen knows it (default: as read)."""
        self.shown = study
        self.state_shown = state or (study.state if study else "")
        if study is None:
            self.clear(columns=True)
            self.border_title = "trials"
            return
        columns = (*FIXED_COLUMNS, *study.param_names)
        cursor_key = self.row_key_at_cursor()
        cursor_column = self.cursor_column
        if [c.key.value for c in self.ordered_columns] != list(columns):
            self.clear(columns=True)
            for column in columns:
                self.add_column(as_text(column), key=column, width=CURVE_WIDTH if column == "curve" else None)  # Text: not markup
        else:
            self.clear()
        arrow = " ↓" if self.sort_reverse else ""
        title = f"trials · {study.name} · {self.state_shown} · sorted by {self.sort_column}{arrow} · enter: its run"
        self.border_title = as_text(title)  # Text: study and parameter names are never markup
        scale = _curve_scale(study)
        for trial in sorted(study.trials, key=self._sort_key, reverse=self.sort_reverse):
            self.add_row(*self._cells(trial, study, scale), key=str(trial.number))
        if cursor_key is not None and cursor_key in self.rows:
            self.move_cursor(row=self.get_row_index(cursor_key), column=min(cursor_column, len(columns) - 1))

    def row_key_at_cursor(self) -> str | None:
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except CellDoesNotExist:  # an empty table has no cell under the cursor
            return None

    def sort_by_cursor_column(self) -> None:
        """Sort by the column under the cursor; the same column again reverses the order."""
        if not self.ordered_columns:
            return
        column = self.ordered_columns[self.cursor_column].key.value
        self.sort_reverse = not self.sort_reverse if column == self.sort_column else False
        self.sort_column = column
        self.show(self.shown, self.state_shown)

    @on(DataTable.HeaderSelected)
    def _header_clicked(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.move_cursor(column=event.column_index)
        self.sort_by_cursor_column()

    def jump_to_best(self) -> bool:
        """Move the cursor to the best trial; False when no trial has completed yet."""
        if self.shown is None or self.shown.best_number is None:
            return False
        self.move_cursor(row=self.get_row_index(str(self.shown.best_number)))
        self.focus()
        return True

    def _sort_key(self, trial: TrialRow):
        if self.sort_column == "curve":
            value = trial.intermediate[-1] if trial.intermediate else None
        elif self.sort_column in FIXED_COLUMNS:
            value = {"number": trial.number, "state": trial.status, "value": trial.value, "duration": trial.duration_s}[self.sort_column]
        else:
            value = trial.params.get(self.sort_column)
        # Numbers first by value, then text (categorical params), missing values last.
        if isinstance(value, (int, float)):
            return (0, value, "")
        return (2, 0, "") if value is None else (1, 0, str(value))

    def trial_at_cursor(self) -> TrialRow | None:
        key = self.row_key_at_cursor()
        if self.shown is None or key is None:
            return None
        return next((t for t in self.shown.trials if str(t.number) == key), None)

    def _cells(self, trial: TrialRow, study: StudyTrials, scale: tuple[float, float, int]) -> list:
        best = trial.number == study.best_number
        style = "bold reverse" if best else ""
        number = Text(f"★{trial.number}" if best else str(trial.number), style=style)
        state = Text(trial.status, style=STATUS_STYLES.get(trial.status, ""))
        params = [as_text(_param(trial.params.get(name)), style) for name in study.param_names]
        value = Text(humanize.number(trial.value), style=style)
        return [number, state, value, humanize.duration(trial.duration_s), curve_text(trial.intermediate, *scale), *params]


def _curve_scale(study: StudyTrials) -> tuple[float, float, int]:
    """One scale for every trial's curve (lowest and highest value, most reports), so curves
    are comparable: a better trial's sits lower, a pruned trial's stops early. Scaling each
    curve to its own range drew the same shape for every trial."""
    values = [v for t in study.trials for v in t.intermediate if v == v and abs(v) != float("inf")]
    longest = max((len(t.intermediate) for t in study.trials), default=0)
    return (min(values, default=0.0), max(values, default=0.0), longest)


def curve_text(values: tuple[float, ...], lo: float, hi: float, longest: int, width: int = CURVE_WIDTH) -> Text:
    """A trial's intermediate values as block heights on the study's scale, ``width`` cells
    for the study's longest curve (each cell the last value reported in its span)."""
    if not values or longest == 0:
        return Text("")
    cells = []
    for cell in range(min(width, longest)):
        end = (cell + 1) * longest // min(width, longest)  # reports up to here belong to this cell
        if end > len(values):
            break
        value = values[end - 1]
        if value != value or abs(value) == float("inf"):
            cells.append("×")  # a NaN/Inf report: marked, not drawn as a height
            continue
        level = 0 if hi <= lo else round((value - lo) / (hi - lo) * (len(BLOCKS) - 1))
        cells.append(BLOCKS[level])
    return Text("".join(cells), style="cyan")


def _param(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "–" if value is None else str(value)


class StudiesTable(DataTable):
    """The studies found, one row each: storage file, name, state, trials, best value, direction.
    Rows are keyed ``storage\\nname``; a live refresh updates cells in place, keeping the cursor."""

    COLUMNS = ("storage", "study", "state", "trials", "best", "direction")

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", **kwargs)
        self.studies: dict[str, StudyRow] = {}
        self.border_title = "studies"

    def on_mount(self) -> None:
        for column in self.COLUMNS:  # once mounted: added earlier, columns stay as narrow as their labels
            self.add_column(column, key=column)

    def show(self, studies: list[StudyRow], state_of: Callable[[StudyRow], str]) -> None:
        """Draw ``studies``; ``state_of`` gives each study's state as the screen knows it."""
        rows = {f"{s.storage}\n{s.name}": s for s in studies}
        cells = {key: (_styled_state(state_of(s)), str(s.n_trials), humanize.number(s.best_value)) for key, s in rows.items()}
        if list(rows) != list(self.studies):
            self.clear()
            for key, s in rows.items():
                file_name = s.storage.removeprefix("sqlite:///").rsplit("/", 1)[-1]
                self.add_row(as_text(file_name), as_text(s.name), *cells[key], as_text(s.direction), key=key)
        else:
            for key in rows:
                for column, cell in zip(("state", "trials", "best"), cells[key]):
                    self.update_cell(key, column, cell, update_width=True)
        self.studies = rows

    def select(self, storage: str, name: str) -> StudyRow | None:
        """Put the cursor on this study if it is listed (storages compared as files)."""
        for index, study in enumerate(self.studies.values()):
            if study.name == name and same_storage(study.storage, storage):
                self.move_cursor(row=index)
                return study
        return None


def _styled_state(state: str) -> Text:
    return Text(state, style=STUDY_STATE_STYLES.get(state, ""))
