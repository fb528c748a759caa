"""Dataclass configs for the model and the sampler, and the named model presets.

Field names follow the original specification (``d_model``, ``num_heads``, ...), so a config
file written for it reads here unchanged. Every field has a default and a one-line reason.
Configs validate themselves and raise ``ConfigError`` with a sentence the user can act on.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from gpt2core.errors import ConfigError


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def from_mapping(cls, values: Mapping[str, Any], *, what: str):
    """Build dataclass ``cls`` from a mapping, refusing keys it does not know (typos)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown {what} option(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return cls(**dict(values))


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a GPT-2 model. Defaults are GPT-2 small (124M), as in the specification."""

    vocab_size: int = 50257  # GPT-2's BPE vocabulary; set from the tokenizer for bpe/char models
    context_length: int = 1024  # longest sequence the learned position table covers
    d_model: int = 768  # width of the residual stream (embedding dimension)
    num_heads: int = 12  # attention heads; must divide d_model
    num_layers: int = 12  # transformer blocks
    d_ff: int = 3072  # hidden width of the MLP, 4 * d_model in every GPT-2
    dropout: float = 0.1  # on embeddings, attention weights and residual branches while training
    bias: bool = True  # GPT-2 has biases in Linear and LayerNorm; False is slightly faster
    layer_norm_eps: float = 1e-5  # GPT-2's LayerNorm epsilon, needed to match its logits exactly

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name in ("vocab_size", "context_length", "d_model", "num_heads", "num_layers", "d_ff"):
            value = getattr(self, name)
            _require(
                isinstance(value, int) and not isinstance(value, bool) and value > 0,
                f"{name} must be a positive integer, got {value!r}",
            )
        _require(
            self.d_model % self.num_heads == 0,
            f"num_heads ({self.num_heads}) must divide d_model ({self.d_model}); "
            f"try num_heads in {_divisors(self.d_model)}",
        )
        _require(
            isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0,
            f"dropout must be in [0, 1), got {self.dropout!r}",
        )
        _require(
            isinstance(self.layer_norm_eps, (int, float)) and self.layer_norm_eps > 0,
            f"layer_norm_eps must be positive, got {self.layer_norm_eps!r}",
        )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ModelConfig":
        return from_mapping(cls, values, what="model")

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


@dataclass(frozen=True)
class SampleConfig:
    """How to sample a continuation. Defaults are the specification's InferenceConfig."""

    max_new_tokens: int = 100  # how many tokens to add at most
    temperature: float = 0.8  # divides the logits; 0 means greedy (always the most likely token)
    top_k: int = 50  # keep only the k most likely tokens; 0 turns it off
    top_p: float = 0.95  # keep the smallest set of tokens whose probability sums to top_p; 1 turns it off
    min_p: float = 0.0  # drop tokens less likely than min_p times the top token; 0 turns it off
    repetition_penalty: float = 1.2  # >1 makes tokens already in the window less likely (CTRL paper)
    repetition_window: int = 64  # how many recent tokens the penalty looks at; 0 means all of them
    stop: tuple[str, ...] = field(default_factory=tuple)  # stop when the text produces any of these
    seed: int | None = None  # a fixed seed makes sampling reproducible; None draws a fresh one
    stop_at_eos: bool = True  # end the continuation at the end-of-text token
    stream: bool = True  # print pieces as they are made rather than all at the end

    def __post_init__(self) -> None:
        if isinstance(self.stop, (list, str)):
            object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))
        self.validate()

    def validate(self) -> None:
        _require(
            isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1,
            f"max_new_tokens must be at least 1, got {self.max_new_tokens!r}",
        )
        _require(
            _is_finite_number(self.temperature) and self.temperature >= 0,
            f"temperature must be 0 (greedy) or positive, got {self.temperature!r}",
        )
        _require(isinstance(self.top_k, int) and self.top_k >= 0, f"top_k must be 0 (off) or positive, got {self.top_k!r}")
        _require(
            _is_finite_number(self.top_p) and 0.0 < self.top_p <= 1.0,
            f"top_p must be in (0, 1], got {self.top_p!r}",
        )
        _require(_is_finite_number(self.min_p) and 0.0 <= self.min_p < 1.0, f"min_p must be in [0, 1), got {self.min_p!r}")
        _require(
            _is_finite_number(self.repetition_penalty) and self.repetition_penalty > 0,
            f"repetition_penalty must be positive (1 turns it off), got {self.repetition_penalty!r}",
        )
        _require(
            isinstance(self.repetition_window, int) and self.repetition_window >= 0,
            f"repetition_window must be 0 (all) or positive, got {self.repetition_window!r}",
        )
        _require(all(isinstance(s, str) and s for s in self.stop), "stop strings must be non-empty text")

    def replace(self, **changes: Any) -> "SampleConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["stop"] = list(self.stop)
        return d

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "SampleConfig":
        values = dict(values)
        if "stop" in values:
            values["stop"] = tuple(values["stop"])
        return from_mapping(cls, values, what="sampling")


def _is_finite_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# -- data, training and the run that bundles them -------------------------------------------------

TOKENIZER_KINDS = ("gpt2", "bpe", "char")
DEVICES_HELP = "auto, cpu, cuda, cuda:N or mps"
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


@dataclass(frozen=True)
class DataConfig:
    """Where the training text comes from and how it becomes tokens."""

    data: tuple[str, ...] = ()  # local files, directories or globs; empty (and no dataset_name) = the built-in corpus
    dataset_name: str | None = None  # a Hugging Face dataset by name (e.g. "wikitext") or a local dataset directory
    dataset_config: str | None = None  # the dataset's configuration (e.g. "wikitext-2-raw-v1")
    text_column: str = "text"  # the dataset column that holds the text
    tokenizer: str | None = None  # gpt2 / bpe / char; None picks gpt2 for GPT-2-sized presets, bpe (or char) otherwise
    vocab_size: int | None = None  # tokens in a learned bpe vocabulary; None takes the preset's vocab_size
    val_fraction: float = 0.05  # share of a corpus without its own validation split held out for validation
    test_fraction: float = 0.05  # share of a corpus without its own test split held out for the final test
    cache_dir: str | None = None  # learned tokenizers and token files; None = $GPT2TUI_CACHE_DIR or ~/.cache/gpt2tui

    def __post_init__(self) -> None:
        if isinstance(self.data, (str, list)):
            object.__setattr__(self, "data", (self.data,) if isinstance(self.data, str) else tuple(self.data))
        self.validate()

    def validate(self) -> None:
        _require(all(isinstance(p, str) and p for p in self.data), "data paths must be non-empty text")
        _require(
            not (self.data and self.dataset_name),
            "give either --data (local files) or --dataset-name (a Hugging Face dataset), not both",
        )
        _require(
            self.dataset_config is None or self.dataset_name is not None,
            "--dataset-config needs --dataset-name",
        )
        for name in ("dataset_name", "dataset_config"):  # from a TOML file they may be any type
            value = getattr(self, name)
            _require(value is None or isinstance(value, str), f"{name} must be text, got {value!r}")
        _require(isinstance(self.text_column, str) and self.text_column, f"text_column must be non-empty text, got {self.text_column!r}")
        _require(
            self.tokenizer is None or self.tokenizer in TOKENIZER_KINDS,
            f"tokenizer must be one of {', '.join(TOKENIZER_KINDS)}, got {self.tokenizer!r}",
        )
        _require(
            self.vocab_size is None or (_is_int(self.vocab_size) and self.vocab_size >= 257),
            f"vocab_size must be at least 257 (every byte plus end-of-text), got {self.vocab_size!r}",
        )
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            _require(_is_finite_number(value) and 0.0 < value < 0.5, f"{name} must be in (0, 0.5), got {value!r}")
        _require(self.cache_dir is None or (isinstance(self.cache_dir, str) and self.cache_dir), "cache_dir must be a path")

    @property
    def source(self) -> str:
        """'builtin', 'files' or 'hub': which loader reads this corpus."""
        return "files" if self.data else ("hub" if self.dataset_name else "builtin")

    def replace(self, **changes: Any) -> "DataConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["data"] = list(self.data)
        return d

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "DataConfig":
        return from_mapping(cls, values, what="data")


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Defaults are the specification's TrainingConfig (batch 8, lr 3e-4, ...)."""

    batch_size: int = 8  # sequences per micro-batch
    learning_rate: float = 3e-4  # peak learning rate, reached at the end of warmup
    min_lr: float | None = None  # floor the cosine decay ends at; None = learning_rate / 10
    weight_decay: float = 0.01  # AdamW decay on matrices only (not biases, norms or embeddings' positions)
    beta1: float = 0.9  # AdamW momentum of the gradient
    beta2: float = 0.95  # AdamW momentum of the squared gradient; 0.95 is steadier than 0.999 for transformers
    warmup_steps: int = 2000  # linear warmup from 0 to learning_rate
    gradient_clip: float = 1.0  # clip the global gradient norm to this; 0 turns clipping off
    grad_accum: int = 1  # micro-batches per optimizer step (effective batch = batch_size * grad_accum)
    max_steps: int | None = None  # stop after this many optimizer steps; None = no step limit
    max_epochs: float | None = 10.0  # stop after this many passes over the training tokens; None = no limit
    max_training_hours: float | None = 12.0  # wall-clock budget; the learning-rate decay is fitted to end with it
    mixed_precision: bool = True  # bf16 autocast where fast, fp16 + loss scaling on GPUs without bf16
    precision: str = "auto"  # auto (follow mixed_precision and the device), bf16, fp16 or fp32
    compile: bool = False  # torch.compile the model (pays off on GPUs for long runs; slower to start)
    device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps
    threads: int | str | None = None  # CPU threads: None = torch's choice, N = fixed, "auto" = the fastest as load changes
    seed: int = 1337  # seeds initialisation, batch order, dropout and samples
    eval_interval: int = 500  # evaluate (val loss, sample, checkpoint) every this many steps
    eval_iters: int = 50  # validation batches per evaluation (batch_size windows each)
    log_interval: int = 10  # report training loss and speed every this many steps
    checkpoint_interval: int | None = None  # also save every this many steps; None = at each evaluation only
    keep_last: int = 3  # step checkpoints kept (the best is kept besides); at least 2
    sample_prompt: str = "The"  # prompt of the text sample at each evaluation
    sample_tokens: int = 100  # tokens in that sample; 0 turns samples off
    max_bad_steps: int = 5  # give up after this many NaN/Inf steps in a row
    on_save_error: str = "stop"  # a checkpoint that cannot be written (disk full): stop the run, or continue and retry at the next save

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name in ("batch_size", "grad_accum", "eval_interval", "eval_iters", "log_interval", "max_bad_steps"):
            value = getattr(self, name)
            _require(_is_int(value) and value >= 1, f"{name} must be a positive integer, got {value!r}")
        for name in ("warmup_steps", "sample_tokens", "seed"):
            value = getattr(self, name)
            _require(_is_int(value) and value >= 0, f"{name} must be a non-negative integer, got {value!r}")
        _require(
            _is_finite_number(self.learning_rate) and self.learning_rate > 0,
            f"learning_rate must be positive, got {self.learning_rate!r}",
        )
        _require(
            self.min_lr is None or (_is_finite_number(self.min_lr) and 0 <= self.min_lr <= self.learning_rate),
            f"min_lr must be between 0 and learning_rate ({self.learning_rate}), got {self.min_lr!r}",
        )
        _require(
            _is_finite_number(self.weight_decay) and self.weight_decay >= 0,
            f"weight_decay must be 0 or positive, got {self.weight_decay!r}",
        )
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            _require(_is_finite_number(value) and 0 <= value < 1, f"{name} must be in [0, 1), got {value!r}")
        _require(
            _is_finite_number(self.gradient_clip) and self.gradient_clip >= 0,
            f"gradient_clip must be 0 (off) or positive, got {self.gradient_clip!r}",
        )
        _require(
            self.max_steps is None or (_is_int(self.max_steps) and self.max_steps >= 1),
            f"max_steps must be a positive integer, got {self.max_steps!r}",
        )
        _require(
            self.max_epochs is None or (_is_finite_number(self.max_epochs) and self.max_epochs > 0),
            f"max_epochs must be positive, got {self.max_epochs!r}",
        )
        _require(
            self.max_training_hours is None or (_is_finite_number(self.max_training_hours) and self.max_training_hours > 0),
            f"max_training_hours must be positive, got {self.max_training_hours!r}",
        )
        _require(
            any(v is not None for v in (self.max_steps, self.max_epochs, self.max_training_hours)),
            "set at least one limit: max_steps, max_epochs or max_training_hours",
        )
        _require(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        _require(isinstance(self.device, str) and self.device, f"device must be one of {DEVICES_HELP}")
        _require(
            self.threads is None or self.threads == "auto" or (_is_int(self.threads) and self.threads >= 1),
            f"threads must be a positive integer or 'auto', got {self.threads!r}",
        )
        _require(
            self.checkpoint_interval is None or (_is_int(self.checkpoint_interval) and self.checkpoint_interval >= 1),
            f"checkpoint_interval must be a positive integer, got {self.checkpoint_interval!r}",
        )
        _require(
            _is_int(self.keep_last) and self.keep_last >= 2,
            f"keep_last must be at least 2 so a good checkpoint always survives, got {self.keep_last!r}",
        )
        _require(isinstance(self.sample_prompt, str), "sample_prompt must be text")
        _require(
            self.on_save_error in ("stop", "continue"), f"on_save_error must be stop or continue, got {self.on_save_error!r}"
        )

    @property
    def final_lr(self) -> float:
        return self.learning_rate / 10 if self.min_lr is None else self.min_lr

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        return from_mapping(cls, values, what="training")


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs: the model shape, the data and the training settings."""

    model: ModelConfig = field(default_factory=ModelConfig)  # vocab_size is replaced by the tokenizer's at start
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str | None = None  # the preset the model shape started from, for the record

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "model": self.model.to_dict(), "data": self.data.to_dict(), "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "RunConfig":
        unknown = sorted(set(values) - {"preset", "model", "data", "train"})
        if unknown:
            raise ConfigError(f"unknown run config section(s): {', '.join(unknown)}")
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
    try:
        model = base.replace(**model_changes)
        data = DataConfig(**{k: v for k, v in options.items() if k in DATA_OPTIONS})
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
    return options


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
