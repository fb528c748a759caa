"""Every option is declared once (gpt2core/config.py) and each front end is built from it: the
train and generate flags with their declared help (real `gpt2tui ... --help` processes), the
REPL's commands, /help and /settings (a real `gpt2tui generate -i` session), the sampler
panel's sliders, and --bias/--no-bias landing in a real run's config.json."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from reliability_helpers import finished

from gpt2core.checkpoint import CheckpointStore
from gpt2core.config import DataConfig, SampleConfig, option_table
from gpt2core.defaults import PLANNED
from gpt2core.schema import specs
from gpt2tui.cli_options import default_note, flag_help
from train_helpers import write_corpus

REPO = Path(__file__).resolve().parents[1]
# Number options deliberately left off the chat's panel: at 80x24 it holds five sliders. A new
# number option must either declare a Dial or be named here, so it is never half-added.
NOT_ON_THE_PANEL = {"min_p", "repetition_window"}


def _gpt2tui(*args: str, cwd: Path = REPO, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return finished(list(args), cwd, env={"COLUMNS": "100"}, input=stdin, text=False)


def _squeezed(text: str) -> str:
    """Text without whitespace: click wraps help lines wherever the terminal width says."""
    return "".join(text.split())


def test_train_help_shows_every_declared_run_option_with_its_declared_help():
    result = _gpt2tui("train", "--help")
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    squeezed = _squeezed(out)
    shown = 0
    for name, (section, spec, default) in option_table().items():
        if spec.flag == "":
            assert f"--{name.replace('_', '-')}" not in out.split(), f"{name} is declared for config files only"
            continue
        for flag in spec.flag_for(name).split("/") + list(spec.aliases):
            assert flag in out, f"--help lacks {flag}"
        note = default_note(name, spec, default, section=section, planned=PLANNED)
        assert _squeezed(flag_help(spec, note)) in squeezed, f"{name}: its declared help is not what --help shows"
        shown += 1
    assert shown >= 35  # the run options, not a handful
    assert "--bias / --no-bias" in out and "--lr" in out and "--gradient-accumulation-steps" in out


def test_data_help_states_the_held_out_share_the_loader_really_uses():
    data = DataConfig()
    assert round(data.val_fraction + data.test_fraction, 9) == 0.10  # what the help below says
    out = _squeezed(_gpt2tui("train", "--help").stdout.decode())
    assert _squeezed("the last 10% of the text is held out (5% validation, 5% test)") in out
    docs = (REPO / "docs" / "TRAINING.md").read_text(encoding="utf-8")
    assert "last 10%" in docs and "5% validation" in docs


def test_generate_help_shows_every_sampling_option_with_its_declared_help():
    result = _gpt2tui("generate", "--help")
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    for name, spec, _ in specs(SampleConfig):
        for flag in spec.flag_for(name).split("/") + list(spec.aliases):
            assert flag in out, f"generate --help lacks {flag}"
        assert _squeezed(spec.help[:1].upper() + spec.help[1:]) in _squeezed(out), name
    assert "--ignore-eos" in out and "--no-stream" in out and "-t, --temperature" in out and "-n, --max-new-tokens" in out


def _other_value(name: str, spec, default):
    """A REPL argument the option accepts that differs from its default, and the value it sets."""
    if spec.kind is bool:
        return ("off", False) if default else ("on", True)
    if spec.many:
        return "END", ("END",)
    if default is None:
        return "7", 7
    if spec.kind is int:
        return str(default + 1), default + 1
    return str(default / 2 if default else 0.5), default / 2 if default else 0.5


def test_every_sampling_option_has_a_flag_a_repl_command_and_a_slider_or_a_reason():
    from gpt2tui.commands.generate import apply_command, generate
    from gpt2tui.widgets.sampler_panel import KNOBS

    flags = {param.name: param for param in generate.params}
    knobs = {knob.name: knob for knob in KNOBS}
    sample = SampleConfig()
    for name, spec, default in specs(SampleConfig):
        assert name in flags and flags[name].default == default, f"{name} has no generate flag carrying its default"
        arg, value = _other_value(name, spec, default)
        for command in spec.repl_for(name):
            updated, message, quit_now = apply_command(f"/{command} {arg}", sample, sample)
            assert getattr(updated, name) == value and not quit_now, f"/{command} {arg}: {message}"
        if spec.dial is not None:
            knob = knobs.pop(name)
            assert (knob.default, knob.label) == (default, spec.label_for(name))
            assert spec.dial.minimum <= default <= spec.dial.maximum, f"{name}'s default is off its slider"
        elif spec.kind in (int, float) and default is not None:
            assert name in NOT_ON_THE_PANEL, f"{name} is a number option with no slider: declare a Dial or say why not"
    assert not knobs  # every slider is a declared sampling option


def test_a_slider_sets_the_declared_type():
    from gpt2tui.widgets.sampler_panel import KNOBS

    for knob in KNOBS:
        assert knob.kind is {int: int, float: float}[type(knob.default)]
        assert knob.decimals == (0 if knob.kind is int else len(str(knob.dial.step).split(".")[1]))


def test_repl_settings_and_help_list_every_declared_sampling_option(micro_checkpoint):
    result = _gpt2tui("generate", "-c", str(micro_checkpoint), "-i", "-q", cwd=micro_checkpoint.parents[1], stdin=b"/temp 0.5\n/settings\n/help\n/quit\n")
    err = result.stderr.decode()
    assert result.returncode == 0, err
    settings, _, help_text = err.partition("Type a prompt and press Enter")
    for name, spec, _ in specs(SampleConfig):
        assert f"  {name:<19} " in settings, f"/settings lacks {name}"
        for command in spec.repl_for(name):
            assert f"/{command}" in help_text, f"/help lacks /{command}"
        assert spec.help in help_text
    assert "temperature         0.5" in settings


@pytest.mark.parametrize("flag, expected", [("--no-bias", False), ("--bias", True)])
def test_bias_flag_lands_in_the_run_config(tmp_path, flag, expected):
    corpus = write_corpus(tmp_path / "data")
    args = [
        "--runs-dir", str(tmp_path / "runs"), "train", "--preset", "tiny", "--max-steps", "2", flag,
        "--data", str(corpus), "--tokenizer", "char", "--cache-dir", str(tmp_path / "cache"),
        "--context-length", "32", "--batch-size", "2", "--eval-iters", "1", "--sample-tokens", "0",
        "--checkpoints-dir", str(tmp_path / "checkpoints"), "--device", "cpu", "--threads", "1",
        "--run-name", "bias", "--no-tensorboard", "--plain",
    ]  # fmt: skip
    result = _gpt2tui(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    saved = json.loads((tmp_path / "runs" / "bias" / "config.json").read_text())
    assert saved["model"]["bias"] is expected
    weights = CheckpointStore(tmp_path / "checkpoints" / "bias", cleanup=False).latest()
    names = json.loads((weights / "config.json").read_text())["model"]
    assert names["bias"] is expected  # the checkpoint builds the same model back


def test_gelu_flag_lands_in_the_run_and_a_resume_cannot_change_it(tmp_path):
    corpus = write_corpus(tmp_path / "data")
    common = [
        "--runs-dir", str(tmp_path / "runs"), "train", "--preset", "tiny",
        "--data", str(corpus), "--tokenizer", "char", "--cache-dir", str(tmp_path / "cache"),
        "--context-length", "32", "--batch-size", "2", "--eval-iters", "1", "--sample-tokens", "0",
        "--checkpoints-dir", str(tmp_path / "checkpoints"), "--device", "cpu", "--threads", "1",
        "--no-tensorboard", "--plain",
    ]  # fmt: skip
    result = _gpt2tui(*common, "--max-steps", "2", "--gelu", "erf", "--run-name", "erf", cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads((tmp_path / "runs" / "erf" / "config.json").read_text())["model"]["gelu"] == "erf"
    weights = CheckpointStore(tmp_path / "checkpoints" / "erf", cleanup=False).latest()
    assert json.loads((weights / "config.json").read_text())["model"]["gelu"] == "erf"
    before = sorted(p.name for p in (tmp_path / "checkpoints" / "erf").iterdir())
    refused = _gpt2tui(*common, "--max-steps", "4", "--gelu", "tanh", "--resume-from", "erf", cwd=tmp_path)
    error = refused.stderr.decode().strip().splitlines()
    assert refused.returncode == 1 and error[-1].startswith("Error: cannot change gelu") and "Traceback" not in refused.stderr.decode()
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "erf").iterdir()) == before  # nothing written
    bad = _gpt2tui(*common, "--max-steps", "2", "--gelu", "relu", "--run-name", "bad", cwd=tmp_path)
    assert bad.returncode == 2 and b"relu" in bad.stderr and not (tmp_path / "runs" / "bad").exists()
