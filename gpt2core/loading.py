"""One way in for every model a user can name: ``load_model`` / ``load_model_and_tokenizer``.

Accepted, in the order they are tried:

1. a gpt2tui checkpoint directory, a run's checkpoint folder (``checkpoints/my-run``: its best
   checkpoint, else its latest), a run name under ``checkpoints/``, or ``latest``;
2. a Hugging Face GPT-2 directory (config.json + model.safetensors or pytorch_model.bin);
3. a Hugging Face hub name (``gpt2``, ``gpt2-medium``, ``owner/name``, ``hf:owner/name``),
   from the local cache or, when reachable, the hub.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gpt2core.choices import DEVICES_HELP
from gpt2core.checkpoint import DEFAULT_CHECKPOINTS_ROOT, load_checkpoint
from gpt2core.errors import CheckpointError, ConfigError
from gpt2core.hf import is_hf_directory, load_hf, looks_like_hub_name
from gpt2core.model import GPT
from gpt2core.tokenizer import Tokenizer


def resolve_device(name: str | torch.device = "cpu") -> torch.device:
    """A torch device from a user's word: ``cpu``, ``cuda``, ``cuda:1``, ``mps`` or ``auto``
    (the best one present). A device this machine lacks is a ConfigError, not a crash later."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {name!r}; use {DEVICES_HELP}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but this torch sees no CUDA GPU; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r} asked for, but there are only {torch.cuda.device_count()} GPU(s)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device {name!r} asked for, but MPS is not available here; use --device cpu")
    return device


def _describe(model: GPT, what: str, tokenizer: Tokenizer | None, note: str = "") -> str:
    c = model.config
    shape = f"{c.num_layers} layers, {c.d_model} wide, {c.num_heads} heads, context {c.context_length}, {model.num_params() / 1e6:.2f}M parameters"
    if tokenizer is not None:
        tok = f"{tokenizer.kind} tokenizer ({tokenizer.vocab_size} tokens)"
    else:
        tok = f"no tokenizer ({note})" if note else "no tokenizer"
    return f"{what}: {shape}; {tok}"


def load_model_and_tokenizer(path_or_name: str | Path, device: str | torch.device = "cpu") -> tuple[GPT, Tokenizer | None, str]:
    """(model in eval mode on ``device``, its tokenizer or None, a one-line description).

    ``model.tokenizer`` is set to the same tokenizer. Raises CheckpointError (or
    HubUnavailableError for a hub name offline) with a message that names what was tried.
    """
    target = resolve_device(device)
    source = str(path_or_name)
    path = Path(source)
    if _is_run_name(source) or (path.exists() and not is_hf_directory(path)):
        loaded = load_checkpoint(path)
        model, tokenizer = loaded.model, loaded.tokenizer
        step = loaded.info.step
        what = f"checkpoint {loaded.info.path}" + (f" (step {step})" if step is not None else "")
        what = f"{loaded.note}; {what}" if loaded.note else what  # best/ was damaged: say which one was loaded
        note = ""
    elif path.is_dir():
        imported = load_hf(path)
        model, tokenizer, note = imported.model, imported.tokenizer, imported.tokenizer_note
        what = f"Hugging Face GPT-2 {path}"
    elif looks_like_hub_name(source):
        imported = load_hf(source)
        model, tokenizer, note = imported.model, imported.tokenizer, imported.tokenizer_note
        what = f"Hugging Face GPT-2 {source!r}"
    else:
        raise CheckpointError(
            f"no checkpoint at {source}: not a directory, a run under {DEFAULT_CHECKPOINTS_ROOT}/, 'latest', "
            f"or a Hugging Face GPT-2 name"
        )
    model.tokenizer = tokenizer  # plain attribute: generate() and the chat screen read it
    model.to(target).eval()
    return model, tokenizer, _describe(model, what, tokenizer, note)


def _is_run_name(source: str) -> bool:
    """``latest``, or a bare name with a folder under checkpoints/."""
    if source == "latest":
        return True
    path = Path(source)
    return len(path.parts) == 1 and not path.exists() and (DEFAULT_CHECKPOINTS_ROOT / path).exists()


def load_model(path_or_name: str | Path) -> GPT:
    """Our GPT (eval mode, CPU) from a checkpoint, a run, a Hugging Face directory or hub name;
    ``model.tokenizer`` holds its tokenizer when one is known. Calling it on a LongTensor (B, T)
    returns logits (B, T, V)."""
    model, _, _ = load_model_and_tokenizer(path_or_name, device="cpu")
    return model

