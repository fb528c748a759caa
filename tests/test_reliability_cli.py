"""Bad input everywhere: every command, fed missing files, wrong types, out-of-range values,
conflicting flags, binary garbage or non-UTF-8 text, an empty corpus, answers with one
`Error: ...` line (click's usage lines before it for malformed flags, exit 2), a non-zero exit
and no traceback, and leaves the runs, checkpoints and studies already on disk byte for byte
(and mtime for mtime) as they were.

A few inputs that look wrong but are fine are here too: a prompt longer than the context is
cut to its end with a note; a run whose status.json is damaged still lists.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from reliability_helpers import snapshot
from train_helpers import dirs, one_thread, tiny_config, write_corpus  # noqa: F401  (one_thread is a fixture)

from gpt2core.train import train
from gpt2tui.cli import cli

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder with one finished run (runs/existing, checkpoints/existing), a study
    folder, and files of every kind of wrong."""
    root = tmp_path_factory.mktemp("project")
    train(tiny_config(root, max_steps=2), run_name="existing", tensorboard=False, **dirs(root))
    (root / "optuna_results").mkdir()
    (root / "optuna_results" / "study.journal").write_text('{"op_code": 0, "worker_id": "w", "study_name": "s", "directions": [1]}\n')
    write_corpus(root, name="corpus.txt")
    (root / "garbage.bin").write_bytes(bytes(range(256)) * 8)  # NUL bytes and everything else
    (root / "latin1.txt").write_bytes("café crème brûlée, déjà vu. ".encode("latin-1") * 40)  # no NUL, not UTF-8
    (root / "empty.txt").write_text("")
    (root / "blank.txt").write_text("   \n\n\t\n")
    (root / "short.txt").write_text("To be.")
    (root / "nothing").mkdir()
    (root / "bad.toml").write_text("max_steps = = 3\n")
    (root / "typo.toml").write_text("learning_rte = 0.1\n")
    (root / "numname.toml").write_text("dataset_name = 5\n")
    return root


def _train(*extra: str) -> list[str]:
    return [
        "train", "--preset", "micro", "--tokenizer", "char", "--data", "corpus.txt", "--cache-dir", "cache",
        "--context-length", "32", "--batch-size", "4", "--max-steps", "2", "--device", "cpu", "--plain", "--no-tensorboard",
        "--run-name", "fresh", *extra,
    ]  # fmt: skip


def _generate(*extra: str) -> list[str]:
    return ["generate", "-c", "existing", "-p", "x", *extra]


def _evaluate(*extra: str) -> list[str]:
    return ["evaluate", "--checkpoint", "existing", *extra]


def _optimize(*extra: str) -> list[str]:
    return ["optimize", "--preset", "micro", "--tokenizer", "char", "--data", "corpus.txt", "--cache-dir", "cache",
            "--context-length", "32", "--max-steps", "2", "--device", "cpu", "--n-trials", "1", *extra]  # fmt: skip


def _replace(args: list[str], flag: str, value: str) -> list[str]:
    args = list(args)
    args[args.index(flag) + 1] = value
    return args


# (id, arguments, exit code, what the error line says)
CASES = [
    # train: files
    ("train: missing corpus", _replace(_train(), "--data", "nope.txt"), 1, "--data nope.txt: no such file or directory"),
    ("train: binary corpus", _replace(_train(), "--data", "garbage.bin"), 1, "garbage.bin looks binary"),
    ("train: non-UTF-8 corpus", _replace(_train(), "--data", "latin1.txt"), 1, "latin1.txt is not UTF-8 text"),
    ("train: empty corpus", _replace(_train(), "--data", "empty.txt"), 1, "the corpus is empty"),
    ("train: blank corpus", _replace(_train(), "--data", "blank.txt"), 1, "the corpus is empty"),
    ("train: empty folder", _replace(_train(), "--data", "nothing"), 1, "the directory holds no files"),
    ("train: corpus shorter than a window", _replace(_train(), "--data", "short.txt"), 1, "fewer than one context window"),
    ("train: missing config file", _train("--config", "nope.toml"), 1, "config file nope.toml does not exist"),
    ("train: binary config file", _train("--config", "garbage.bin"), 1, "cannot read config file garbage.bin"),
    ("train: broken TOML", _train("--config", "bad.toml"), 1, "is not valid TOML"),
    ("train: unknown option in TOML", _train("--config", "typo.toml"), 1, "unknown option(s): learning_rte"),
    ("train: a number for a dataset name", ["train", "--config", "numname.toml", "--max-steps", "2", "--plain"], 1, "dataset_name must be text, got 5"),
    # train: types and ranges
    ("train: word for a number", _train("--batch-size", "eight"), 2, "'eight' is not a valid integer"),
    ("train: negative learning rate", _train("--learning-rate", "-1"), 1, "learning_rate must be positive"),
    ("train: NaN learning rate", _train("--learning-rate", "nan"), 1, "learning_rate must be positive"),
    ("train: dropout of 1.5", _train("--dropout", "1.5"), 1, "dropout must be in [0, 1)"),
    ("train: zero batch", _train("--batch-size", "0"), 1, "batch_size must be a positive integer"),
    ("train: negative steps", _train("--max-steps", "-5"), 1, "max_steps must be a positive integer"),
    ("train: heads that do not divide", _train("--num-heads", "3"), 1, "num_heads (3) must divide d_model (32)"),
    ("train: keep one checkpoint", _train("--keep-last", "1"), 1, "keep_last must be at least 2"),
    ("train: one beta", _train("--betas", "0.9"), 2, "two numbers separated by a comma"),
    ("train: unknown precision", _train("--precision", "fp8"), 2, "'fp8' is not one of"),
    ("train: unknown save-error policy", _train("--on-save-error", "retry"), 2, "'retry' is not one of"),
    ("train: a GPU that is not there", _train("--device", "cuda"), 1, "sees no CUDA GPU"),
    ("train: a device that does not exist", _train("--device", "banana"), 1, "unknown device 'banana'"),
    # train: conflicts and names
    ("train: files and a dataset", _train("--dataset-name", "wikitext"), 1, "not both"),
    ("train: a node rank with one machine", _train("--nproc", "2", "--node-rank", "1"), 2, "--node-rank 1 is out of range for --nnodes 1"),
    ("train: dataset config alone", _train("--dataset-config", "wikitext-2-raw-v1"), 1, "--dataset-config needs --dataset-name"),
    ("train: reusing a run name", _replace(_train(), "--run-name", "existing"), 1, "run 'existing' already exists"),
    ("train: a name with a path in it", _replace(_train(), "--run-name", "../escape"), 1, "run name '../escape' cannot be a folder name"),
    ("train: an empty name", _replace(_train(), "--run-name", ""), 1, "run name '' cannot be a folder name"),
    ("train: resume what is not there", _train("--resume-from", "nope"), 1, "no checkpoint at nope"),
    ("train: resume with another shape", ["train", "--resume-from", "existing", "--d-model", "64", "--plain"], 1, "cannot change d_model of a resumed run"),
    ("train: resume with another corpus", ["train", "--resume-from", "existing", "--data", "latin1.txt", "--plain"], 1, "cannot change data of a resumed run"),
    # generate
    ("generate: no such checkpoint", ["generate", "-c", "nope", "-p", "x"], 1, "no checkpoint at nope"),
    ("generate: a file for a checkpoint", ["generate", "-c", "garbage.bin", "-p", "x"], 1, "garbage.bin is a file"),
    ("generate: a run folder for a checkpoint", ["generate", "-c", "runs/existing", "-p", "x"], 1, "has no manifest.json"),
    ("generate: non-UTF-8 prompt", ["generate", "-c", "existing", "-p", "caf\udce9"], 1, "the --prompt text is not valid UTF-8"),
    ("generate: non-UTF-8 prompt file", ["generate", "-c", "existing", "--prompt-file", "latin1.txt"], 1, "is not valid UTF-8 text (byte 0xe9"),
    ("generate: missing prompt file", ["generate", "-c", "existing", "--prompt-file", "nope.txt"], 1, "cannot read prompt file nope.txt"),
    ("generate: prompt and prompt file", _generate("--prompt-file", "corpus.txt"), 2, "give --prompt or --prompt-file, not both"),
    ("generate: stdin prompt in a REPL", ["generate", "-c", "existing", "-i", "-p", "-"], 2, "--interactive needs"),
    ("generate: zero tokens", _generate("-n", "0"), 1, "max_new_tokens must be at least 1"),
    ("generate: negative temperature", _generate("-t", "-1"), 1, "temperature must be 0 (greedy) or positive"),
    ("generate: top-p above 1", _generate("--top-p", "2"), 1, "top_p must be in (0, 1]"),
    ("generate: negative top-k", _generate("--top-k", "-1"), 1, "top_k must be 0 (off) or positive"),
    ("generate: min-p of 1", _generate("--min-p", "1"), 1, "min_p must be in [0, 1)"),
    ("generate: zero repetition penalty", _generate("--repetition-penalty", "0"), 1, "repetition_penalty must be positive"),
    ("generate: word for top-k", _generate("--top-k", "many"), 2, "'many' is not a valid integer"),
    ("generate: a GPU that is not there", _generate("--device", "cuda"), 1, "sees no CUDA GPU"),
    # evaluate
    ("evaluate: no such checkpoint", ["evaluate", "--checkpoint", "nope"], 1, "no checkpoint at nope"),
    ("evaluate: no checkpoint given", ["evaluate"], 2, "Missing option '--checkpoint'"),
    ("evaluate: binary data", _evaluate("--data", "garbage.bin"), 1, "garbage.bin looks binary"),
    ("evaluate: non-UTF-8 data", _evaluate("--data", "latin1.txt"), 1, "latin1.txt is not UTF-8 text"),
    ("evaluate: empty data", _evaluate("--data", "empty.txt"), 1, "nothing to evaluate"),
    ("evaluate: zero stride", _evaluate("--stride", "0"), 2, "--stride: must be at least 1"),
    ("evaluate: negative token limit", _evaluate("--max-tokens", "-5"), 2, "--max-tokens: must be at least 2"),
    ("evaluate: unknown split", _evaluate("--split", "dev"), 2, "'dev' is not one of"),
    # export
    ("export: into a run's folder", ["export", "-c", "existing", "--out", "runs/existing"], 1, "runs/existing is not empty"),
    ("export: onto a file", ["export", "-c", "existing", "--out", "corpus.txt"], 2, "'corpus.txt' is a file"),
    ("export: no such checkpoint", ["export", "-c", "nope", "--out", "out"], 1, "no checkpoint at nope"),
    ("export: nowhere", ["export", "-c", "existing"], 2, "Missing option '--out'"),
    # optimize
    ("optimize: zero trials", _replace(_optimize(), "--n-trials", "0"), 1, "--n-trials must be at least 1"),
    ("optimize: zero workers", _optimize("--workers", "0"), 1, "--workers must be at least 1"),
    ("optimize: negative timeout", _optimize("--timeout", "-5"), 1, "must be a positive duration"),
    ("optimize: unknown storage", _optimize("--storage", "redis://localhost/0"), 1, "unknown storage scheme 'redis'"),
    ("optimize: a binary file as database", _optimize("--storage", "sqlite:///garbage.bin"), 1, "file is not a database"),
    ("optimize: a text file as journal", _optimize("--storage", "corpus.txt"), 1, "corpus.txt is not an Optuna journal file"),
    ("optimize: binary space file", _optimize("--space", "garbage.bin"), 1, "search space file garbage.bin is not valid TOML"),
    ("optimize: binary corpus", _replace(_optimize(), "--data", "garbage.bin"), 1, "garbage.bin looks binary"),
    ("optimize: bad study name", _optimize("--study-name", "my study!"), 1, "study name 'my study!' must be"),
    ("optimize: unknown pruner", _optimize("--pruner", "ruthless"), 2, "'ruthless' is not one of"),
    # runs, and the group itself
    ("runs: a file for a folder", ["runs", "--runs-dir", "corpus.txt"], 2, "'corpus.txt' is a file"),
    ("unknown command", ["trian"], 2, "No such command 'trian'"),
]


@pytest.mark.parametrize("args, code, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_nonzero_and_touches_nothing(project, monkeypatch, args, code, message):
    monkeypatch.chdir(project)
    before = snapshot(project / "runs", project / "checkpoints", project / "optuna_results", project / "garbage.bin", project / "corpus.txt")
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == code, out.output
    assert out.exception is None or isinstance(out.exception, SystemExit), repr(out.exception)
    assert "Traceback" not in out.output and "internal error" not in out.output
    errors = [line for line in out.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], out.output
    if code == 1:
        assert out.output.rstrip().splitlines()[-1] == errors[0]  # the last word, after any progress lines
    assert snapshot(project / "runs", project / "checkpoints", project / "optuna_results", project / "garbage.bin", project / "corpus.txt") == before
    assert not (project / "escape").exists() and not (project / "runs" / "fresh").exists()


def test_non_utf8_bytes_on_a_real_command_line_and_stdin(project):
    """What CliRunner cannot show: raw bytes in argv (Python hands them over as surrogates)
    and on standard input, through a real process."""
    env_python = [sys.executable, "-m", "gpt2tui"]
    for args, stdin in (([b"generate", b"-c", b"existing", b"-p", b"caf\xe9"], b""), ([b"generate", b"-c", b"existing", b"-p", b"-"], b"\xff\xfe\x00")):
        out = subprocess.run(env_python + args, cwd=project, input=stdin, capture_output=True, timeout=120)
        assert out.returncode == 1
        assert out.stderr.decode().strip().splitlines()[-1].startswith("Error:") and b"not valid UTF-8" in out.stderr
        assert b"Traceback" not in out.stderr and out.stdout == b""


def test_a_prompt_longer_than_the_context_is_cut_with_a_note(project, monkeypatch):
    monkeypatch.chdir(project)
    before = snapshot(project / "runs", project / "checkpoints")
    out = CliRunner().invoke(cli, ["generate", "-c", "existing", "-p", "To be, or not to be " * 40, "-n", "3", "--seed", "1"])
    assert out.exit_code == 0, out.output
    assert "note: the prompt has 800 tokens; only its last 32 fit the context of 32" in out.stderr
    assert "Traceback" not in out.output
    assert snapshot(project / "runs", project / "checkpoints") == before


def test_one_damaged_status_file_does_not_hide_the_other_runs(project, monkeypatch, tmp_path):
    monkeypatch.chdir(project)
    runs = tmp_path / "runs"
    for name, status in (("garbled", b"\x00\xff{not json"), ("wrong-types", json.dumps({"state": 7, "step": "many", "started": "yesterday", "pid": "x", "heartbeat": [1]}).encode())):
        (runs / name).mkdir(parents=True)
        (runs / name / "status.json").write_bytes(status)
    (runs / "fine").mkdir()
    (runs / "fine" / "status.json").write_text(json.dumps({"state": "finished", "step": 5, "max_steps": 5, "started": 1.0, "best_val_loss": 2.5}))
    out = CliRunner().invoke(cli, ["runs", "--runs-dir", str(runs), "--json"])
    assert out.exit_code == 0, out.output
    listed = {r["name"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert set(listed) == {"garbled", "wrong-types", "fine"}
    assert listed["fine"]["state"] == "finished" and listed["wrong-types"]["state"] == "unknown" and listed["wrong-types"]["step"] == 0
    table = CliRunner().invoke(cli, ["runs", "--runs-dir", str(runs)])
    assert table.exit_code == 0 and "fine" in table.output and "garbled" in table.output
