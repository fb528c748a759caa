"""Dataclass configs for the model and the sampler, and the named model presets.

Field names follow the original specification (``d_model``, ``num_heads``, ...), so a config
file written for it reads here unchanged. Every field has a default and a one-line reason.
Configs validate themselves and raise ``ConfigError`` with a sentence the user can act on.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Mapping, TypeVar

from gpt2core.choices import DEVICES_HELP, GELU_FORMS, ON_SAVE_ERROR, PRECISIONS, TOKENIZER_KINDS
from gpt2core.errors import ConfigError
from gpt2core.schema import Dial, check_fields, check_value, option, specs


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def from_mapping(cls, values: Mapping[str, Any], *, what: str):
    """Build dataclass ``cls`` from a mapping, refusing keys it does not know (typos)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown {what} option(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    try:
        return cls(**dict(values))
    except TypeError as exc:  # a required field missing from a hand-made mapping
        raise ConfigError(f"{what} options: {exc}") from None


Section = TypeVar("Section", bound="OptionSection")


class OptionSection:
    """What every section of declared options shares: copies with changes, and a round trip
    through plain dicts (lists for list options, as JSON and TOML hold them) that refuses keys it
    does not know. One copy here instead of one per config."""

    WHAT: ClassVar[str] = "config"  # how errors name this section's options ("unknown model option(s)")

    def replace(self: Section, **changes: Any) -> Section:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        return {name: list(value) if isinstance(value, tuple) else value for name, value in dataclasses.asdict(self).items()}  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[Section], values: Mapping[str, Any]) -> Section:
        return from_mapping(cls, values, what=cls.WHAT)


@dataclass(frozen=True)
class ModelConfig(OptionSection):
    """The shape of a GPT-2 model. Defaults are GPT-2 small (124M), as in the specification."""

    WHAT: ClassVar[str] = "model"  # the word errors name its options by

    # The upper bounds are far above any GPT-2 (and any model this code can train) and keep a
    # typo or a hostile config from asking for a model that cannot exist before anything is built.
    vocab_size: int = option(50257, int, "tokens in the vocabulary (GPT-2's BPE; set from the tokenizer for bpe/char)", minimum=1, maximum=1 << 22)
    context_length: int = option(1024, int, "tokens per training window: the longest sequence the learned position table covers", minimum=1, maximum=1 << 17)
    d_model: int = option(768, int, "width of the residual stream (embedding dimension)", minimum=1, maximum=1 << 16)
    num_heads: int = option(12, int, "attention heads; must divide d_model", minimum=1, maximum=1 << 12)
    num_layers: int = option(12, int, "transformer blocks", minimum=1, maximum=1024)
    d_ff: int = option(3072, int, "hidden width of the MLP, 4 * d_model in every GPT-2", minimum=1, maximum=1 << 18, note="4 x d-model")
    dropout: float = option(0.1, float, "dropout probability on embeddings, attention weights and residual branches while training", minimum=0.0, maximum=1.0, max_open=True)
    bias: bool = option(True, bool, "biases in Linear and LayerNorm as in GPT-2; off is slightly faster (nanoGPT's CPU recipe trains without)", note="on")
    gelu: str = option("tanh", str, "the MLP's GELU: tanh is GPT-2's approximation (needed to match its and Hugging Face's logits), erf the exact form nanoGPT uses (a little cheaper on CPUs)", choices=GELU_FORMS, note="tanh")
    layer_norm_eps: float = option(1e-5, float, "LayerNorm epsilon; GPT-2's value is needed to match its logits", minimum=0.0, maximum=1.0, min_open=True, flag="")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_fields(self)
        _require(
            self.d_model % self.num_heads == 0,
            f"num_heads ({self.num_heads}) must divide d_model ({self.d_model}); "
            f"try num_heads in {_divisors(self.d_model)}",
        )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def num_params(self, *, include_embeddings: bool = True) -> int:
        """Parameter count of the model this config builds (the LM head is tied, so not counted)."""
        d, f, n = self.d_model, self.d_ff, self.num_layers
        b = 1 if self.bias else 0
        ln = 2 * d if self.bias else d
        attn = d * 3 * d + 3 * d * b + d * d + d * b
        mlp = d * f + f * b + f * d + d * b
        per_block = 2 * ln + attn + mlp
        total = n * per_block + ln
        if include_embeddings:
            total += self.vocab_size * d + self.context_length * d
        return total

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), as in the PaLM paper's appendix B.

        6 * N for the weights plus 12 * L * d * T for attention scores and their use.
        """
        t = seq_len or self.context_length
        n = self.num_params(include_embeddings=False) + self.vocab_size * self.d_model
        return 6.0 * n + 12.0 * self.num_layers * self.d_model * t


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, min(n, 64) + 1) if n % k == 0]


@dataclass(frozen=True)
class Preset:
    """A named model shape with what it is for."""

    name: str
    model: ModelConfig
    about: str


def _gpt2_shape(layers: int, heads: int, width: int) -> ModelConfig:
    return ModelConfig(
        vocab_size=50257, context_length=1024, d_model=width, num_heads=heads, num_layers=layers, d_ff=4 * width
    )


# Small presets take their vocab_size from the tokenizer at training time; the counts in
# `about` are for the stated vocabulary so that they can be compared.
PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "micro",
            ModelConfig(vocab_size=256, context_length=32, d_model=32, num_heads=2, num_layers=2, d_ff=128, dropout=0.0),
            "2 layers, 32 wide: 34K parameters with a 256-token vocabulary; for tests and smoke runs",
        ),
        Preset(
            "tiny",
            ModelConfig(vocab_size=2048, context_length=128, d_model=128, num_heads=4, num_layers=4, d_ff=512, dropout=0.0),
            "4 layers, 128 wide: 1.07M parameters with a 2048-token vocabulary; trains in minutes on a laptop CPU",
        ),
        Preset(
            "small",
            ModelConfig(vocab_size=8192, context_length=256, d_model=384, num_heads=6, num_layers=6, d_ff=1536, dropout=0.1),
            "6 layers, 384 wide: 13.9M parameters with an 8192-token vocabulary; a strong CPU run or a quick GPU one",
        ),
        Preset("gpt2", _gpt2_shape(12, 12, 768), "GPT-2 small: 124M parameters, context 1024 (the specification's default)"),
        Preset("gpt2-medium", _gpt2_shape(24, 16, 1024), "GPT-2 medium: 355M parameters, context 1024"),
        Preset("gpt2-large", _gpt2_shape(36, 20, 1280), "GPT-2 large: 774M parameters, context 1024"),
        Preset("gpt2-xl", _gpt2_shape(48, 25, 1600), "GPT-2 XL: 1558M parameters, context 1024"),
    )
}


def preset(name: str) -> ModelConfig:
    """The ModelConfig of a named preset, or a ConfigError listing the known names."""
    try:
        return PRESETS[name].model
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None


# The most tokens one continuation may ask for: far beyond any context, and small enough that
# the buffers sized by it (token ids, timings) are megabytes, not the terabytes a typo asks for.
MAX_NEW_TOKENS = 1_000_000


@dataclass(frozen=True)
class SampleConfig(OptionSection):
    """How to sample a continuation. Defaults are the specification's InferenceConfig."""

    WHAT: ClassVar[str] = "sampling"  # the word errors name its options by

    # The order is the sampler panel's and the REPL's /help order: how a token is picked, then how many.
    temperature: float = option(0.8, float, "divides the logits: higher is more random; 0 means greedy (always the most likely token)", minimum=0.0, says="0 (greedy) or positive", aliases=("-t",), repl=("temperature", "temp"), dial=Dial(0.0, 2.0, 0.05, 0.25, zero_label="0 greedy"))
    top_k: int = option(50, int, "keep only the k most likely tokens; 0 turns it off", minimum=0, says="0 (off) or positive", dial=Dial(0, 200, 1, 10, zero_label="off"), label="top-k")
    top_p: float = option(0.95, float, "nucleus: keep the fewest tokens whose probability sums to top_p; 1 turns it off", minimum=0.0, maximum=1.0, min_open=True, dial=Dial(0.05, 1.0, 0.01, 0.1), label="top-p")
    min_p: float = option(0.0, float, "drop tokens less likely than min_p times the top token; 0 turns it off", minimum=0.0, maximum=1.0, max_open=True)
    repetition_penalty: float = option(1.2, float, ">1 makes tokens already in the window less likely (CTRL paper); 1 is off", minimum=0.0, min_open=True, says="positive (1 turns it off)", dial=Dial(1.0, 2.0, 0.01, 0.1), label="repeat penalty")
    repetition_window: int = option(64, int, "how many recent tokens the penalty looks at; 0 means all of them", minimum=0, says="0 (all) or positive")
    max_new_tokens: int = option(100, int, "how many tokens to add at most", says="at least 1", minimum=1, maximum=MAX_NEW_TOKENS, aliases=("-n",), repl=("max_new_tokens", "n"), dial=Dial(10, 1000, 10, 100))
    stop: tuple[str, ...] = option((), str, "stop before any of these texts (\\n is a newline)", minimum=1, many=True, none="none")
    seed: int | None = option(None, int, "a fixed seed makes sampling reproducible", minimum=0, optional=True, none="a fresh draw each time")
    stop_at_eos: bool = option(True, bool, "end the continuation at the end-of-text token (off: keep going past it)", flag="--stop-at-eos/--ignore-eos", repl=("eos",))
    stream: bool = option(True, bool, "print pieces as they are made rather than all at the end")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_fields(self)


# -- data, training and the run that bundles them -------------------------------------------------

@dataclass(frozen=True)
class DataConfig(OptionSection):
    """Where the training text comes from and how it becomes tokens."""

    WHAT: ClassVar[str] = "data"  # the word errors name its options by

    # A file's last 10% (val_fraction + test_fraction, cut at a line break) never trains: docs/TRAINING.md.
    data: tuple[str, ...] = option((), str, "text file, directory or glob; the last 10% of the text is held out (5% validation, 5% test)", minimum=1, many=True, none="the built-in corpus", note="the built-in corpus")
    dataset_name: str | None = option(None, str, "a Hugging Face dataset by name (e.g. wikitext) or a local dataset directory", minimum=1, optional=True, says="text")
    dataset_config: str | None = option(None, str, "the dataset's configuration (e.g. wikitext-2-raw-v1)", minimum=1, optional=True, says="text")
    text_column: str = option("text", str, "the dataset column that holds the text", minimum=1)
    tokenizer: str | None = option(None, str, f"the tokenizer: {', '.join(TOKENIZER_KINDS)} (gpt2 is OpenAI's, bpe is learned from the corpus), or a directory with tokenizer.json, or vocab.json + merges.txt", minimum=1, optional=True, none="gpt2 for GPT-2-sized presets, bpe (or char) otherwise")
    vocab_size: int | None = option(None, int, "tokens in a learned bpe vocabulary (every byte plus end-of-text at least)", says="at least 257 (every byte plus end-of-text)", minimum=257, maximum=1 << 22, optional=True, none="the preset's")
    val_fraction: float = option(0.05, float, "share of a corpus without its own validation split held out for validation", minimum=0.0, maximum=0.5, min_open=True, max_open=True, flag="")
    test_fraction: float = option(0.05, float, "share of a corpus without its own test split held out for the final test", minimum=0.0, maximum=0.5, min_open=True, max_open=True, flag="")
    cache_dir: str | None = option(None, str, "learned tokenizers and token files", minimum=1, optional=True, none="$GPT2TUI_CACHE_DIR or ~/.cache/gpt2tui")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_fields(self)
        _require(
            not (self.data and self.dataset_name),
            "give either --data (local files) or --dataset-name (a Hugging Face dataset), not both",
        )
        _require(
            self.dataset_config is None or self.dataset_name is not None,
            "--dataset-config needs --dataset-name",
        )

    @property
    def source(self) -> str:
        """'builtin', 'files' or 'hub': which loader reads this corpus."""
        return "files" if self.data else ("hub" if self.dataset_name else "builtin")


@dataclass(frozen=True)
class TrainConfig(OptionSection):
    """How to train. Defaults are the specification's TrainingConfig (batch 8, lr 3e-4, ...)."""

    WHAT: ClassVar[str] = "training"  # the word errors name its options by

    batch_size: int = option(8, int, "sequences per micro-batch, all processes together", minimum=1, maximum=1 << 20)
    learning_rate: float = option(3e-4, float, "peak learning rate, reached at the end of warmup", minimum=0.0, min_open=True, aliases=("--lr",), label="lr")
    min_lr: float | None = option(None, float, "floor the cosine decay ends at", minimum=0.0, optional=True, none="learning-rate / 10")
    weight_decay: float = option(0.01, float, "AdamW decay on matrices only (not biases, norms or embeddings' positions)", minimum=0.0)
    beta1: float = option(0.9, float, "AdamW beta1: momentum of the gradient", minimum=0.0, maximum=1.0, max_open=True)
    beta2: float = option(0.95, float, "AdamW beta2: momentum of the squared gradient; 0.95 is steadier than 0.999 for transformers", minimum=0.0, maximum=1.0, max_open=True)
    warmup_steps: int = option(2000, int, "linear warmup from 0 to learning_rate", minimum=0)
    gradient_clip: float = option(1.0, float, "clip the global gradient norm to this; 0 turns clipping off", minimum=0.0, says="0 (off) or positive")
    grad_accum: int = option(1, int, "micro-batches per optimizer step (effective batch = batch_size * grad_accum)", minimum=1, maximum=1 << 20, aliases=("--gradient-accumulation-steps",))
    # The limits: leaving all three out is a preset's 10 epochs / 12 hours, so 0 on a command line says none.
    max_steps: int | None = option(None, int, "stop after this many optimizer steps", minimum=1, optional=True, none="no limit", none_flag=0, note="")
    max_epochs: float | None = option(10.0, float, "stop after this many passes over the training tokens", minimum=0.0, min_open=True, optional=True, none="no limit", none_flag=0)
    max_training_hours: float | None = option(12.0, float, "wall-clock budget; once it will end the run, the learning-rate decay ends with it", minimum=0.0, min_open=True, optional=True, none="no limit", none_flag=0, note="12 with a preset; off when another limit is given", label="max hours")
    mixed_precision: bool = option(True, bool, "autocast to bf16 where it is fast, fp16 + loss scaling on GPUs without bf16", note="on")
    precision: str = option("auto", str, "force a precision; auto follows mixed_precision and the device", choices=PRECISIONS)
    compile: bool = option(False, bool, "compile the model with torch.compile (pays off on GPUs for long runs; slower to start)", note="off")
    device: str = option("auto", str, f"where to train: {DEVICES_HELP}", minimum=1)
    # On the command line N or auto is text: gpt2tui/commands/train.py reads it (and the launcher passes it on as typed).
    threads: int | str | None = option(None, int, "CPU threads: N, or auto (the fastest as load changes; sums then differ, so runs are not bit-reproducible)", minimum=1, maximum=4096, optional=True, also=("auto",), says="a positive integer or 'auto'", none="torch's choice", note="auto in the no-option run; else fixed at torch's count, recorded and reused on resume")
    seed: int = option(1337, int, "random seed: initialisation, batch order, dropout and samples", minimum=0)
    eval_interval: int = option(500, int, "evaluate (val loss, sample, checkpoint) every this many steps", minimum=1, label="eval every")
    eval_iters: int = option(50, int, "validation batches per evaluation (batch_size windows each)", minimum=1, maximum=1 << 20)
    log_interval: int = option(10, int, "report training loss and speed every this many steps", minimum=1)
    checkpoint_interval: int | None = option(None, int, "also checkpoint every this many steps", minimum=1, optional=True, none="at each evaluation only")
    keep_last: int = option(3, int, "step checkpoints kept besides the best; at least 2 so a good checkpoint always survives", says="at least 2 so a good checkpoint always survives", minimum=2, maximum=1 << 20)
    sample_prompt: str = option("The", str, "prompt of the text sample at each evaluation")
    sample_tokens: int = option(100, int, "tokens in that sample; 0 turns samples off", minimum=0, maximum=MAX_NEW_TOKENS)
    max_bad_steps: int = option(5, int, "give up after this many NaN/Inf steps in a row", minimum=1, flag="")
    on_save_error: str = option("stop", str, "a checkpoint that cannot be written (disk full): stop the run (exit 1), or warn, continue and retry at the next save", choices=ON_SAVE_ERROR)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_fields(self)
        _require(
            self.min_lr is None or self.min_lr <= self.learning_rate,
            f"min_lr must be between 0 and learning_rate ({self.learning_rate}), got {self.min_lr!r}",
        )
        _require(
            any(v is not None for v in (self.max_steps, self.max_epochs, self.max_training_hours)),
            "set at least one limit: max_steps, max_epochs or max_training_hours",
        )

    @property
    def final_lr(self) -> float:
        return self.learning_rate / 10 if self.min_lr is None else self.min_lr


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs: the model shape, the data and the training settings."""

    model: ModelConfig = field(default_factory=ModelConfig)  # vocab_size is replaced by the tokenizer's at start
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str | None = None  # the preset the model shape started from, for the record

    def __post_init__(self) -> None:
        _require(self.preset is None or (isinstance(self.preset, str) and self.preset), f"preset must be a preset's name, got {self.preset!r}")
        for name, cls in (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig)):
            _require(isinstance(getattr(self, name), cls), f"the run config's {name} section must be a table of options")

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "model": self.model.to_dict(), "data": self.data.to_dict(), "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "RunConfig":
        unknown = sorted(set(values) - {"preset", "model", "data", "train"})
        if unknown:
            raise ConfigError(f"unknown run config section(s): {', '.join(unknown)}")
        for name in ("model", "data", "train"):
            _require(isinstance(values.get(name) or {}, Mapping), f"the run config's {name} section must be a table of options")
        return cls(
            model=ModelConfig.from_dict(values.get("model") or {}),
            data=DataConfig.from_dict(values.get("data") or {}),
            train=TrainConfig.from_dict(values.get("train") or {}),
            preset=values.get("preset"),
        )


# Which config a flat option name (a CLI flag, a key of a TOML file) belongs to. vocab_size is
# the tokenizer's: the model's vocabulary always comes from the tokenizer it is trained with.
MODEL_OPTIONS = frozenset(f.name for f in fields(ModelConfig)) - {"vocab_size"}
DATA_OPTIONS = frozenset(f.name for f in fields(DataConfig))
TRAIN_OPTIONS = frozenset(f.name for f in fields(TrainConfig))
RUN_OPTIONS = frozenset({"preset"})


def option_table() -> dict[str, tuple[str, Any, Any]]:
    """Every flat run option -> (its section, its Spec, its default): the one table that a TOML
    file, a command line or a console form is checked against before a config is built."""
    table: dict[str, tuple[str, Any, Any]] = {}
    for section, cls, names in (("model", ModelConfig, MODEL_OPTIONS), ("data", DataConfig, DATA_OPTIONS), ("train", TrainConfig, TRAIN_OPTIONS)):
        for name, spec, default in specs(cls):
            if name in names:
                table[name] = (section, spec, default)
    return table


def check_option(name: str, value: Any) -> Any:
    """One flat run option's value, checked by its declaration (ConfigError if it is unknown or
    not allowed). ``preset`` is checked against the presets (and auto)."""
    if name == "preset":
        _require(value is None or value == "auto" or (isinstance(value, str) and value in PRESETS), f"preset must be auto or one of {', '.join(PRESETS)}, got {value!r}")
        return value
    table = option_table()
    if name not in table:
        raise ConfigError(f"unknown option {name!r} (known: {', '.join(sorted([*table, 'preset']))})")
    return check_value(name, table[name][1], value)


def absolute_data_paths(paths: Any) -> Any:
    """--data values as absolute paths (globs stay globs, made absolute), as a run records them:
    a resume or an evaluation from another folder must read the same files. Anything not a list
    of text is returned as it is, for validation to refuse."""
    import os

    import glob

    items = (paths,) if isinstance(paths, str) else paths
    if not isinstance(items, (list, tuple)) or not all(isinstance(p, str) and p for p in items):
        return paths
    # A path that does not exist stays as typed: it is refused when the corpus is read, and the
    # message should show what the user typed.
    return tuple(
        os.path.abspath(os.path.expanduser(p)) if os.path.exists(os.path.expanduser(p)) or glob.has_magic(p) else p for p in items
    )


def run_config_from_options(options: Mapping[str, Any]) -> RunConfig:
    """A RunConfig from flat options (``preset``, ``d_model``, ``tokenizer``, ``learning_rate``, ...):
    the preset's model shape with the model options laid over it, and the data and training
    options over their defaults. Unknown names are a ConfigError listing the known ones."""
    known = MODEL_OPTIONS | DATA_OPTIONS | TRAIN_OPTIONS | RUN_OPTIONS
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown option(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    preset_name = options.get("preset") or "gpt2"
    base = preset(preset_name)
    model_changes = {k: v for k, v in options.items() if k in MODEL_OPTIONS}
    if "d_model" in model_changes and "d_ff" not in model_changes:
        model_changes["d_ff"] = 4 * model_changes["d_model"]  # keep GPT-2's MLP ratio when only the width changes
    data_options = {k: v for k, v in options.items() if k in DATA_OPTIONS}
    if data_options.get("data"):
        data_options["data"] = absolute_data_paths(data_options["data"])
    try:
        model = base.replace(**model_changes)
        data = DataConfig(**data_options)
        train = TrainConfig(**{k: v for k, v in options.items() if k in TRAIN_OPTIONS})
    except TypeError as exc:  # a value of the wrong type that validate() did not catch
        raise ConfigError(str(exc)) from None
    return RunConfig(model=model, data=data, train=train, preset=preset_name)


def load_options_file(path: str | Path) -> dict[str, Any]:
    """Flat options from a TOML file. Keys may sit at the top level (``learning_rate = 1e-3``)
    or in ``[model]``, ``[data]`` and ``[train]`` tables; dashes are read as underscores."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    sections = {"model": MODEL_OPTIONS | {"vocab_size"}, "data": DATA_OPTIONS, "train": TRAIN_OPTIONS}
    options: dict[str, Any] = {}
    for key, value in raw.items():
        key = key.replace("-", "_")
        if key in sections and isinstance(value, dict):
            for inner, inner_value in value.items():
                inner = inner.replace("-", "_")
                if inner not in sections[key]:
                    raise ConfigError(f"config file {path}: [{key}] has no option {inner!r}")
                options[inner] = inner_value
        else:
            options[key] = value
    known = set(option_table()) | RUN_OPTIONS
    for key, value in options.items():  # each value by its declaration, so the message names the file
        if key not in known:
            continue  # unknown names are refused all together, with the list of known ones, when the config is built
        try:
            options[key] = check_option(key, value)
        except ConfigError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
    return options
