"""The core never imports the UI, and `gpt2tui train` never imports Textual (checked in a
fresh interpreter, since this test process has imported everything by now)."""

import pkgutil
import subprocess
import sys


import gpt2core

UI_MODULES = ("textual", "rich", "click")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split(".")[0] for line in out.splitlines()}


# Every module of the package, found by walking it: a new module is checked without editing this list.
CORE_MODULES = ["gpt2core", *sorted(m.name for m in pkgutil.walk_packages(gpt2core.__path__, "gpt2core."))]


def test_core_imports_no_ui():
    # One interpreter imports them all: each module's imports end up in sys.modules together.
    loaded = _modules_after("\n".join(f"import {m}" for m in CORE_MODULES))
    assert len(CORE_MODULES) > 20 and not loaded & set(UI_MODULES), f"gpt2core pulled in {loaded & set(UI_MODULES)}"


def test_the_specification_names_are_our_configs():
    from gpt2core.config import ModelConfig, SampleConfig, TrainConfig

    assert (gpt2core.GPT2Config, gpt2core.TrainingConfig, gpt2core.InferenceConfig) == (ModelConfig, TrainConfig, SampleConfig)
    assert gpt2core.GPT2Config().d_model == 768 and gpt2core.InferenceConfig().repetition_penalty == 1.2


def test_run_listing_does_not_import_torch():
    # The console lists runs on its first screen and reads the selected one; torch must not load for that.
    loaded = _modules_after("import gpt2core.rundir, gpt2core.events, gpt2core.run_read")
    assert "torch" not in loaded
