"""From options to a RunConfig, including what `gpt2tui train` does when asked for nothing.

With no preset (or ``preset = "auto"``) the run is sized for the machine it runs on: a
wall-clock budget of a few minutes, a model and tokenizer that learn the most in that time on
that kind of device, and the learning-rate decay fitted to end with the budget (see
docs/TRAINING.md for the measurements behind the CPU numbers). Any option given explicitly
wins over the plan. A named preset (``--preset gpt2``) starts from the specification's
training defaults instead (batch 8, lr 3e-4, 10 epochs, 12 hours, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from gpt2core.config import (
    DATA_OPTIONS,
    MODEL_OPTIONS,
    RunConfig,
    absolute_data_paths,
    run_config_from_options,
)
from gpt2core.errors import ConfigError

if TYPE_CHECKING:  # torch only for the annotation: `gpt2tui train --help` reads PLANNED without loading it
    import torch

    from gpt2core.checkpoint import CheckpointInfo

AUTO = "auto"
QUICK_RUN_MINUTES = 4.5  # the training part of the default run; start-up and the summary fit in 5 minutes

# Measured on a 2-core AVX2 CPU (docs/TRAINING.md has the comparison): for the same minutes of
# compute, the tiny shape (4 layers, 128 wide) on a learned 1024-token BPE reached lower bits
# per byte than the same model on characters and than a 192-wide model on the same BPE. Dropout
# stays off: it costs ~30% of the step time on a CPU, and a few epochs of this corpus do not need it.
_CPU_PLAN: dict[str, Any] = {
    "preset": "tiny",
    "tokenizer": "bpe",
    "vocab_size": 1024,
    "batch_size": 16,
    "learning_rate": 2e-3,
    "min_lr": 1e-4,
    "weight_decay": 0.1,
    "warmup_steps": 100,
    "max_steps": 20_000,
    "max_epochs": None,
    "max_training_hours": QUICK_RUN_MINUTES / 60,
    "eval_interval": 250,
    "eval_iters": 16,
    "log_interval": 25,
    "threads": "auto",  # one thread beats two many times over when other processes share the cores
}

# An accelerator does the same minutes with the 6-layer, 384-wide "small" preset.
_ACCELERATOR_PLAN: dict[str, Any] = {
    "preset": "small",
    "tokenizer": "bpe",
    "vocab_size": 4096,
    "batch_size": 32,
    "learning_rate": 1e-3,
    "min_lr": 1e-4,
    "weight_decay": 0.1,
    "warmup_steps": 200,
    "max_steps": 20_000,
    "max_epochs": None,
    "max_training_hours": QUICK_RUN_MINUTES / 60,
    "eval_interval": 250,
    "eval_iters": 20,
    "log_interval": 25,
}


# The specification's limits, which a named preset starts from (TrainConfig's defaults).
_SPEC_LIMITS: dict[str, Any] = {"max_steps": None, "max_epochs": 10.0, "max_training_hours": 12.0}


# The options the no-option run plans for itself: their --help default says "with a preset".
PLANNED = frozenset(_CPU_PLAN) | frozenset(_ACCELERATOR_PLAN)


def auto_options(device: "torch.device") -> dict[str, Any]:
    """The options of the no-option run on ``device``."""
    return dict(_CPU_PLAN if device.type == "cpu" else _ACCELERATOR_PLAN)


def resolve_tokenizer(config: RunConfig) -> RunConfig:
    """Fill in the tokenizer when none was chosen: GPT-2's own for GPT-2-sized presets, a bpe
    of the preset's vocabulary size for the small ones (char below bpe's 257-token minimum)."""
    data = config.data
    if data.tokenizer is None:
        vocab = config.model.vocab_size
        kind = "gpt2" if vocab == 50257 else ("bpe" if vocab >= 257 else "char")
        data = data.replace(tokenizer=kind)
    if data.tokenizer == "bpe" and data.vocab_size is None:
        data = data.replace(vocab_size=max(257, config.model.vocab_size))
    return config.replace(data=data)


LIMIT_OPTIONS = ("max_steps", "max_epochs", "max_training_hours")  # what may end a run


def explicit_limits(options: Mapping[str, Any]) -> set[str]:
    """The limits the user set (a value, not "none"): flags, a TOML file or a search trial."""
    return {key for key in LIMIT_OPTIONS if options.get(key) is not None}


def _without_implicit_limits(defaults: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` (the plan's or the specification's) fitted to what the user asked for.

    Limits are all or nothing: once the user sets any limit, the ones they did not set are off,
    so an implicit budget never cuts an explicit ``--max-epochs 10`` short, and a run with an
    explicit step or epoch limit is not shaped by a clock it never asked for. Such a run also
    keeps a fixed thread count (the thread tuner changes the sums), unless --threads auto is
    given. A learning rate given without a floor gets the documented floor, lr / 10, not the
    plan's floor (which was chosen for the plan's learning rate and may lie above the user's)."""
    fitted = dict(defaults)
    given = explicit_limits(options)
    if given:
        for key in LIMIT_OPTIONS:
            if key not in options:
                fitted[key] = None
        if given & {"max_steps", "max_epochs"} and "threads" not in options:
            fitted.pop("threads", None)
    if "learning_rate" in options and "min_lr" not in options:
        fitted["min_lr"] = None
    return fitted


def build_run_config(options: Mapping[str, Any]) -> RunConfig:
    """A complete RunConfig from flat options (CLI flags, a TOML file, a search trial)."""
    options = dict(options)
    if (options.get("preset") or AUTO) == AUTO:
        from gpt2core.loading import resolve_device

        device = resolve_device(options.get("device") or "auto")
        given = {k: v for k, v in options.items() if k != "preset"}
        options = {**_without_implicit_limits(auto_options(device), given), **given}
    else:  # a named preset: the specification's limits (10 epochs, 12 hours) are implicit too
        options = {**_without_implicit_limits(_SPEC_LIMITS, options), **options}
    return resolve_tokenizer(run_config_from_options(options))


def resume_config(saved: RunConfig, overrides: Mapping[str, Any]) -> RunConfig:
    """The config of a resumed run: the checkpoint's, with training options changed as asked.
    The model shape and the data cannot change under a run that is half-way through."""
    model_changes, data_changes, train_changes = {}, {}, {}
    for key, value in overrides.items():
        if key == "preset":
            if value not in (None, AUTO, saved.preset):
                raise ConfigError(f"cannot change the preset of a resumed run (it is {saved.preset!r})")
        elif key in MODEL_OPTIONS:
            model_changes[key] = value
        elif key in DATA_OPTIONS:
            data_changes[key] = value
        else:
            train_changes[key] = value
    for what, current, changes in (("model", saved.model, model_changes), ("data", saved.data, data_changes)):
        for key, value in changes.items():
            if key == "cache_dir":
                continue  # where the cache lives does not change what is in it
            have = getattr(current, key)
            if isinstance(have, tuple):
                value = tuple(value) if isinstance(value, (list, tuple)) else (value,)
            if key == "data":  # runs record absolute paths; the same files typed relative are no change
                value, have = absolute_data_paths(value), absolute_data_paths(have)
            if value != have:
                raise ConfigError(f"cannot change {key} of a resumed run ({what}: it is {have!r}, asked {value!r})")
    data = saved.data.replace(cache_dir=data_changes["cache_dir"]) if "cache_dir" in data_changes else saved.data
    try:
        train = saved.train.replace(**train_changes)
    except TypeError as exc:
        raise ConfigError(str(exc)) from None
    return saved.replace(data=data, train=train)


def resume_point(resume_from: str | Path, checkpoints_dir: str | Path = "checkpoints") -> tuple[Path, CheckpointInfo, RunConfig]:
    """(the checkpoint directory, its info, the run config it records) for ``--resume-from``:
    the latest step checkpoint of a run, not its best, with every byte verified first."""
    from gpt2core.checkpoint import read_checkpoint_info, resolve_checkpoint, verify_checkpoint
    from gpt2core.errors import CheckpointError

    directory = resolve_checkpoint(resume_from, prefer="latest", root=checkpoints_dir)
    verify_checkpoint(directory)  # a damaged config.json must be named, not half-read
    info = read_checkpoint_info(directory)
    saved = info.meta.get("run_config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{directory} does not record its run config, so training cannot resume from it")
    return directory, info, RunConfig.from_dict(saved)


def config_for_resume(resume_from: str | Path, overrides: Mapping[str, Any], checkpoints_dir: str | Path = "checkpoints") -> tuple[RunConfig, Path]:
    """(the config to continue with, the checkpoint directory) for ``--resume-from`` and options
    given alongside it."""
    directory, _, saved = resume_point(resume_from, checkpoints_dir)
    return resume_config(saved, overrides), directory
