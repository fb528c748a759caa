"""TensorBoard logging as one more event listener: the trainer never calls TensorBoard itself.

Scalars: train/loss, train/lr, train/grad_norm, perf/tokens_per_sec, perf/mfu, val/loss,
val/perplexity; text: samples (``sample``) and the run config (``config``); hparams at the end,
with the best val loss as the metric. Files go into the run directory, so
``tensorboard --logdir runs`` shows every run side by side.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from gpt2core.events import EvalEvent, Event, FailedEvent, FinishedEvent, RunStarted, SampleEvent, StepEvent


def _hparams(config: dict) -> dict:
    """Flat scalar hyperparameters from a RunConfig dict (TensorBoard takes no nesting or None)."""
    flat = {"preset": str(config.get("preset"))}
    for section in ("model", "data", "train"):
        for key, value in (config.get(section) or {}).items():
            if isinstance(value, bool) or isinstance(value, (int, float, str)):
                flat[f"{section}.{key}"] = value
            elif value is None:
                flat[f"{section}.{key}"] = "none"
            else:
                flat[f"{section}.{key}"] = json.dumps(value)
    return flat


class TensorBoardLogger:
    """``on_event`` writes what TensorBoard should show; ``close`` flushes and releases the file."""

    def __init__(self, log_dir: str | Path, *, purge_step: int | None = None):
        """``purge_step``: the first step this process logs when it resumes a run. Readers
        (TensorBoard, EventAccumulator) then drop what earlier files hold from that step on,
        the steps a resume from an earlier checkpoint (or after a crash) does again."""
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when logging

        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir), flush_secs=10, purge_step=purge_step)
        self._config: dict = {}

    def on_event(self, event: Event) -> None:
        w = self.writer
        if isinstance(event, RunStarted):
            self._config = event.config
            w.add_text("config", "```\n" + json.dumps(event.config, indent=2) + "\n```", event.start_step)
        elif isinstance(event, StepEvent):
            if math.isfinite(event.loss):
                w.add_scalar("train/loss", event.loss, event.step)
            w.add_scalar("train/lr", event.lr, event.step)
            if math.isfinite(event.grad_norm):
                w.add_scalar("train/grad_norm", event.grad_norm, event.step)
            w.add_scalar("perf/tokens_per_sec", event.tokens_per_sec, event.step)
            if event.mfu is not None:
                w.add_scalar("perf/mfu", event.mfu, event.step)
        elif isinstance(event, EvalEvent):
            w.add_scalar("val/loss", event.val_loss, event.step)
            w.add_scalar("val/perplexity", event.perplexity, event.step)
            w.flush()
        elif isinstance(event, SampleEvent):
            # Markdown: the prompt in bold, then the continuation as pre-formatted text.
            w.add_text("sample", f"**{event.prompt}**\n\n```\n{event.prompt}{event.text}\n```", event.step)
        elif isinstance(event, (FinishedEvent, FailedEvent)):
            best = event.best_val_loss if isinstance(event, FinishedEvent) else None
            metrics = {"hparam/best_val_loss": best if best is not None and math.isfinite(best) else float("nan")}
            w.add_hparams(_hparams(self._config), metrics, run_name=".", global_step=event.step)
            w.flush()

    def close(self) -> None:
        self.writer.close()
