"""REPL and flags validate what they read: a seed or a token count too big to use, and bytes
that are not UTF-8, get a one-line error where they are read; an error in one prompt never
ends the REPL. Real `gpt2tui generate` processes on a real checkpoint."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from gpt2core.config import preset
from gpt2core.model import GPT


def _generate(checkpoint, *args, stdin: bytes | None = None):
    return subprocess.run(
        [sys.executable, "-m", "gpt2tui", "generate", "-c", str(checkpoint), *args],
        input=stdin, capture_output=True, timeout=300, cwd=checkpoint.parents[1],
    )


def test_the_repl_survives_huge_numbers_and_bytes_that_are_not_utf8(micro_checkpoint):
    session = b"".join(
        [
            b"/seed 99999999999999999999999\n",
            b"/max_new_tokens 100000000000000\n",
            b"/temperature inf\n",
            b"caf\xe9 \xff\xfe\n",  # Latin-1 bytes, as a pasted file might hold
            b"/seed 7\n",
            b"To be\n",
            b"/settings\n",
        ]
    )
    result = _generate(micro_checkpoint, "-i", "-n", "5", "--temperature", "0", stdin=session)
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 0, err
    assert "Traceback" not in err
    assert "error: seed must be a non-negative integer (or none), got 99999999999999999999999" in err
    assert "error: max_new_tokens must be at least 1, got 100000000000000 (at most 1_000_000)" in err
    assert "error: temperature must be 0 (greedy) or positive, got inf" in err
    assert "error: that line is not valid UTF-8 text (byte 0xe9 at offset 3); it was skipped" in err
    # The prompt after the errors was answered, with the settings the errors left alone.
    assert "seed                7" in err and "max_new_tokens      5" in err
    assert len(result.stdout.decode("utf-8").strip("\n")) >= 1
    assert "[length] 5 tokens" in err or "[eos]" in err or "[stop]" in err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--seed", "99999999999999999999999"], "seed must be a non-negative integer (or none), got 99999999999999999999999 (at most 9_223_372_036_854_775_807)"),
        (["--max-new-tokens", "100000000000000"], "max_new_tokens must be at least 1, got 100000000000000 (at most 1_000_000)"),
    ],
    ids=["seed", "max-new-tokens"],
)
def test_generate_flags_too_big_to_use_are_refused_in_one_line(micro_checkpoint, flags, message):
    result = _generate(micro_checkpoint, "-p", "To be", *flags)
    err = result.stderr.decode()
    assert result.returncode == 1 and "Traceback" not in err, err
    assert err.strip() == f"Error: {message}"
    assert result.stdout == b""


def test_an_error_in_one_prompt_never_ends_the_repl(char_tokenizer, monkeypatch, capsys):
    """A prompt whose generation fails reports it and the REPL reads on. The failure is real:
    a model whose weights are all NaN, which the loader refuses on disk, so the REPL is run
    in-process with it (the subprocess tests above cover the process)."""
    import io

    from gpt2core.config import SampleConfig
    from gpt2tui.commands.generate import repl

    model = GPT(preset("micro").replace(vocab_size=char_tokenizer.vocab_size)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"To be\n/settings\nor not\n/quit\n")))
    repl(model, char_tokenizer, SampleConfig(max_new_tokens=3), quiet=True)
    err = capsys.readouterr().err
    assert err.count("the session goes on") == 2, err  # both prompts failed, neither ended the REPL
    assert "max_new_tokens      3" in err  # /settings between them ran
