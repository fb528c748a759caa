"""The checkpoint a run continues from (--resume-from), read and checked when the Trainer is
made: before the run is claimed, anything is tokenised or written, or a process group starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gpt2core.checkpoint import CheckpointStore, read_trainer_state
from gpt2core.config import RunConfig
from gpt2core.data import CorpusText, check_corpus_unchanged, load_corpus
from gpt2core.defaults import resume_point
from gpt2core.init_from import INIT_FROM_KEY


@dataclass
class Resume:
    """A checked resume point."""

    directory: Path  # the checkpoint directory the run continues from
    saved: dict  # its trainer state, format and field types checked
    config: RunConfig  # the config to run: the caller's (changed training options), else the checkpoint's
    corpus: CorpusText | None  # the corpus as read now: checked here, tokenised when the run starts, then dropped
    data_changes: list[str]  # how the corpus differs from the checkpoint's (allowed by the caller, shown by it)
    run_name: str | None  # the name the checkpoint recorded
    init_record: dict | None  # where a fine-tuned run's weights came from (--init-from), kept on resume
    latest_at_choice: Path | None  # the run's newest checkpoint as chosen: under the claim it must still be


def read_resume(resume_from: str | Path, checkpoints_root: Path, config: RunConfig | None, *, allow_data_change: bool) -> Resume:
    """``resume_from`` (a checkpoint, a run's checkpoint folder or a run name) as a Resume; a
    one-line GPT2Error for a damaged state, or a changed corpus unless ``allow_data_change``."""
    directory, info, saved_config = resume_point(resume_from, checkpoints_root)
    latest = CheckpointStore(directory.parent, cleanup=False).latest()
    saved = read_trainer_state(directory)
    config = config or saved_config
    # The corpus read now against the fingerprint the checkpoint recorded: read once, so the
    # text checked is the text tokenised.
    corpus = load_corpus(config.data)
    changes = check_corpus_unchanged(info.meta.get("data") or {}, corpus, allow_change=allow_data_change)
    return Resume(
        directory=directory,
        saved=saved,
        config=config,
        corpus=corpus,
        data_changes=changes,
        run_name=info.meta.get("run_name"),
        init_record=info.meta.get(INIT_FROM_KEY),
        latest_at_choice=latest,
    )
