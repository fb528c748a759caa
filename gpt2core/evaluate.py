"""Loss, perplexity and bits per byte of a model on token data.

Two ways to cover a text:

- fixed windows (``window_loss``): the same evenly spaced windows at every evaluation of a
  training run, every position scored; cheap and comparable from one evaluation to the next;
- a sliding window (``sliding_window_nll``) for a whole split longer than the context: windows
  start every ``stride`` tokens and each scores only the targets the previous ones did not, so
  every token is predicted exactly once, with at least ``context - stride`` tokens of history
  (stride = context: disjoint windows, fastest; smaller strides: more history, closer to the
  model's real perplexity, slower).

Bits per byte (cross-entropy in bits divided by the UTF-8 bytes the scored tokens stand for)
compares models with different tokenizers; perplexity does not.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from gpt2core.errors import DataError
from gpt2core.model import GPT
from gpt2core.tokenizer import Tokenizer

_MAX_LOGIT_ELEMENTS = 1 << 26  # logits per evaluation batch (256 MB in fp32)


class EvaluationStopped(Exception):
    """A stop was asked for between two evaluation batches: the evaluation has no result."""


def eval_batch_size(context_length: int, vocab_size: int, floor: int = 1, ceiling: int = 256) -> int:
    """Windows per evaluation batch: as many as keep the logits near 256 MB. Large batches
    are what make evaluation cheap on CPUs (fewer, bigger matrix products)."""
    return max(floor, min(ceiling, _MAX_LOGIT_ELEMENTS // (context_length * vocab_size)))


@torch.inference_mode()
def _nll(
    model: GPT,
    tokens: np.ndarray,
    starts: np.ndarray,
    length: int,
    first_scored: np.ndarray,
    batch_size: int,
    autocast=None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[float, int]:
    """Summed negative log-likelihood (nats) and the number of targets scored, over windows
    tokens[s : s + length] predicting tokens[s + 1 : s + length + 1]; window i scores its
    targets from position first_scored[i] on. ``should_stop`` is asked before every batch (a
    long evaluation must not hold a stop signal back); True raises EvaluationStopped."""
    device = model.device
    offsets = np.arange(length + 1, dtype=np.int64)  # (T+1,)
    positions = torch.arange(length, device=device)  # (T,)
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(starts), batch_size):
            if should_stop is not None and should_stop():
                raise EvaluationStopped(f"stopped after {i} of {len(starts)} windows")
            batch_starts = starts[i : i + batch_size]
            windows = torch.from_numpy(np.asarray(tokens[batch_starts[:, None] + offsets], dtype=np.int64)).to(device)  # (B, T+1)
            x, y = windows[:, :-1], windows[:, 1:].clone()  # (B, T) each
            first = torch.from_numpy(first_scored[i : i + batch_size]).to(device)  # (B,)
            y[positions[None, :] < first[:, None]] = -1  # already scored by an earlier window
            if autocast is not None:
                with autocast:
                    logits, _ = model(x)  # (B, T, V)
            else:
                logits, _ = model(x)
            nll = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=-1, reduction="sum")
            total += nll.double()
            count += int((y >= 0).sum())
    finally:
        model.train(was_training)
    return float(total), count


def window_loss(
    model: GPT, tokens: np.ndarray, starts: np.ndarray, *, batch_size: int, autocast=None, should_stop: Callable[[], bool] | None = None
) -> float:
    """Mean loss over fixed windows (every position scored); EvaluationStopped if
    ``should_stop`` says so between batches."""
    T = model.config.context_length
    nll, count = _nll(model, tokens, starts, T, np.zeros(len(starts), dtype=np.int64), batch_size, autocast, should_stop)
    return nll / max(1, count)


def sliding_windows(num_tokens: int, context_length: int, stride: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(starts, first_scored, length) covering every target of a ``num_tokens`` text once."""
    length = min(context_length, num_tokens - 1)
    if length < 1:
        raise DataError(f"cannot evaluate {num_tokens} token(s): at least 2 are needed")
    stride = max(1, min(stride, length))
    last_start = num_tokens - 1 - length
    starts = list(range(0, last_start + 1, stride))
    if starts[-1] != last_start:
        starts.append(last_start)
    first, covered = [], 0  # covered: targets (as window positions + start) already scored
    for s in starts:
        first.append(max(0, covered - s))
        covered = s + length
    return np.asarray(starts, dtype=np.int64), np.asarray(first, dtype=np.int64), length


@dataclass(frozen=True)
class EvalResult:
    loss: float  # mean cross-entropy in nats per token
    perplexity: float
    bits_per_byte: float
    tokens: int  # targets scored
    bytes: int  # UTF-8 bytes those targets stand for
    stride: int
    context_length: int

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_tokens(
    model: GPT,
    tokenizer: Tokenizer,
    tokens: np.ndarray,
    *,
    stride: int | None = None,
    batch_size: int | None = None,
    autocast=None,
    should_stop: Callable[[], bool] | None = None,
) -> EvalResult:
    """Loss, perplexity and bits per byte of ``model`` on a token array, with a sliding window."""
    T = model.config.context_length
    starts, first, length = sliding_windows(len(tokens), T, stride or T)
    batch = batch_size or eval_batch_size(length, model.config.vocab_size)
    nll, count = _nll(model, tokens, starts, length, first, batch, autocast, should_stop)
    byte_lengths = np.fromiter((len(tokenizer.token_bytes(i)) for i in range(tokenizer.vocab_size)), dtype=np.int64)
    n_bytes = int(byte_lengths[np.asarray(tokens[1:], dtype=np.int64)].sum())
    loss = nll / max(1, count)
    return EvalResult(
        loss=loss,
        perplexity=math.exp(min(loss, 700.0)),
        bits_per_byte=nll / math.log(2) / max(1, n_bytes),
        tokens=count,
        bytes=n_bytes,
        stride=int(max(1, min(stride or T, length))),
        context_length=T,
    )


def _recorded_data_description(cfg) -> str:
    """What a checkpoint's DataConfig would read, in words: its files, its dataset, or the built-in corpus."""
    if cfg.data:
        shown = ", ".join(cfg.data[:3]) + (f" and {len(cfg.data) - 3} more" if len(cfg.data) > 3 else "")
        return f"--data {shown}"
    if cfg.dataset_name:
        return f"the dataset {cfg.dataset_name}" + (f" ({cfg.dataset_config})" if cfg.dataset_config else "")
    return "the built-in corpus"


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    data: Sequence[str] = (),
    split: str = "test",
    stride: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    max_tokens: int | None = None,
    checkpoints_root: str | Path = "checkpoints",
    data_from_checkpoint: bool = False,
    cache_dir: str | None = None,
    notify: Callable[[str], None] | None = None,
) -> tuple[EvalResult, dict]:
    """Evaluate a model on ``data`` files (all their text) or, without them, on ``split`` of the
    corpus its run trained on (recorded in a gpt2tui checkpoint). ``checkpoint`` is anything
    ``gpt2tui generate --checkpoint`` takes: a checkpoint, a run, ``latest``, or a Hugging Face
    GPT-2 (which needs ``data``). Returns the result and a description of what was evaluated.

    A checkpoint is untrusted input and must never choose what we read or write outside it:
    the data paths it records are read only with ``data_from_checkpoint`` (and named through
    ``notify`` before they are read), and its recorded cache folder is never used: tokens are
    cached under ``cache_dir`` (None: the user's own default cache)."""
    from gpt2core.checkpoint import load_checkpoint
    from gpt2core.config import RunConfig, TrainConfig
    from gpt2core.data import SPLITS, expand_data_paths, prepare_data, read_text_file
    from gpt2core.errors import CheckpointError, ConfigError
    from gpt2core.hf import is_hf_directory, looks_like_hub_name
    from gpt2core.loading import load_model_and_tokenizer, resolve_device
    from gpt2core.precision import choose_precision

    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    target = resolve_device(device)
    meta: dict = {}
    if is_hf_directory(checkpoint) or (not Path(checkpoint).exists() and looks_like_hub_name(str(checkpoint))):
        model, tokenizer, _ = load_model_and_tokenizer(checkpoint, device=target)
        if tokenizer is None:
            raise CheckpointError(f"{checkpoint} has no tokenizer, so text cannot be turned into its tokens")
        about = {"checkpoint": str(checkpoint), "step": None}
    else:
        loaded = load_checkpoint(checkpoint, device=target, prefer="best", root=checkpoints_root)
        model, tokenizer, meta = loaded.model, loaded.tokenizer, loaded.info.meta
        about = {"checkpoint": str(loaded.info.path), "step": loaded.info.step}
        if loaded.note:  # best/ failed verification and the latest step was loaded: the user must hear it
            about["note"] = loaded.note
            if notify is not None:
                notify(loaded.note)
    if data:
        files = expand_data_paths(data)
        text = "".join(read_text_file(f) for f in files)
        tokens = np.asarray(tokenizer.encode(text), dtype=np.int64)
        about.update(data=f"{len(files)} file(s): {', '.join(str(f) for f in files[:3])}", split="all")
    else:
        run_config = meta.get("run_config")
        if not isinstance(run_config, dict):
            raise DataError(f"{about['checkpoint']} does not record the data it was trained on; pass --data PATH")
        recorded = RunConfig.from_dict(run_config).data.replace(cache_dir=cache_dir)  # never the checkpoint's cache folder
        where = _recorded_data_description(recorded)
        if recorded.source != "builtin" and not data_from_checkpoint:
            raise DataError(
                f"{about['checkpoint']} was trained on {where}; evaluate reads data a checkpoint names only when asked: "
                "pass --data PATH, or --data-from-checkpoint to read what it records"
            )
        if notify is not None:
            notify(f"evaluating on the data the checkpoint records: {where}")
        prepared = prepare_data(recorded, tokenizer=tokenizer)
        tokens = prepared.splits[split]
        about.update(data=prepared.description, split=split)
    if max_tokens is not None:
        tokens = tokens[:max_tokens]
    if len(tokens) < 2:
        raise DataError(f"nothing to evaluate: the {about['split']} text has {len(tokens)} token(s)")
    precision = choose_precision(TrainConfig(), target)  # auto: bf16 on GPUs that have it, fp32 on CPUs without native bf16
    result = evaluate_tokens(model, tokenizer, tokens, stride=stride, batch_size=batch_size, autocast=precision.autocast())
    return result, about
