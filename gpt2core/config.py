"""Dataclass configs for the model and the sampler, and the named model presets.

Field names follow the original specification (``d_model``, ``num_heads``, ...), so a config
file written for it reads here unchanged. Every field has a default and a one-line reason.
Configs validate themselves and raise ``ConfigError`` with a sentence the user can act on.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
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
