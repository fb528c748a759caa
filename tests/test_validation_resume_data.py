"""A resume compares the corpus fingerprint its checkpoint recorded: after the text changed,
`--resume-from` says what changed and refuses, unless `--allow-data-change` is given; runs
record absolute data paths, so a resume from another folder reads the same files."""

from __future__ import annotations

import json
from pathlib import Path

from reliability_helpers import finished, snapshot, train_flags


def _resume_flags(tmp_path: Path, steps: int) -> list[str]:
    return [
        "train", "--plain", "--no-tensorboard", "--resume-from", "r", "--max-steps", str(steps), "--device", "cpu", "--threads", "1",
        "--checkpoints-dir", str(tmp_path / "checkpoints"), "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip


def _meta(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "config.json").read_text())


def test_a_resume_on_changed_data_says_what_changed_and_refuses_unless_asked(tmp_path):
    first = finished([*train_flags(tmp_path, steps=4), "--run-name", "r"], tmp_path)
    assert first.returncode == 0, first.stderr
    corpus = (tmp_path / "data" / "corpus.txt").resolve()
    before = snapshot(tmp_path / "checkpoints", tmp_path / "runs")
    corpus.write_text(corpus.read_text() + "An entirely new paragraph that the first run never saw.\n" * 40)

    refused = finished(_resume_flags(tmp_path, 8), tmp_path)
    assert refused.returncode == 1, refused.stderr
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert lines[0].startswith("Error: the training data changed since this checkpoint was saved: ")
    assert f"{corpus} changed (" in lines[0] and "--allow-data-change" in lines[0]
    assert snapshot(tmp_path / "checkpoints", tmp_path / "runs") == before  # nothing touched

    allowed = finished([*_resume_flags(tmp_path, 8), "--allow-data-change"], tmp_path)
    assert allowed.returncode == 0, allowed.stderr
    assert f"warning: resuming on changed data (--allow-data-change): {corpus} changed" in allowed.stderr
    assert (tmp_path / "checkpoints" / "r" / "step-00000008").is_dir(), sorted(p.name for p in (tmp_path / "checkpoints" / "r").iterdir())
    new_record = _meta(tmp_path / "checkpoints" / "r" / "step-00000008")["meta"]["data"]
    assert new_record["files"][0]["path"] == str(corpus)  # the changed text is what the new checkpoint records
    assert new_record["corpus_fingerprint"] != _meta(tmp_path / "checkpoints" / "r" / "step-00000004")["meta"]["data"]["corpus_fingerprint"]


def test_runs_record_absolute_data_paths_and_resume_from_another_folder(tmp_path):
    flags = train_flags(tmp_path, steps=4)
    flags[flags.index("--data") + 1] = "data/corpus.txt"  # typed relative to the folder it starts in
    first = finished([*flags, "--run-name", "r"], tmp_path)
    assert first.returncode == 0, first.stderr
    latest = max((p for p in (tmp_path / "checkpoints" / "r").iterdir() if p.name.startswith("step")), key=lambda p: p.name)
    meta = _meta(latest)["meta"]
    corpus = str((tmp_path / "data" / "corpus.txt").resolve())
    assert meta["run_config"]["data"]["data"] == [corpus]  # typed relative, recorded absolute
    assert meta["data"]["files"] == [{"path": corpus, "bytes": Path(corpus).stat().st_size, "sha256": meta["data"]["files"][0]["sha256"]}]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    resumed = finished(_resume_flags(tmp_path, 6), elsewhere)
    assert resumed.returncode == 0, resumed.stderr
    assert "changed" not in resumed.stderr
