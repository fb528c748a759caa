"""Config values are type-checked: one declaration per option (gpt2core.schema) checks every
source of options -- TOML files, command-line flags, checkpoints' run configs -- and a start
refused for a bad value leaves nothing behind."""

from __future__ import annotations

import math

import pytest

from gpt2core.config import ModelConfig, RunConfig, SampleConfig, TrainConfig, check_option, option_table
from gpt2core.errors import ConfigError
from reliability_helpers import finished, train_flags


def _one_line_error(result, *needles):
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


# What the adversarial review typed, and what each must be refused with.
BAD_TOML = [
    ('bias = "false"', "bias must be true or false, got the text 'false'"),
    ('mixed_precision = "false"', "mixed_precision must be true or false"),
    ('compile = "false"', "compile must be true or false"),
    ("[model]\nlayer_norm_eps = inf", "layer_norm_eps must be in (0, 1], got inf"),
    ("seed = 99999999999999999999999", "seed must be a non-negative integer"),
    ('learning_rate = "1e-3"', "learning_rate must be positive, got the text '1e-3'"),
    ("batch_size = 8.5", "batch_size must be a positive integer"),
    ("[train]\nthreads = 2.0", "threads must be a positive integer or 'auto'"),
    ("num_layers = 2000000", "num_layers must be a positive integer, got 2000000 (at most 1024)"),
]


@pytest.mark.parametrize("toml, message", BAD_TOML, ids=[t.split("=")[0].strip("[]\n ") for t, _ in BAD_TOML])
def test_toml_values_of_the_wrong_type_are_refused_naming_file_and_option(tmp_path, toml, message):
    (tmp_path / "bad.toml").write_text(toml + "\n")
    # In-process first (cheap, every case), through the reader the CLI uses ...
    from gpt2core.config import load_options_file

    with pytest.raises(ConfigError, match="config file .*bad.toml: ") as caught:
        load_options_file(tmp_path / "bad.toml")
    assert message in str(caught.value)


def test_a_refused_toml_value_in_a_real_train_leaves_no_run_behind_and_the_name_stays_free(tmp_path):
    (tmp_path / "bad.toml").write_text("[model]\nlayer_norm_eps = inf\nbias = true\n")
    (tmp_path / "types.toml").write_text('bias = "false"\n')
    for config, message in (("bad.toml", "layer_norm_eps must be in (0, 1], got inf"), ("types.toml", "bias must be true or false")):
        result = finished([*train_flags(tmp_path, steps=2), "--run-name", "keep", "--config", str(tmp_path / config)], tmp_path)
        _one_line_error(result, f"config file {tmp_path / config}", message)
    # Nothing was made: no run directory, no checkpoint folder, nothing to block the name.
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())
    good = finished([*train_flags(tmp_path, steps=2), "--run-name", "keep"], tmp_path)
    assert good.returncode == 0, good.stderr
    assert (tmp_path / "checkpoints" / "keep").is_dir()


def test_flags_out_of_range_are_refused_in_one_line(tmp_path):
    result = finished([*train_flags(tmp_path, steps=2), "--seed", "99999999999999999999999"], tmp_path)
    _one_line_error(result, "seed must be a non-negative integer", "at most 9_223_372_036_854_775_807")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_every_declared_option_refuses_text_for_a_number_and_a_number_for_text():
    """Property over the whole table: no option takes a value of the wrong kind silently."""
    table = option_table()
    assert {"bias", "mixed_precision", "compile", "layer_norm_eps", "seed", "learning_rate", "data", "tokenizer"} <= set(table)
    for name, (_, spec, default) in table.items():
        assert check_option(name, default) == default or default is None  # the default passes its own rule
        wrong = 3 if spec.kind is str else "false"
        if spec.kind is str and spec.many:
            wrong = [3]
        with pytest.raises(ConfigError, match=rf"^{name} must be "):
            check_option(name, wrong)
        if spec.kind in (int, float):
            for bad in (math.inf, math.nan, True):
                with pytest.raises(ConfigError, match=rf"^{name} must be "):
                    check_option(name, bad)


def test_a_checkpoints_run_config_is_checked_by_the_same_rules():
    saved = RunConfig().to_dict()
    saved["model"]["bias"] = "false"
    with pytest.raises(ConfigError, match="bias must be true or false"):
        RunConfig.from_dict(saved)
    saved = RunConfig().to_dict()
    saved["train"] = ["not", "a", "table"]
    with pytest.raises(ConfigError, match="train section must be a table"):
        RunConfig.from_dict(saved)


def test_numbers_normalise_and_booleans_stay_booleans():
    assert TrainConfig(max_epochs=1).max_epochs == 1.0 and isinstance(TrainConfig(max_epochs=1).max_epochs, float)
    assert ModelConfig(bias=False).bias is False
    with pytest.raises(ConfigError, match="dropout must be in \\[0, 1\\)"):
        ModelConfig(dropout=1)
    with pytest.raises(ConfigError, match="max_new_tokens must be at least 1, got 100000000000000 \\(at most 1_000_000\\)"):
        SampleConfig(max_new_tokens=100_000_000_000_000)


def test_the_consoles_study_form_checks_run_options_by_the_same_declarations():
    from gpt2tui.study_launch import StudyRequest, study_command

    for field, text, message in (
        ("max_steps", "abc", "max steps: 'abc' is not a whole number"),
        ("max_steps", "-3", "max steps: max_steps must be a positive integer"),
        ("max_training_hours", "inf", "max training hours: max_training_hours must be positive"),
        ("preset", "huge", "preset: preset must be auto or one of micro"),
        ("eval_interval", "99999999999999999999999", "eval interval: eval_interval must be a positive integer"),
    ):
        with pytest.raises(ConfigError, match="^" + message.replace("(", "\\(")):
            study_command(StudyRequest(study_name="s", **{field: text}))
    argv = study_command(StudyRequest(study_name="s", max_steps="0", eval_interval="10", preset="micro"))
    assert "--max-steps" in argv and argv[argv.index("--max-steps") + 1] == "0"  # 0 is "no limit", as on the command line
