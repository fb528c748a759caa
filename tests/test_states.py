"""gpt2core.states: the one set of names for run states, end reasons and exit statuses. They
are enums, but what they write (status.json, --json listings) and the statuses scripts see are
the plain words and numbers of before, so old runs and scripts keep working."""

from __future__ import annotations

import json

from gpt2core.states import LIVE_RUN_STATES, RESUMABLE_RUN_STATES, EndReason, ExitCode, RunState


def test_states_and_reasons_are_written_as_their_plain_words():
    words = {"state": RunState.STALE, "reason": EndReason.TIME_BUDGET}
    assert json.dumps(words) == '{"state": "stale", "reason": "time_budget"}'
    assert f"{RunState.RUNNING} / {EndReason.DIVERGED:>9}" == "running /  diverged"
    assert [s.value for s in RunState] == ["starting", "running", "finished", "stopped", "failed", "stale", "unknown"]
    # A state read back from an old status.json (a plain str) matches the members and keys by them.
    styles = {RunState.RUNNING: "green"}
    assert json.loads('"running"') in LIVE_RUN_STATES and styles.get(json.loads('"running"')) == "green"
    assert "finished" not in RESUMABLE_RUN_STATES and "stale" in RESUMABLE_RUN_STATES


def test_exit_statuses_are_the_documented_numbers():
    assert {c.name: int(c) for c in ExitCode} == {"FINISHED": 0, "FAILED": 1, "USAGE": 2, "DIVERGED": 3, "STOPPED": 130}
