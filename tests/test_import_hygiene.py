"""The core never imports the UI, and `gpt2tui train` never imports Textual (checked in a
fresh interpreter, since this test process has imported everything by now)."""

import subprocess
import sys

import pytest

UI_MODULES = ("textual", "rich", "click")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split(".")[0] for line in out.splitlines()}


@pytest.mark.parametrize(
    "module",
    ["gpt2core", "gpt2core.model", "gpt2core.tokenizer", "gpt2core.checkpoint", "gpt2core.rundir", "gpt2core.events"],
)
def test_core_imports_no_ui(module):
    loaded = _modules_after(f"import {module}")
    assert not loaded & set(UI_MODULES), f"{module} pulled in {loaded & set(UI_MODULES)}"


def test_run_listing_does_not_import_torch():
    # The console lists runs on its first screen; torch must not load for that.
    loaded = _modules_after("import gpt2core.rundir, gpt2core.events")
    assert "torch" not in loaded
