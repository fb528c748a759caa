"""Small real training set-ups shared by the training, data, evaluation and CLI tests: the micro
preset, a character tokenizer and a few kilobytes of text, so a run takes about a second."""

from __future__ import annotations

from pathlib import Path

from conftest import SAMPLE_TEXT


def write_corpus(directory: Path, text: str = SAMPLE_TEXT, name: str = "corpus.txt") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def tiny_options(tmp_path: Path, **overrides) -> dict:
    """Flat options for build_run_config: a micro model on a local text file, quick to train."""
    corpus = write_corpus(tmp_path / "data")
    options = dict(
        preset="micro",
        data=(str(corpus),),
        tokenizer="char",
        cache_dir=str(tmp_path / "cache"),
        context_length=32,
        batch_size=4,
        learning_rate=3e-3,
        warmup_steps=2,
        max_steps=12,
        max_epochs=None,
        max_training_hours=None,
        eval_interval=1000,
        eval_iters=2,
        log_interval=1,
        sample_tokens=0,
        device="cpu",
    )
    options.update(overrides)
    return options


def tiny_config(tmp_path: Path, **overrides):
    from gpt2core.defaults import build_run_config

    return build_run_config(tiny_options(tmp_path, **overrides))


def dirs(tmp_path: Path) -> dict:
    return {"runs_dir": tmp_path / "runs", "checkpoints_dir": tmp_path / "checkpoints"}


import pytest  # noqa: E402


@pytest.fixture(autouse=False)
def one_thread():
    """One intra-op thread while the test runs: micro models gain nothing from two, and on a
    shared 2-core machine two OpenMP threads slow down many times whenever another process runs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
