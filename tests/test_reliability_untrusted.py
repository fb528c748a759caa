"""Untrusted checkpoints: loading never executes code, and damage is found and named.

- A pickle payload (which would create a file if it were ever unpickled) put where any
  checkpoint file is expected (our model.safetensors or trainer_state.safetensors, a Hugging
  Face pytorch_model.bin in either of torch's formats) is refused, even with a manifest forged
  to match it, through the library and through `gpt2tui generate / evaluate / train
  --resume-from / export`; the file is never created.
- A truncated or bit-flipped file, whichever file of a checkpoint it is, is detected (sizes and
  SHA-256 in the manifest) and the error names it.
- A checkpoint from a newer gpt2tui, or whose tokenizer does not fit its model, is refused
  with the reason.

tests/test_checkpoint.py covers the model.safetensors cases of the first two on their own.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from train_helpers import dirs, tiny_config

from gpt2core.checkpoint import (
    MANIFEST,
    load_checkpoint,
    load_trainer_state,
    sha256_of,
    verify_checkpoint,
)
from gpt2core.errors import CheckpointError, GPT2Error
from gpt2core.hf import load_hf
from gpt2core.train import Trainer, train
from gpt2tui.cli import cli

FILES = ("model.safetensors", "config.json", "tokenizer.json", "trainer_state.safetensors", "trainer_state.json")


class Payload:
    """Unpickling this calls open(marker, "w"): a file appears if anything ever unpickles it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("untrusted")
    result = train(tiny_config(root, max_steps=2), run_name="good", tensorboard=False, **dirs(root))
    return root, result.last_checkpoint


@pytest.fixture
def checkpoint(trained, tmp_path):
    """A private copy of a real training checkpoint, in its run's folder under tmp_path."""
    _, source = trained
    target = tmp_path / "checkpoints" / "good" / source.name
    shutil.copytree(source, target)
    return target


def forge_manifest(directory: Path) -> None:
    """What an attacker who controls every file does: a manifest that agrees with them."""
    manifest = json.loads((directory / MANIFEST).read_text())
    for name in manifest["files"]:
        path = directory / name
        manifest["files"][name] = {"bytes": path.stat().st_size, "sha256": sha256_of(path)}
    (directory / MANIFEST).write_text(json.dumps(manifest))


def cli_run(args: list[str], cwd: Path):
    import os

    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, args)
    finally:
        os.chdir(old)


def assert_one_line_error(out, *needles: str) -> None:
    assert out.exit_code == 1, out.output
    assert "Traceback" not in out.output
    errors = [line for line in out.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, out.output
    for needle in needles:
        assert needle in errors[0], errors[0]


# -- code in the files ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["model.safetensors", "trainer_state.safetensors"])
def test_pickle_in_place_of_our_tensor_files_never_runs(checkpoint, tmp_path, name):
    marker = tmp_path / "pwned"
    (checkpoint / name).write_bytes(pickle.dumps(Payload(marker)))
    forge_manifest(checkpoint)
    verify_checkpoint(checkpoint)  # the forged manifest agrees: only the loader stands in the way
    with pytest.raises(CheckpointError, match=name):
        load_trainer_state(checkpoint) if name.startswith("trainer") else load_checkpoint(checkpoint)
    commands = {
        "model.safetensors": [["generate", "-c", str(checkpoint), "-p", "x", "-n", "2"], ["evaluate", "--checkpoint", str(checkpoint)]],
        "trainer_state.safetensors": [["train", "--resume-from", str(checkpoint), "--max-steps", "4", "--plain"]],
    }[name]
    for args in commands:
        assert_one_line_error(cli_run(args, tmp_path), name)
    assert not marker.exists()


def _hf_directory(tmp_path: Path, weights: bytes) -> Path:
    from gpt2core.config import preset
    from gpt2core.hf import hf_config_from_model

    folder = tmp_path / "hf"
    folder.mkdir()
    config = hf_config_from_model(preset("micro").replace(vocab_size=40), tied=True, eos_id=0, dtype=torch.float32)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "pytorch_model.bin").write_bytes(weights)
    return folder


def _torch_zip_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)  # torch's zip format: data.pkl inside
    data = buffer.getvalue()
    assert zipfile.is_zipfile(io.BytesIO(data))
    return data


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the legacy file; the refusal is what counts
@pytest.mark.parametrize("fmt", ["zip", "legacy pickle", "payload inside a state dict"])
def test_pickle_in_a_hugging_face_pytorch_model_bin_never_runs(tmp_path, fmt):
    marker = tmp_path / "pwned"
    weights = {
        "zip": lambda: _torch_zip_pickle(Payload(marker)),
        "legacy pickle": lambda: pickle.dumps(Payload(marker)),
        "payload inside a state dict": lambda: _torch_zip_pickle({"transformer.wte.weight": torch.zeros(40, 32), "x": Payload(marker)}),
    }[fmt]()
    folder = _hf_directory(tmp_path, weights)
    with pytest.raises(CheckpointError, match="pytorch_model.bin is not a readable weight file"):
        load_hf(folder)
    for args in (["generate", "-c", str(folder), "-p", "x", "-n", "2"], ["export", "-c", str(folder), "--out", str(tmp_path / "out")]):
        assert_one_line_error(cli_run(args, tmp_path), "pytorch_model.bin")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_stray_pickles_beside_a_checkpoint_are_never_opened(checkpoint, tmp_path):
    marker = tmp_path / "pwned"
    for stray in ("model.pt", "optimizer.pt", "pytorch_model.bin", "training_args.bin"):
        (checkpoint / stray).write_bytes(_torch_zip_pickle(Payload(marker)))
    loaded = load_checkpoint(checkpoint)
    assert loaded.info.step == 2 and load_trainer_state(checkpoint)["step"] == 2
    assert not marker.exists()


# -- damaged files -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("damage", ["truncated", "bit-flipped"])
def test_damage_to_any_file_is_found_and_named(checkpoint, tmp_path, name, damage):
    path = checkpoint / name
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[len(data) * 2 // 3] ^= 0x04
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as error:
        verify_checkpoint(checkpoint)
    assert name in str(error.value) and ("truncated" in str(error.value) if damage == "truncated" else "checksum" in str(error.value))
    with pytest.raises(CheckpointError, match=name):
        load_checkpoint(checkpoint)
    # The resume path reads the trainer state too: it names the file as well, before any training.
    with pytest.raises(CheckpointError, match=name):
        Trainer(None, resume_from=checkpoint, tensorboard=False, **dirs(tmp_path)).run()
    assert not (tmp_path / "runs" / "good").exists()  # refused before the run was opened


def test_damaged_manifest_is_named(checkpoint):
    manifest = checkpoint / MANIFEST
    manifest.write_bytes(manifest.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="manifest.json is not valid JSON"):
        load_checkpoint(checkpoint)


def test_cli_reports_damage_in_one_line(checkpoint, tmp_path):
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])
    for args in (["generate", "-c", str(checkpoint), "-p", "x"], ["evaluate", "--checkpoint", str(checkpoint)], ["export", "-c", str(checkpoint), "--out", str(tmp_path / "o")]):
        assert_one_line_error(cli_run(args, tmp_path), "model.safetensors", "truncated")


# -- versions and vocabularies -------------------------------------------------------------------


def _set_state_field(state_json: dict, key: str, value) -> None:
    """Change one top-level field of a packed trainer state ({"__dict__": [[key, value], ...]})."""
    for item in state_json["state"]["__dict__"]:
        if item[0] == key:
            item[1] = value


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "file, edit, reason",
    [
        ("manifest.json", lambda d: d.update(format_version=2), "uses checkpoint format 2, newer than this gpt2tui reads (1); upgrade gpt2tui"),
        ("config.json", lambda d: d.update(format_version=2), "has format version 2; this gpt2tui reads up to 1"),
        ("trainer_state.json", lambda d: _set_state_field(d, "format", 2), "trainer state format 2; this gpt2tui reads 1"),
    ],
)
def test_newer_formats_are_refused_with_the_reason(checkpoint, tmp_path, file, edit, reason):
    _edit_json(checkpoint / file, edit)
    forge_manifest(checkpoint)
    with pytest.raises(GPT2Error, match=reason.replace("(", r"\(").replace(")", r"\)")):
        Trainer(None, resume_from=checkpoint, tensorboard=False, **dirs(tmp_path)).run()
    if file != "trainer_state.json":  # the weights alone do not need the trainer state
        with pytest.raises(CheckpointError, match=reason.split(";")[0].replace("(", r"\(").replace(")", r"\)")):
            load_checkpoint(checkpoint)


def test_a_tokenizer_bigger_than_the_model_is_refused(checkpoint, bpe_tokenizer):
    spec = bpe_tokenizer.save(checkpoint)  # 300 tokens, for a model of the char vocabulary
    _edit_json(checkpoint / "config.json", lambda d: d.update(tokenizer=spec))
    forge_manifest(checkpoint)
    with pytest.raises(CheckpointError, match="the tokenizer has 300 tokens but the model only"):
        load_checkpoint(checkpoint)


def test_a_tokenizer_that_disagrees_with_its_config_is_refused(checkpoint):
    from gpt2core.tokenizer import train_char

    train_char(["abc"]).save(checkpoint)  # the file changes (5 tokens), the recorded spec does not
    forge_manifest(checkpoint)
    with pytest.raises(CheckpointError, match="has 5 tokens but its config says"):
        load_checkpoint(checkpoint)


def test_a_bpe_tokenizer_labelled_char_is_refused(checkpoint, bpe_tokenizer):
    bpe_tokenizer.save(checkpoint)  # a BPE file where config.json says char
    forge_manifest(checkpoint)
    with pytest.raises(CheckpointError, match="tokenizer.json: it is labelled 'char' but holds a BPE vocabulary"):
        load_checkpoint(checkpoint)


def test_weights_of_another_vocabulary_are_refused(checkpoint):
    _edit_json(checkpoint / "config.json", lambda d: d["model"].update(vocab_size=d["model"]["vocab_size"] + 4))
    forge_manifest(checkpoint)
    with pytest.raises(CheckpointError, match=r"transformer.wte.weight has shape \(\d+, 32\), the config needs"):
        load_checkpoint(checkpoint)


def test_a_config_asking_for_a_huge_model_is_refused_before_allocating_it(checkpoint):
    # 48 layers 8192 wide: ~40 billion parameters, 160 GB if it were built; the file holds ~110 KB.
    _edit_json(checkpoint / "config.json", lambda d: d["model"].update(num_layers=48, d_model=8192, d_ff=4 * 8192, num_heads=64))
    forge_manifest(checkpoint)
    with pytest.raises(CheckpointError, match=r"model.safetensors holds [\d,]+ bytes, too few for the [\d,]+-parameter model its config.json describes"):
        load_checkpoint(checkpoint)


def test_resuming_with_another_tokenizer_is_refused(checkpoint, tmp_path):
    out = cli_run(["train", "--resume-from", str(checkpoint), "--tokenizer", "bpe", "--plain"], tmp_path)
    assert_one_line_error(out, "cannot change tokenizer of a resumed run")
