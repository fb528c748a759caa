"""Hostile and damaged files around the checkpoints: journals, run folders, names, data paths.

Real `gpt2tui` processes on crafted files; each test is named after the promise it proves
(docs/RELIABILITY.md):

- a journal torn by an interrupted append is repaired before the next append (backup kept,
  one-line notice) and Optuna's own ``load_study`` still reads the study afterwards;
- names and file contents are printed with their control characters escaped (no raw ESC);
- one bad status.json (100k-deep nesting, a FIFO, a symlink to /dev/zero, 5 MB of junk) never
  hides the other runs, and nothing hangs;
- a run name too long *in bytes* is refused by the name check; a full token cache says "no
  space left on device"; a FIFO or /dev/zero as --data says "not a regular file".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import optuna
import pytest
from reliability_helpers import finished, tmpfs

from gpt2core.study_store import repair_journal

optuna.logging.set_verbosity(optuna.logging.WARNING)


def gpt2tui(args: list[str], cwd: Path, *, timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess:
    env = {"OMP_NUM_THREADS": "1", "GPT2TUI_CACHE_DIR": str(cwd / "user-cache"), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    return finished(args, cwd, env=env, timeout=timeout, input=input)


def assert_refused(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle.lower() in errors[0].lower(), errors[0]
    return errors[0]


def run_flags(corpus_dir: Path, cwd: Path) -> list[str]:
    return [
        "--preset", "micro", "--tokenizer", "char", "--data", str(corpus_dir / "corpus.txt"),
        "--cache-dir", str(cwd / "cache"), "--device", "cpu", "--context-length", "32", "--batch-size", "4",
        "--max-steps", "4", "--eval-interval", "2", "--eval-iters", "1", "--log-interval", "1",
    ]  # fmt: skip


# -- item 2: a torn journal is repaired before anything appends --------------------------------------


def _journal_study(path: Path, trials: int) -> None:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    study = optuna.create_study(study_name="torn", storage=JournalStorage(JournalFileBackend(str(path))), direction="minimize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=trials)


def _load_with_optuna(path: Path):
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return optuna.load_study(study_name="torn", storage=JournalStorage(JournalFileBackend(str(path))))


def test_a_journal_with_a_torn_last_line_is_repaired_and_stays_readable_by_optuna(tmp_path, corpus_dir):
    journal = tmp_path / "optuna_results" / "torn.journal"
    journal.parent.mkdir()
    _journal_study(journal, trials=1)
    lines = journal.read_bytes().splitlines(keepends=True)
    torn = lines[-1][: len(lines[-1]) // 2]  # what a crash or a full disk half-way through an append leaves
    with open(journal, "ab") as f:
        f.write(torn)
    as_torn = journal.read_bytes()
    proc = gpt2tui(["optimize", "--study-name", "torn", "--n-trials", "2", *run_flags(corpus_dir, tmp_path)], tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    notices = [line for line in proc.stderr.splitlines() if "incomplete last line" in line]
    assert len(notices) == 1 and notices[0].startswith("warning: journal"), proc.stderr
    backups = list(journal.parent.glob("torn.journal.torn-*.bak"))
    assert len(backups) == 1 and backups[0].read_bytes() == as_torn  # the file as it was is kept
    study = _load_with_optuna(journal)  # Optuna's own reader, no gpt2tui code in between
    assert len(study.trials) == 2 and all(t.state.is_finished() for t in study.trials)
    assert journal.read_bytes().endswith(b"\n")


def test_a_journal_record_missing_only_its_newline_is_kept(tmp_path):
    journal = tmp_path / "torn.journal"
    _journal_study(journal, trials=2)
    whole = journal.read_bytes()
    journal.write_bytes(whole[:-1])  # the very last byte (the newline) never reached the disk
    notice = repair_journal(journal)
    assert notice is not None and "completed its last line" in notice
    assert journal.read_bytes() == whole
    assert len(_load_with_optuna(journal).trials) == 2
    assert repair_journal(journal) is None  # a sound journal is left alone


# -- item 7: control characters from names and files are shown, never obeyed ---------------------------


EVIL = "evil\x1b[2J\x1b]0;pwned\x07\x9b31m"


def test_run_names_and_messages_with_escape_sequences_are_printed_escaped(tmp_path):
    run = tmp_path / "runs" / EVIL
    run.mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"state": "failed", "message": "boom\x1b[2J", "step": 3, "started": 1.0}))
    listed = gpt2tui(["runs", "--runs-dir", str(tmp_path / "runs")], tmp_path)
    assert listed.returncode == 0, listed.stderr
    for stream in (listed.stdout, listed.stderr):
        assert "\x1b" not in stream and "\x07" not in stream and "\x9b" not in stream
    assert "evil\\x1b[2J\\x1b]0;pwned\\x07\\x9b31m" in listed.stdout
    as_json = gpt2tui(["runs", "--runs-dir", str(tmp_path / "runs"), "--json"], tmp_path)
    assert "\x1b" not in as_json.stdout and json.loads(as_json.stdout)["name"] == EVIL  # JSON escapes, and reads back exact
    error = gpt2tui(["generate", "-c", str(run), "-p", "x"], tmp_path)  # the path is quoted in the error line
    line = assert_refused(error)
    assert "\x1b" not in error.stderr and "\\x1b[2J" in line


def test_train_prints_data_from_disk_escaped(tmp_path, corpus_dir):
    # A data path and a sample prompt with terminal sequences: the progress lines (the first
    # line names the data, the sample line repeats the prompt) and the summary show them escaped.
    hostile = tmp_path / "corpus\x1b]0;pwned\x07.txt"
    shutil.copy(corpus_dir / "corpus.txt", hostile)
    flags = run_flags(corpus_dir, tmp_path)
    flags[flags.index("--data") + 1] = str(hostile)
    done = gpt2tui(["train", *flags, "--plain", "--no-tensorboard", "--run-name", "esc", "--sample-tokens", "3",
                    "--sample-prompt", "\x1b[2JTo be"], tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    for stream in (done.stdout, done.stderr):
        assert "\x1b" not in stream and "\x07" not in stream
    assert "\\x1b[2JTo be" in done.stderr  # the sample line, as a visible escape


# -- item 9: one bad status.json never hides the other runs, and nothing hangs ----------------------------


def test_hostile_status_files_never_hide_the_other_runs_or_hang(tmp_path):
    runs = tmp_path / "runs"
    good = runs / "good"
    good.mkdir(parents=True)
    (good / "status.json").write_text(json.dumps({"state": "finished", "step": 7, "max_steps": 7, "started": 2.0}))
    hostile = {
        "deep": lambda p: p.write_text("[" * 100_000 + "]" * 100_000),
        "deep-object": lambda p: p.write_text('{"a":' * 100_000 + "1" + "}" * 100_000),
        "fifo": lambda p: os.mkfifo(p),
        "zero": lambda p: os.symlink("/dev/zero", p),
        "huge": lambda p: p.write_bytes(b" " * (5 << 20) + b"{}"),
        "binary": lambda p: p.write_bytes(bytes(range(256)) * 10),
    }
    for name, make in hostile.items():
        (runs / name).mkdir()
        make(runs / name / "status.json")
        (runs / name / "metrics.jsonl").write_text("[" * 100_000 + "\n" + json.dumps({"type": "step", "step": 1}) + "\n")
    listed = gpt2tui(["runs", "--runs-dir", str(runs), "--json"], tmp_path, timeout=60)  # a hang fails here
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in map(json.loads, listed.stdout.splitlines())}
    assert set(rows) == {"good", *hostile}
    assert rows["good"]["state"] == "finished" and rows["good"]["step"] == 7
    assert all(rows[name]["state"] == "unknown" for name in hostile)
    table = gpt2tui(["runs", "--runs-dir", str(runs)], tmp_path, timeout=60)
    assert table.returncode == 0 and all(name in table.stdout for name in rows), table.stderr
    from gpt2core.rundir import MetricsTail

    assert MetricsTail(runs / "deep" / "metrics.jsonl").read_new() == [{"type": "step", "step": 1}]  # the deep line is skipped


@pytest.mark.parametrize("file", ["manifest.json", "config.json"])
def test_deeply_nested_checkpoint_json_is_a_one_line_refusal(tmp_path, file):
    from gpt2core.checkpoint import sha256_of

    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    files = {name: {"bytes": (folder / name).stat().st_size, "sha256": sha256_of(folder / name)} for name in ("model.safetensors", "config.json")}
    (folder / "manifest.json").write_text(json.dumps({"format_version": 1, "files": files}))  # agrees with the files: only the reader stands in the way
    if file == "manifest.json":
        (folder / file).write_text("[" * 100_000 + "]" * 100_000)
    assert_refused(gpt2tui(["generate", "-c", str(folder), "-p", "x"], tmp_path), file, "nested deeper")


# -- item 17: names in bytes, full caches and non-regular data files, in the user's words ----------------


def test_a_run_name_too_long_in_bytes_is_refused_by_the_name_check(tmp_path, corpus_dir):
    name = "日" * 100  # 100 characters, 300 bytes: more than a file name may hold
    proc = gpt2tui(["train", "--run-name", name, "--plain", "--no-tensorboard", *run_flags(corpus_dir, tmp_path)], tmp_path)
    assert_refused(proc, "at most 200 bytes")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "symlink to /dev/zero"])
def test_a_fifo_or_device_as_data_says_not_a_regular_file(tmp_path, corpus_dir, kind):
    target = tmp_path / "data.txt"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "symlink to /dev/zero":
        os.symlink("/dev/zero", target)
    data = "/dev/zero" if kind == "/dev/zero" else str(target)
    flags = run_flags(corpus_dir, tmp_path)
    flags[flags.index("--data") + 1] = data
    proc = gpt2tui(["train", "--plain", "--no-tensorboard", *flags], tmp_path, timeout=60)
    assert_refused(proc, "not a regular file", data)


def test_a_full_token_cache_says_no_space_left_on_device(tmp_path, corpus_dir):
    with tmpfs(tmp_path / "small", "64k") as small:
        corpus = tmp_path / "big.txt"
        corpus.write_text("".join(f"line {i} of a corpus too big for its cache\n" for i in range(20_000)))  # ~900 KB of tokens
        flags = run_flags(corpus_dir, tmp_path)
        flags[flags.index("--data") + 1] = str(corpus)
        flags[flags.index("--cache-dir") + 1] = str(small)
        proc = gpt2tui(["train", "--plain", "--no-tensorboard", *flags], tmp_path, timeout=120)
        line = assert_refused(proc, "no space left on device", str(small))
        assert "requested and" not in line
        assert not [p for p in small.rglob("*") if p.is_file() and p.suffix == ".bin"]  # no half-written token files left
    shutil.rmtree(small, ignore_errors=True)
