"""`gpt2tui generate` and `gpt2tui export` on a real checkpoint saved in the test."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from click.testing import CliRunner

from gpt2core.checkpoint import CheckpointStore
from gpt2core.config import SampleConfig, preset
from gpt2core.generation import stream_text
from gpt2core.model import GPT
from gpt2tui.cli import cli
from gpt2tui.commands.generate import ctrl_c_sets


@pytest.fixture
def run_dir(tmp_path, monkeypatch, char_tokenizer):
    """checkpoints/demo (best = step 3) in a fresh working directory; returns the model too."""
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = GPT(preset("micro").replace(vocab_size=char_tokenizer.vocab_size)).eval()
    with torch.no_grad():  # sharper than a fresh init, so different settings give different text
        for param in model.parameters():
            param.mul_(5)
    CheckpointStore(tmp_path / "checkpoints" / "demo").save(3, model, char_tokenizer, is_best=True)
    return tmp_path / "checkpoints" / "demo", model


def expected_text(model, tokenizer, prompt, **settings):
    return stream_text(model, tokenizer, prompt, SampleConfig(**settings)).read()


def invoke(*args, input=None):
    return CliRunner().invoke(cli, ["generate", *args], input=input)


def test_streams_the_continuation_to_stdout_and_info_to_stderr(run_dir, char_tokenizer):
    path, model = run_dir
    result = invoke("--checkpoint", str(path), "--prompt", "To be", "-n", "25", "--seed", "4", "--temperature", "1.1", "--top-k", "7")
    assert result.exit_code == 0, result.output
    want = expected_text(model, char_tokenizer, "To be", max_new_tokens=25, seed=4, temperature=1.1, top_k=7)
    assert result.stdout == want + "\n"
    assert "loaded checkpoint" in result.stderr and "tokens/s" in result.stderr


@pytest.mark.parametrize("flag", ["--checkpoint", "--model_path", "--model-path", "-c"])
def test_every_spelling_of_the_checkpoint_and_run_names(run_dir, char_tokenizer, flag):
    path, model = run_dir
    want = expected_text(model, char_tokenizer, "The", max_new_tokens=10, temperature=0) + "\n"
    for where in (str(path), "demo", "latest"):
        result = invoke(flag, where, "--prompt", "The", "--max_new_tokens", "10", "--temperature", "0")
        assert result.exit_code == 0, result.output
        assert result.stdout == want


def test_sampling_flags_reach_the_sampler(run_dir, char_tokenizer):
    path, model = run_dir
    settings = dict(max_new_tokens=30, temperature=0.9, top_k=0, top_p=0.8, min_p=0.05, repetition_penalty=1.5, repetition_window=8, seed=9)
    args = ["-c", str(path), "-p", "The", "--max-new-tokens", "30", "--temperature", "0.9", "--top-k", "0", "--top-p", "0.8"]
    args += ["--min-p", "0.05", "--repetition-penalty", "1.5", "--repetition-window", "8", "--seed", "9", "--no-stream"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert result.stdout == expected_text(model, char_tokenizer, "The", **settings) + "\n"
    assert result.stdout != expected_text(model, char_tokenizer, "The", **{**settings, "repetition_penalty": 1.0}) + "\n"


def test_stop_strings_with_escapes(run_dir, char_tokenizer):
    path, model = run_dir
    full = expected_text(model, char_tokenizer, "To be", max_new_tokens=40, temperature=0)
    stop = full[6:9]
    result = invoke("-c", str(path), "-p", "To be", "-n", "40", "-t", "0", "--stop", stop, "--stop", "\\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == expected_text(model, char_tokenizer, "To be", max_new_tokens=40, temperature=0, stop=(stop, "\n")) + "\n"
    assert "[stop]" in result.stderr


def test_prompt_from_stdin_and_from_a_file(run_dir, char_tokenizer, tmp_path):
    path, model = run_dir
    want = expected_text(model, char_tokenizer, "To be,\nor", max_new_tokens=12, temperature=0) + "\n"
    result = invoke("-c", str(path), "--prompt", "-", "-n", "12", "-t", "0", input="To be,\nor".encode())
    assert result.exit_code == 0, result.output
    assert result.stdout == want
    (tmp_path / "prompt.txt").write_text("To be,\nor", encoding="utf-8")
    result = invoke("-c", str(path), "--prompt-file", str(tmp_path / "prompt.txt"), "-n", "12", "-t", "0")
    assert result.stdout == want


def test_long_prompts_are_truncated_and_say_so(run_dir, sample_text):
    path, _ = run_dir
    result = invoke("-c", str(path), "-p", sample_text[:100], "-n", "5")
    assert result.exit_code == 0, result.output
    assert "the prompt has 100 tokens; only its last 32 fit the context of 32" in result.stderr


def one_line_error(result):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: ")
    return lines[-1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--temperature", "-1"], "temperature must be 0 (greedy) or positive"),
        (["--top-p", "0"], "top_p must be in (0, 1]"),
        (["--top-p", "1.5"], "top_p must be in (0, 1]"),
        (["--top-k", "-1"], "top_k must be 0 (off) or positive"),
        (["--max-new-tokens", "0"], "max_new_tokens must be at least 1"),
        (["--min-p", "1"], "min_p must be in [0, 1)"),
        (["--device", "tpu9"], "unknown device"),
    ],
)
def test_bad_settings_are_one_line_errors(run_dir, args, message):
    path, _ = run_dir
    assert message in one_line_error(invoke("-c", str(path), "-p", "x", *args))


def test_missing_corrupt_and_wrong_inputs_are_one_line_errors(run_dir, tmp_path):
    path, _ = run_dir
    assert "no checkpoint at" in one_line_error(invoke("-c", str(tmp_path / "nothing-here"), "-p", "x"))
    weights = path / "best" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert "corrupt" in one_line_error(invoke("-c", str(path / "best"), "-p", "x"))
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    assert "not valid UTF-8" in one_line_error(invoke("-c", str(path), "--prompt-file", str(tmp_path / "latin1.txt")))
    assert "not valid UTF-8" in one_line_error(invoke("-c", str(path), "--prompt", "-", input=b"\xff\xfe"))


def test_interactive_keeps_and_changes_settings(run_dir, char_tokenizer):
    path, model = run_dir
    session = "/temperature 0\n/top_k 5\nTo be\n/settings\n/bogus 3\n/temperature -1\n/top-k x\n/n 7\n/stop \\n\nTo be\n"
    result = invoke("-c", str(path), "-i", "-n", "15", "--seed", "1", input=session)
    assert result.exit_code == 0, result.output
    first = expected_text(model, char_tokenizer, "To be", max_new_tokens=15, temperature=0, top_k=5, seed=1)
    second = expected_text(model, char_tokenizer, "To be", max_new_tokens=7, temperature=0, top_k=5, seed=1, stop=("\n",))
    assert result.stdout == first + "\n" + second + "\n"
    err = result.stderr
    assert "temperature = 0.0" in err and "top_k = 5" in err
    assert "top_k               5" in err  # /settings
    assert "unknown command /bogus" in err
    assert "error: temperature must be 0 (greedy) or positive" in err
    assert "error: /top_k needs a whole number" in err


def test_interactive_quits_on_command(run_dir):
    path, _ = run_dir
    result = invoke("-c", str(path), "-i", input="/help\n/quit\nnever generated\n")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "/temperature 0.8" in result.stderr  # /help shows each setting with its default


def test_ctrl_c_sets_the_stop_event_instead_of_raising():
    event = threading.Event()
    before = signal.getsignal(signal.SIGINT)
    with ctrl_c_sets(event):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
    assert event.is_set()
    assert signal.getsignal(signal.SIGINT) is before


def test_export_writes_what_transformers_loads(run_dir, tmp_path, char_tokenizer):
    from transformers import AutoTokenizer, GPT2LMHeadModel

    path, model = run_dir
    out = tmp_path / "exported"
    result = CliRunner().invoke(cli, ["export", "--checkpoint", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    hf = GPT2LMHeadModel.from_pretrained(out).eval()
    idx = torch.tensor([char_tokenizer.encode("To be or not")])
    with torch.no_grad():
        assert torch.allclose(hf(idx).logits, model(idx)[0], atol=1e-5)
    assert AutoTokenizer.from_pretrained(out).encode("To be") == char_tokenizer.encode("To be")
    # not over a directory that holds something, unless --force
    (out / "notes.txt").write_text("mine")
    again = CliRunner().invoke(cli, ["export", "-c", str(path), "--out", str(out)])
    assert "not empty" in one_line_error(again)
    forced = CliRunner().invoke(cli, ["export", "-c", str(path), "--out", str(out), "--force"])
    assert forced.exit_code == 0, forced.output
    assert (out / "notes.txt").read_text() == "mine"


def test_real_process_streams_and_ctrl_c_stops_only_the_generation(run_dir):
    """`python -m gpt2tui generate --interactive` in a subprocess: a long generation is
    interrupted with SIGINT, the REPL survives, generates again, and quits on /quit."""
    path, _ = run_dir
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpt2tui", "generate", "-c", str(path), "-i", "-n", "100000", "--ignore-eos"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        proc.stdin.write(b"To be\n")
        proc.stdin.flush()
        assert proc.stdout.read(20)  # it is streaming
        proc.send_signal(signal.SIGINT)
        proc.stdin.write(b"/n 5\nTo be\n/quit\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = err.decode()
    assert proc.returncode == 0, err
    assert "[cancelled]" in err
    assert "[length] 5 tokens" in err
    assert "Traceback" not in err
