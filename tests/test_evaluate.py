"""Evaluation: the sliding window scores every token once; loss, perplexity and bits per byte
agree with a direct computation; checkpoints are evaluated on their own test split."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from train_helpers import dirs, one_thread, tiny_config, write_corpus  # noqa: F401  (one_thread is a fixture)

from gpt2core.errors import DataError
from gpt2core.evaluate import evaluate_checkpoint, evaluate_tokens, sliding_windows
from gpt2core.train import train

pytestmark = pytest.mark.usefixtures("one_thread")


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 400), context=st.integers(1, 64), stride=st.integers(1, 80))
def test_sliding_window_scores_every_target_once(n, context, stride):
    starts, first, length = sliding_windows(n, context, stride)
    scored = []
    for s, f in zip(starts, first):
        assert 0 <= s and s + length + 1 <= n  # inside the text
        scored.extend(range(s + 1 + f, s + 1 + length))  # targets this window scores
    assert scored == list(range(1, n))
    # every scored target has at least (length - stride) tokens of context, except at the start
    for s, f in zip(starts[1:], first[1:]):
        assert f >= length - max(1, min(stride, length)) or s == n - 1 - length


def test_disjoint_windows_match_a_direct_computation(micro_model, char_tokenizer, sample_text):
    tokens = np.asarray(char_tokenizer.encode(sample_text[:2000]), dtype=np.int64)
    T = micro_model.config.context_length
    result = evaluate_tokens(micro_model, char_tokenizer, tokens, stride=T)
    with torch.no_grad():
        t = torch.from_numpy(tokens)
        total, count = 0.0, 0
        for s in range(0, len(tokens) - 1, T):
            x, y = t[s : s + T], t[s + 1 : s + T + 1]
            x = x[: len(y)]
            logits, _ = micro_model(x[None])
            total += F.cross_entropy(logits[0], y, reduction="sum").item()
            count += len(y)
    assert result.tokens == count == len(tokens) - 1
    # the last window is aligned to the end, so it overlaps the previous one but scores only new targets
    assert result.loss == pytest.approx(total / count, rel=0.02)
    assert result.perplexity == pytest.approx(math.exp(result.loss))
    assert result.bytes == count  # ASCII text: one byte per character token
    assert result.bits_per_byte == pytest.approx(result.loss / math.log(2))
    shorter = evaluate_tokens(micro_model, char_tokenizer, tokens, stride=8)
    assert shorter.tokens == count and shorter.loss != result.loss


def test_checkpoint_is_evaluated_on_its_test_split_and_on_files(tmp_path):
    result = train(tiny_config(tmp_path, max_steps=30, learning_rate=1e-2), run_name="ev", tensorboard=False, **dirs(tmp_path))
    cache = str(tmp_path / "cache")
    on_test, about = evaluate_checkpoint(result.checkpoint_dir, device="cpu", data_from_checkpoint=True, cache_dir=cache)
    assert about["split"] == "test" and about["checkpoint"].endswith("best")
    assert on_test.loss < math.log(40)  # better than uniform over the character vocabulary
    on_val, _ = evaluate_checkpoint(result.checkpoint_dir, split="val", device="cpu", stride=32, data_from_checkpoint=True, cache_dir=cache)
    assert on_val.loss == pytest.approx(result.best_val_loss, rel=0.15)
    text = write_corpus(tmp_path / "other", "To be, or not to be, that is the question.\n" * 5, "q.txt")
    on_file, about = evaluate_checkpoint(result.checkpoint_dir, data=[str(text)], device="cpu")
    assert about["split"] == "all" and on_file.tokens == len(text.read_text()) - 1
    with pytest.raises(DataError, match="no such file"):
        evaluate_checkpoint(result.checkpoint_dir, data=[str(tmp_path / "nope.txt")], device="cpu")


def test_cli_evaluate_json(tmp_path):
    from gpt2tui.cli import cli

    result = train(tiny_config(tmp_path, max_steps=4), run_name="cli", tensorboard=False, **dirs(tmp_path))
    out = CliRunner().invoke(
        cli, ["evaluate", "--model_path", str(result.checkpoint_dir), "--json", "--stride", "16", "--device", "cpu", "--data-from-checkpoint", "--cache-dir", str(tmp_path / "cache")]
    )
    assert out.exit_code == 0, out.output
    record = json.loads(out.stdout)
    assert {"loss", "perplexity", "bits_per_byte", "tokens", "bytes", "checkpoint", "split"} <= set(record)
    assert record["stride"] == 16 and record["perplexity"] == pytest.approx(math.exp(record["loss"]))
    missing = CliRunner().invoke(cli, ["evaluate", "--checkpoint", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "no checkpoint at" in missing.output and "Traceback" not in missing.output
