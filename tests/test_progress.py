"""The terminal views of `gpt2tui train` (gpt2tui/commands/progress.py): text from the model or the user
is shown as typed, never read as Rich markup (a sample with "[/b]" once failed the whole run)."""

from __future__ import annotations

import io

from gpt2core.events import CheckpointEvent, EvalEvent, RunStarted, SampleEvent, StepEvent, WarningEvent
from gpt2tui.commands.progress import LiveView, PlainLog

TRICKY = "[/b] closing tag, [red]colour[/red] and [link=x]"


def events(run_name: str) -> list:
    return [
        RunStarted(run_name=run_name, config={}, device="cpu", num_params=1000, max_steps=10, max_training_hours=None),
        StepEvent(step=1, epoch=0.1, loss=4.0, lr=1e-3, grad_norm=1.0, tokens_per_sec=100.0, mfu=None, elapsed_s=1.0, eta_s=9.0),
        EvalEvent(step=1, val_loss=4.1, perplexity=60.3, best_val_loss=4.1, is_best=True),
        SampleEvent(step=1, prompt="The ", text=TRICKY),
        WarningEvent(step=1, message=f"warning {TRICKY}"),
        CheckpointEvent(step=1, path=f"checkpoints/{run_name}/step-00000001", is_best=True, reason="eval"),
    ]


def test_live_view_shows_markup_like_text_as_typed():
    out = io.StringIO()
    view = LiveView(out)
    for event in events("[red]run"):
        view.on_event(event)
    view.close()
    text = out.getvalue()
    assert view.enabled  # no rendering error switched it off
    assert "[red]run" in text and "warning [/b] closing tag" in text and "[/b] closing tag" in text.split("sample", 1)[1]


def test_plain_log_shows_markup_like_text_as_typed():
    out = io.StringIO()
    log = PlainLog(out)
    for event in events("[red]run"):
        log.on_event(event)
    text = out.getvalue()
    assert "[red]run" in text and f"warning {TRICKY}" in text
