"""The hyperparameter search space of `gpt2tui optimize`, defined in one place.

``DEFAULT_SPACE`` lists every parameter the search knows how to vary, with ranges that suit
GPT-2-shaped models trained briefly. A TOML file overrides it (see ``load_space``)::

    max_params = 2_000_000          # only with d_model / num_layers: larger shapes are pruned at once

    [params.learning_rate]
    low = 3e-4                      # any field not given keeps its default
    high = 3e-3

    [params.dropout]
    enabled = false                 # the value then comes from the train flags

    [params.d_model]
    enabled = true                  # width and depth are off by default
    choices = [64, 128, 192]

``replace = true`` at the top keeps only the parameters the file lists. ``space_to_toml``
writes a space back as such a file (what `--show-space` prints). Pure Python: no torch, no
optuna at import time, so the console can show a space cheaply.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from gpt2core.errors import ConfigError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

KINDS = ("float", "int", "categorical")


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter and the distribution it is drawn from."""

    name: str  # one of DEFAULT_SPACE's names: it decides which config value the draw sets
    kind: str  # float / int / categorical
    low: float | int | None = None  # inclusive lower bound (float / int)
    high: float | int | None = None  # inclusive upper bound (float / int)
    log: bool = False  # draw uniformly in log space: right for rates spanning decades
    step: float | int | None = None  # grid spacing (float / int); None for continuous floats
    choices: tuple = ()  # the values of a categorical parameter
    enabled: bool = True  # False keeps the value the train flags give
    about: str = ""  # one line for --show-space

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", tuple(self.choices))
        self.validate()

    def validate(self) -> None:
        where = f"search space parameter {self.name!r}"
        if self.kind not in KINDS:
            raise ConfigError(f"{where}: type must be one of {', '.join(KINDS)}, got {self.kind!r}")
        for flag in ("enabled", "log"):  # a TOML string such as "false" would otherwise read as true
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{where}: '{flag}' must be true or false, got {getattr(self, flag)!r}")
        if self.kind == "categorical":
            if not self.choices:
                raise ConfigError(f"{where}: a categorical parameter needs a non-empty 'choices' list")
            if not all(_is_scalar(c) for c in self.choices):
                raise ConfigError(f"{where}: choices must be numbers, text or booleans, got {list(self.choices)!r}")
            if len(set(self.choices)) != len(self.choices):
                raise ConfigError(f"{where}: choices repeat a value: {list(self.choices)!r}")
            return
        for bound in ("low", "high"):
            value = getattr(self, bound)
            if not _is_number(value) or (self.kind == "int" and not isinstance(value, int)):
                raise ConfigError(f"{where}: '{bound}' must be {'an integer' if self.kind == 'int' else 'a number'}, got {value!r}")
        if not self.low <= self.high:
            raise ConfigError(f"{where}: low ({self.low}) must not exceed high ({self.high})")
        if self.log and self.low <= 0:
            raise ConfigError(f"{where}: a log-scale range needs low > 0, got {self.low}")
        if self.step is not None:
            if not _is_number(self.step) or self.step <= 0 or (self.kind == "int" and not isinstance(self.step, int)):
                raise ConfigError(f"{where}: 'step' must be a positive {'integer' if self.kind == 'int' else 'number'}, got {self.step!r}")
            if self.log:
                raise ConfigError(f"{where}: 'step' and 'log' cannot be combined (Optuna draws log-scale values continuously)")

    def suggest(self, trial: Any) -> Any:
        """Draw this parameter for an Optuna trial."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)

    def describe(self) -> str:
        """The range in a few characters, e.g. '1e-04 .. 1e-02 (log)' or '{8, 16, 32}'."""
        if self.kind == "categorical":
            return "{" + ", ".join(str(c) for c in self.choices) + "}"
        text = f"{_short(self.low)} .. {_short(self.high)}"
        if self.step is not None:
            text += f" step {_short(self.step)}"
        return text + (" (log)" if self.log else "")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_scalar(x: Any) -> bool:
    return isinstance(x, (str, bool)) or _is_number(x)


def _short(x: Any) -> str:
    return f"{x:.0e}" if isinstance(x, float) and x != 0 and (abs(x) < 1e-2 or abs(x) >= 1e4) else str(x)


# The parameters the search knows, in the order they are drawn. What each one sets in the
# run config is decided by gpt2core.search (apply_params); the names here are the contract.
DEFAULT_SPACE: tuple[Param, ...] = (
    Param("learning_rate", "float", 1e-4, 1e-2, log=True, about="peak AdamW learning rate, reached after warmup"),
    Param("min_lr_ratio", "float", 0.0, 0.2, about="final learning rate of the cosine decay, as a fraction of the peak"),
    Param("weight_decay", "float", 0.0, 0.2, about="AdamW decoupled weight decay on matrices (not on biases, norms)"),
    Param("warmup_ratio", "float", 0.0, 0.2, about="linear warmup length, as a fraction of the trial's steps"),
    Param("batch_size", "categorical", choices=(8, 16, 32), about="sequences per micro-batch"),
    Param("grad_accum", "categorical", choices=(1, 2, 4), enabled=False, about="micro-batches per optimizer step"),
    Param("dropout", "float", 0.0, 0.2, about="dropout on embeddings, attention and residual branches"),
    Param("d_model", "categorical", choices=(64, 128, 192, 256), enabled=False, about="model width (heads keep the preset's head size)"),
    Param("num_layers", "int", 2, 8, enabled=False, about="transformer blocks"),
)
KNOWN_PARAMS: tuple[str, ...] = tuple(p.name for p in DEFAULT_SPACE)
_PARAM_KEYS = {"type", "low", "high", "log", "step", "choices", "enabled", "about"}


# The run option each parameter sets (most set the option of their own name).
PARAM_OPTIONS = {"min_lr_ratio": "min_lr", "warmup_ratio": "warmup_steps"}


@dataclass(frozen=True)
class SearchSpace:
    """The parameters a study varies, plus the parameter budget that bounds width/depth."""

    params: tuple[Param, ...] = DEFAULT_SPACE
    max_params: int | None = None  # models larger than this (non-embedding + embedding) are pruned unbuilt

    def __post_init__(self) -> None:
        if self.max_params is not None and not (isinstance(self.max_params, int) and not isinstance(self.max_params, bool) and self.max_params > 0):
            raise ConfigError(f"max_params must be a positive integer, got {self.max_params!r}")

    @property
    def enabled(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.enabled)

    def without_fixed(self, fixed: Mapping[str, Any]) -> "SearchSpace":
        """The space less every parameter whose run option the user fixed (a flag or the
        --config file): a fixed ``--batch-size 4`` means every trial trains at batch 4, and
        --show-space shows the parameter disabled with the value that holds it."""
        params = []
        for p in self.params:
            option = PARAM_OPTIONS.get(p.name, p.name)
            if p.enabled and fixed.get(option) is not None:
                p = dataclasses.replace(p, enabled=False, about=f"{p.about} (fixed: {option.replace('_', '-')} = {fixed[option]!r})")
            params.append(p)
        return dataclasses.replace(self, params=tuple(params))

    def require_nonempty(self) -> None:
        if not self.enabled:
            raise ConfigError("the search space is empty: enable at least one parameter (see `gpt2tui optimize --show-space`)")

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Draw every enabled parameter for ``trial``; {name: value}."""
        return {p.name: p.suggest(trial) for p in self.enabled}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (stored in the study so a resumed study can check it is the same)."""
        return {
            "max_params": self.max_params,
            "params": {p.name: {k: v for k, v in dataclasses.asdict(p).items() if k not in ("name", "about")} for p in self.enabled},
        }

    def incompatible_with(self, stored: Mapping[str, Any]) -> list[str]:
        """Why a study created with space ``stored`` (``to_dict`` form) cannot go on with this one.

        Optuna refuses a parameter whose kind or categorical choices change mid-study; a
        changed numeric range is allowed (the sampler just sees a new range)."""
        problems = []
        old_params = stored.get("params", {}) if isinstance(stored, Mapping) else {}
        for p in self.enabled:
            old = old_params.get(p.name)
            if not isinstance(old, Mapping):
                continue
            if old.get("kind") != p.kind:
                problems.append(f"{p.name} was {old.get('kind')}, now {p.kind}")
            elif p.kind == "categorical" and list(old.get("choices", ())) != list(p.choices):
                problems.append(f"{p.name} choices were {list(old.get('choices', ()))}, now {list(p.choices)}")
            elif p.kind != "categorical" and bool(old.get("log")) != p.log:
                problems.append(f"{p.name} log scale was {bool(old.get('log'))}, now {p.log}")
        return problems


def load_space(path: str | Path | None) -> SearchSpace:
    """The default space, overridden by the TOML file at ``path`` (None: the defaults)."""
    if path is None:
        return SearchSpace()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"search space file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read search space file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"search space file {path} is not valid TOML: {exc}") from None
    return space_from_mapping(data, source=str(path))


def space_from_mapping(data: Mapping[str, Any], *, source: str = "search space") -> SearchSpace:
    unknown_top = sorted(set(data) - {"params", "replace", "max_params"})
    if unknown_top:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown_top)} (known: params, replace, max_params)")
    overrides = data.get("params", {})
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{source}: 'params' must be a table of [params.<name>] tables")
    unknown = sorted(set(overrides) - set(KNOWN_PARAMS))
    if unknown:
        raise ConfigError(f"{source}: unknown parameter(s) {', '.join(unknown)} (known: {', '.join(KNOWN_PARAMS)})")
    replace = data.get("replace", False)
    if not isinstance(replace, bool):
        raise ConfigError(f"{source}: 'replace' must be true or false")
    params = []
    for default in DEFAULT_SPACE:
        change = overrides.get(default.name)
        if change is None:
            params.append(dataclasses.replace(default, enabled=default.enabled and not replace))
            continue
        if not isinstance(change, Mapping):
            raise ConfigError(f"{source}: params.{default.name} must be a table")
        bad_keys = sorted(set(change) - _PARAM_KEYS)
        if bad_keys:
            raise ConfigError(f"{source}: params.{default.name} has unknown key(s) {', '.join(bad_keys)} (known: {', '.join(sorted(_PARAM_KEYS))})")
        values = dict(change)
        if "type" in values:
            values["kind"] = values.pop("type")
        kind = values.get("kind", default.kind)
        if kind != default.kind:  # a new kind does not inherit the default's range or choices
            needed = ("choices",) if kind == "categorical" else ("low", "high")
            missing = [k for k in needed if k not in values]
            if missing:
                raise ConfigError(f"{source}: params.{default.name} is now {kind}, so it needs {' and '.join(missing)}")
            if kind == "categorical":
                values.update(low=None, high=None, log=False, step=None)
            else:
                values.setdefault("choices", ())
        values.setdefault("enabled", True)
        try:
            params.append(dataclasses.replace(default, **values))
        except TypeError as exc:
            raise ConfigError(f"{source}: params.{default.name}: {exc}") from None
    return SearchSpace(tuple(params), data.get("max_params"))


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def space_to_toml(space: SearchSpace) -> str:
    """The space as a TOML file ``load_space`` reads back to the same space."""
    lines = ["# gpt2tui optimize search space: edit and pass with --space FILE", "replace = true"]
    if space.max_params is not None:
        lines.append(f"max_params = {space.max_params}  # width/depth draws above this many parameters are pruned unbuilt")
    for p in space.params:
        lines += ["", f"# {p.about}", f"[params.{p.name}]", f"enabled = {toml_value(p.enabled)}", f'type = "{p.kind}"']
        if p.kind == "categorical":
            lines.append(f"choices = {toml_value(list(p.choices))}")
        else:
            lines += [f"low = {toml_value(p.low)}", f"high = {toml_value(p.high)}", f"log = {toml_value(p.log)}"]
            if p.step is not None:
                lines.append(f"step = {toml_value(p.step)}")
    return "\n".join(lines) + "\n"
