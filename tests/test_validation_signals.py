"""Stop signals never wait for long work: a SIGTERM during a long evaluation ends the run at
the next evaluation batch, and a SIGINT/SIGTERM while a BPE vocabulary is learned or the token
cache is written ends the process at once and leaves no tokenizer and no half cache entry.
Real `gpt2tui train` processes, real signals, real cache folders."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from gpt2core.data import TOKENIZER_THREAD
from reliability_helpers import finished, wait_until


def _corpus(path: Path, words: int) -> Path:
    rng = random.Random(0)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(30_000)]
    path.write_text(" ".join(rng.choice(vocab) for _ in range(words)) + "\n")
    return path


def _start(tmp_path: Path, *flags: str) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / "stderr.log"
    args = [
        sys.executable, "-m", "gpt2tui", "train", "--plain", "--no-tensorboard", "--preset", "micro", "--device", "cpu",
        "--threads", "1", "--cache-dir", str(tmp_path / "cache"), "--runs-dir", str(tmp_path / "runs"),
        "--checkpoints-dir", str(tmp_path / "checkpoints"), "--run-name", "sig", "--sample-tokens", "0", *flags,
    ]  # fmt: skip
    with open(log, "w") as err:
        process = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err, text=True)
    return process, log


def _signal_when(process: subprocess.Popen, log: Path, ready, what: str, sig: signal.Signals, *, wait_s: float, settle_s: float = 0.0, poll: float = 0.01) -> str:
    """Send ``sig`` ``settle_s`` after ``ready()`` holds, and return the stderr once the process has
    ended with the exit code of an interrupted run (130). It is killed if it outlives ``wait_s``."""
    try:
        wait_until(ready, 180, what, poll=poll, alive=lambda: process.poll() is None)
        time.sleep(settle_s)
        process.send_signal(sig)
        code = process.wait(timeout=wait_s)
    finally:
        process.kill()
    err = log.read_text()
    assert code == 130, err
    return err


def _thread_names(pid: int) -> set[str]:
    names = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            names.add((task / "comm").read_text().strip())
        except OSError:
            pass
    return names


def _leftovers(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if ".tmp" in p.name)


def _long_words(path: Path, chars: int) -> Path:
    """Words of 50-200 random letters: every pair keeps merging, so learning a vocabulary as big
    as allowed goes on for minutes (2 MB took 44 s on the 2-core development machine)."""
    rng = random.Random(0)
    words, n = [], 0
    while n < chars:
        word = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(50, 200)))
        words.append(word)
        n += len(word) + 1
    path.write_text(" ".join(words) + "\n")
    return path


def test_a_signal_while_a_bpe_vocabulary_is_learned_ends_the_process_and_caches_nothing(tmp_path):
    data = _long_words(tmp_path / "long.txt", 6_000_000)
    process, log = _start(tmp_path, "--data", str(data), "--tokenizer", "bpe", "--vocab-size", str(1 << 20), "--max-steps", "1")
    # settle_s: past the first phase (counting words, where the tokenizers library pulls text from
    # Python and so sees signals itself) into the merges, which never look up.
    # wait_s is not a speed check: the merges left alone run for a minute and more (a 4 MB corpus
    # held a SIGTERM back 31 s before), so a process that waits for them cannot end inside this
    # wait; one that heard the signal ends as soon as Python runs the handler (1 s here).
    err = _signal_when(process, log, lambda: TOKENIZER_THREAD in _thread_names(process.pid), "the BPE learning thread", signal.SIGTERM, settle_s=3, wait_s=20)
    assert "interrupted before training started; nothing was saved" in err and "Traceback" not in err
    cache = tmp_path / "cache"
    assert not list(cache.rglob("tokenizer.json")), "a tokenizer was cached after the signal"
    assert not list(cache.rglob("meta.json"))
    assert _leftovers(cache) == []


def test_a_signal_while_the_token_cache_is_written_leaves_no_half_entry(tmp_path):
    data = _corpus(tmp_path / "big.txt", 1_000_000)
    process, log = _start(tmp_path, "--data", str(data), "--tokenizer", "bpe", "--vocab-size", "512", "--max-steps", "1")
    cache = tmp_path / "cache"
    # The learned tokenizer is cached first; the token files are written right after it.
    err = _signal_when(process, log, lambda: any((cache / "tokenizers").glob("*/tokenizer.json")), "the cached tokenizer", signal.SIGINT, wait_s=120, poll=0.002)
    assert "Traceback" not in err
    assert not list((cache / "tokens").glob("*/meta.json")) if (cache / "tokens").exists() else True
    assert _leftovers(cache) == [], "a half-written token cache entry was left behind"
    # The tokenizer that was complete stays usable: a second run reuses it and trains.
    again = finished(
        ["train", "--plain", "--no-tensorboard", "--preset", "micro", "--device", "cpu", "--threads", "1",
         "--data", str(data), "--tokenizer", "bpe", "--vocab-size", "512", "--max-steps", "1", "--eval-iters", "1", "--sample-tokens", "0",
         "--cache-dir", str(cache), "--runs-dir", str(tmp_path / "runs2"), "--checkpoints-dir", str(tmp_path / "ck2")],
        tmp_path,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert len(list((cache / "tokens").glob("*/meta.json"))) == 1


def test_sigterm_during_a_long_evaluation_stops_at_the_next_batch_and_saves(tmp_path):
    data = _corpus(tmp_path / "text.txt", 400_000)  # ~2.4 MB of characters: a long validation split
    (tmp_path / "eval.toml").write_text("val_fraction = 0.2\n")
    # The step-0 evaluation covers ~480k windows of 256 tokens: far longer than any stop may wait.
    process, log = _start(
        tmp_path, "--config", str(tmp_path / "eval.toml"), "--data", str(data), "--tokenizer", "char", "--context-length", "256",
        "--batch-size", "4", "--eval-iters", "1000000", "--max-steps", "50",
    )  # fmt: skip
    # settle_s: well inside the first evaluation.
    err = _signal_when(process, log, lambda: "run sig:" in log.read_text(), "the run to start", signal.SIGTERM, settle_s=0.5, wait_s=120)
    assert "eval at step 0" not in err, "the evaluation ran to its end before the stop was heard"
    status = json.loads((tmp_path / "runs" / "sig" / "status.json").read_text())
    assert status.get("state") in ("stopped", "finished"), status
    assert any(p.name.startswith("step-") for p in (tmp_path / "checkpoints" / "sig").iterdir()), os.listdir(tmp_path / "checkpoints" / "sig")
