"""Starting a new run from trained weights: ``gpt2tui train --init-from SOURCE``.

SOURCE is a Hugging Face hub name (``gpt2``, ``gpt2-medium``, ``gpt2-large``, ``gpt2-xl``), a
Hugging Face GPT-2 directory, or one of our checkpoints (a checkpoint directory, a run's
checkpoint folder, whose best checkpoint is taken, or a run name). What comes from SOURCE is
what its weights fix: the model shape, the weights themselves and the vocabulary. Everything
else is new: the run starts at step 0 with a fresh optimizer, learning-rate schedule and data
cursor, on the user's data, training and budget flags.

Two shape options may still be set, because they change no weight: ``context_length`` may be
smaller than SOURCE's (the position table is cropped to its first rows, as nanoGPT does), and
``dropout`` is anything in [0, 1). Any other shape option that contradicts SOURCE is refused
with the reason, before anything is written.

The run records where it started under ``init_from`` in config.json, in the ``run_started``
event (the dashboard reads ``config["init_from"]["label"]``) and in every checkpoint's meta,
so a resumed run still knows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch.nn as nn

from gpt2core.config import RunConfig, run_config_from_options
from gpt2core.errors import CheckpointError, ConfigError, TokenizerError
from gpt2core.model import GPT
from gpt2core.tokenizer import Tokenizer, load_tokenizer_choice

INIT_FROM_KEY = "init_from"  # where config.json, run_started's config and checkpoint meta keep the record

# Shape options the weights fix; a flag that asks for another value contradicts SOURCE.
FIXED_BY_WEIGHTS = ("d_model", "num_heads", "num_layers", "d_ff", "bias", "gelu", "layer_norm_eps")

# Training defaults of a fine-tuning run, under the user's flags. Pretrained weights want a
# learning rate about ten times lower than training from scratch (5e-5 is the Hugging Face
# Trainer's default), a short warmup so the first updates do not wreck them (shortened
# automatically when the run is shorter), and a few passes over the user's text rather than a
# 12-hour budget.
FINETUNE_DEFAULTS: dict[str, Any] = {
    "learning_rate": 5e-5,
    "min_lr": 5e-6,
    "warmup_steps": 100,
    "weight_decay": 0.01,
    "batch_size": 8,
    "max_epochs": 3.0,
    "max_training_hours": None,
    "eval_interval": 200,
    "eval_iters": 20,
    "log_interval": 10,
}


@dataclass
class StartPoint:
    """The weights and tokenizer a run starts from, and how to name where they came from."""

    source: str  # what the user typed
    kind: str  # "checkpoint", "huggingface" (a local directory) or "hub"
    path: Path  # where the weights were read (a hub name's local snapshot)
    step: int | None  # the source checkpoint's training step; None for Hugging Face models
    model: GPT  # CPU, eval mode; shaped for the run by ``model_for``
    tokenizer: Tokenizer

    @property
    def label(self) -> str:
        """One line for logs, lists and the dashboard."""
        if self.kind == "checkpoint":
            return f"checkpoint {self.path}" + (f" (step {self.step})" if self.step is not None else "")
        if self.kind == "hub":
            return f"Hugging Face {self.source}"
        return f"Hugging Face GPT-2 {self.path}"

    def record(self) -> dict[str, Any]:
        """What the run keeps about its start (JSON)."""
        return {"source": self.source, "kind": self.kind, "path": str(self.path), "step": self.step, "label": self.label}

    def model_for(self, config: RunConfig) -> GPT:
        """SOURCE's model shaped for ``config``: the position table cropped to its context
        length, its dropout set. Weights are not copied; the start point is used once."""
        require_same_shape(self, config)
        model, wanted = self.model, config.model
        if wanted.context_length < model.config.context_length:
            wpe = model.transformer.wpe
            # (context, C) -> (wanted context, C): the first rows are the positions the run uses
            wpe.weight = nn.Parameter(wpe.weight.detach()[: wanted.context_length].clone())
            wpe.num_embeddings = wanted.context_length
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = wanted.dropout
            elif hasattr(module, "dropout") and isinstance(module.dropout, float):
                module.dropout = wanted.dropout  # attention's dropout_p is a float, not a module
        model.config = wanted
        return model


def load_start_point(source: str, *, checkpoints_dir: str | Path = "checkpoints", tokenizer: str | None = None) -> StartPoint:
    """Read SOURCE (see the module docstring). ``tokenizer`` (``gpt2`` or a directory) supplies
    the vocabulary of a SOURCE that has none, and must agree with one it has. Raises
    CheckpointError / TokenizerError / HubUnavailableError with one line the user can act on."""
    from gpt2core.checkpoint import is_checkpoint, load_checkpoint, resolve_checkpoint
    from gpt2core.hf import HUB_MODELS, is_hf_directory, load_hf, looks_like_hub_name

    if tokenizer is not None and tokenizer in ("bpe", "char"):
        raise ConfigError(
            f"--tokenizer {tokenizer} learns a new vocabulary, but --init-from keeps SOURCE's (its weights are made for it); "
            "drop --tokenizer, or give the vocabulary SOURCE was trained with (gpt2 or a tokenizer directory)"
        )
    path = Path(source)
    root = Path(checkpoints_dir)
    note = ""
    if path.is_dir() and is_hf_directory(path):
        imported = load_hf(path)
        model, found, note, kind, where, step = imported.model, imported.tokenizer, imported.tokenizer_note, "huggingface", path, None
    elif is_checkpoint(path) or path.is_dir() or source == "latest" or (len(path.parts) == 1 and (root / path).is_dir()):
        directory = resolve_checkpoint(source, prefer="best", root=root)
        loaded = load_checkpoint(directory)
        model, found, kind, where, step = loaded.model, loaded.tokenizer, "checkpoint", directory, loaded.info.step
    elif looks_like_hub_name(source):
        imported = load_hf(source)
        model, found, note, kind, where, step = imported.model, imported.tokenizer, imported.tokenizer_note, "hub", imported.directory, None
    else:
        raise CheckpointError(
            f"--init-from {source}: no such model; give a checkpoint directory, a run's checkpoint folder, a run name "
            f"under {root}/, a Hugging Face GPT-2 directory, or a hub name ({', '.join(HUB_MODELS[:4])})"
        )
    chosen = _choose_tokenizer(source, found, note, tokenizer)
    model = _fit_vocabulary(model, chosen, source)
    model.cpu().eval()
    return StartPoint(source=source, kind=kind, path=Path(where), step=step, model=model, tokenizer=chosen)


def _choose_tokenizer(source: str, found: Tokenizer | None, note: str, asked: str | None) -> Tokenizer:
    if asked is None:
        if found is None:
            why = f" ({note})" if note else ""
            raise TokenizerError(
                f"--init-from {source} has no tokenizer{why}; give the one it was trained with: --tokenizer gpt2 or --tokenizer PATH"
            )
        return found
    given = load_tokenizer_choice(asked)
    if found is not None and found.backend.get_vocab(with_added_tokens=True) != given.backend.get_vocab(with_added_tokens=True):
        raise ConfigError(
            f"--tokenizer {asked} is not the vocabulary of {source} ({found.vocab_size} tokens, which it brings along); drop --tokenizer"
        )
    return found or given


def _fit_vocabulary(model: GPT, tokenizer: Tokenizer, source: str) -> GPT:
    """A model with more embedding rows than its tokenizer has tokens (a vocabulary padded to a
    multiple of 64 for speed) loses the rows no token id reaches: a run's vocabulary is its
    tokenizer's. Fewer rows than tokens cannot work."""
    rows, tokens = model.config.vocab_size, tokenizer.vocab_size
    if tokens > rows:
        raise TokenizerError(f"--init-from {source}: its tokenizer has {tokens} tokens but the model only {rows} embedding rows")
    if tokens < rows:
        tied = model.lm_head.weight is model.transformer.wte.weight
        wte = model.transformer.wte
        wte.weight = nn.Parameter(wte.weight.detach()[:tokens].clone())  # (V, C) -> (tokens, C)
        wte.num_embeddings = tokens
        if tied:
            model.lm_head.weight = wte.weight
        else:
            model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach()[:tokens].clone())
        model.lm_head.out_features = tokens
        model.config = model.config.replace(vocab_size=tokens)
    return model


def finetune_config(start: StartPoint, options: Mapping[str, Any]) -> RunConfig:
    """The RunConfig of a run that starts from ``start``: its shape and vocabulary, the
    fine-tuning defaults, and the user's options over them (shape options checked)."""
    options = dict(options)
    preset = options.pop("preset", None)
    if preset not in (None, "auto"):
        raise ConfigError(f"--preset {preset} sets a model shape, but --init-from takes the shape from {start.source}; drop --preset")
    if options.pop("vocab_size", None) is not None:
        raise ConfigError(f"--vocab-size sizes a learned vocabulary, but --init-from keeps {start.source}'s ({start.tokenizer.vocab_size} tokens); drop it")
    options.pop("tokenizer", None)  # read by load_start_point
    source_shape = start.model.config
    changes = {}
    for key in ("context_length", "dropout"):
        if options.get(key) is not None:
            changes[key] = options.pop(key)
    for key in FIXED_BY_WEIGHTS:
        if key in options:
            asked = options.pop(key)
            if asked != getattr(source_shape, key):
                raise ConfigError(_contradiction(start, key, asked, getattr(source_shape, key)))
    model = source_shape.replace(**changes)  # validates dropout and the rest
    if model.context_length > source_shape.context_length:
        raise ConfigError(
            f"--context-length {model.context_length} is longer than {start.source}'s {source_shape.context_length}: "
            f"its position table has no rows past that; a smaller value crops it"
        )
    run = run_config_from_options({**FINETUNE_DEFAULTS, **options})
    data = run.data.replace(tokenizer=start.tokenizer.kind)
    return run.replace(model=model, data=data, preset=None)


def _contradiction(start: StartPoint, key: str, asked: Any, have: Any) -> str:
    flag = "--" + key.replace("_", "-")
    return f"{flag} {asked} contradicts --init-from {start.source}: its weights have {key} = {have}; drop {flag} (the shape comes from SOURCE)"


def require_same_shape(start: StartPoint, config: RunConfig) -> None:
    """A config given to the library with a start point must describe SOURCE's weights."""
    have, want = start.model.config, config.model
    for key in (*FIXED_BY_WEIGHTS, "vocab_size"):
        if getattr(want, key) != getattr(have, key):
            raise ConfigError(_contradiction(start, key, getattr(want, key), getattr(have, key)))
    if want.context_length > have.context_length:
        raise ConfigError(f"context_length {want.context_length} is longer than {start.source}'s {have.context_length}")


def refuse_with_resume(resume_from: Any) -> None:
    if resume_from is not None:
        raise ConfigError(
            "--init-from starts a new run from SOURCE's weights and --resume-from continues an existing one; give only one"
        )


def start_point_for(
    init_from: "str | Path | StartPoint", config: RunConfig | None, *, resume_from: Any, checkpoints_dir: str | Path
) -> tuple[StartPoint, RunConfig]:
    """For the Trainer: (the start point, the run config). ``init_from`` may be a name (read
    here) or a StartPoint already read; ``config`` None takes the fine-tuning defaults."""
    refuse_with_resume(resume_from)
    start = init_from if isinstance(init_from, StartPoint) else load_start_point(str(init_from), checkpoints_dir=checkpoints_dir)
    if config is None:
        config = finetune_config(start, {})
    elif config.model.vocab_size != start.model.config.vocab_size:
        config = config.replace(model=config.model.replace(vocab_size=start.model.config.vocab_size))
    require_same_shape(start, config)
    return start, config


def started_from(run_dir: str | Path) -> dict[str, Any] | None:
    """The ``init_from`` record of a run (see ``StartPoint.record``) from its config.json; None
    for a run from scratch, or a config.json that cannot be read (one bad run must not break
    a listing)."""
    from gpt2core.safe_json import UnreadableJSON, read_json_file  # regular files only, capped, depth-limited

    try:
        record = read_json_file(Path(run_dir) / "config.json", max_bytes=16 << 20).get(INIT_FROM_KEY)
    except (UnreadableJSON, AttributeError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("source"), str) else None
