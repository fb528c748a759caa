import json
import os
import random

import numpy as np
import pytest
import torch

from gpt2core.checkpoint import (
    MANIFEST,
    CheckpointStore,
    load_checkpoint,
    load_trainer_state,
    pack_state,
    read_manifest,
    resolve_checkpoint,
    save_checkpoint,
    unpack_state,
    verify_checkpoint,
)
from gpt2core.errors import CheckpointError, ConfigError


def _trained_state(model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(0, model.config.vocab_size, (2, 8))
    model.train()
    model(idx, idx)[1].backward()
    opt.step()
    model.eval()
    return {
        "optimizer": opt.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "python_rng": random.getstate(),
        "numpy_rng": np.random.get_state(),
        "step": 7,
    }


def test_save_and_load_round_trip(tmp_path, micro_model, char_tokenizer):
    path = save_checkpoint(tmp_path / "ck", micro_model, char_tokenizer, meta={"val_loss": 1.5})
    loaded = load_checkpoint(path)
    idx = torch.randint(0, micro_model.config.vocab_size, (1, 9))
    assert torch.equal(loaded.model(idx)[0], micro_model(idx)[0])
    assert loaded.model.lm_head.weight is loaded.model.transformer.wte.weight
    assert loaded.tokenizer.encode("to be") == char_tokenizer.encode("to be")
    assert loaded.info.meta["val_loss"] == 1.5
    assert not loaded.model.training


def test_trainer_state_round_trips_without_pickle(tmp_path, micro_model, char_tokenizer):
    state = _trained_state(micro_model)
    path = save_checkpoint(tmp_path / "ck", micro_model, char_tokenizer, trainer_state=state)
    back = load_trainer_state(path)
    opt = torch.optim.AdamW(micro_model.parameters(), lr=1e-3)
    opt.load_state_dict(back["optimizer"])
    assert torch.equal(back["torch_rng"], state["torch_rng"])
    random.setstate(back["python_rng"])  # raises if the tuple structure were lost
    np.random.set_state(back["numpy_rng"])
    assert back["step"] == 7
    assert not any(p.suffix in (".pt", ".pth", ".pkl", ".bin") for p in path.iterdir())


def test_pack_state_refuses_arbitrary_objects():
    with pytest.raises(TypeError):
        pack_state({"f": object()})
    skeleton, tensors = pack_state({"a": (1, [torch.ones(2)]), 3: None})
    assert unpack_state(json.loads(json.dumps(skeleton)), tensors)["a"][1][0].tolist() == [1.0, 1.0]


def test_directory_without_manifest_is_not_a_checkpoint(tmp_path, micro_model, char_tokenizer):
    path = save_checkpoint(tmp_path / "ck", micro_model, char_tokenizer)
    (path / MANIFEST).unlink()
    with pytest.raises(CheckpointError, match="not a complete checkpoint|incomplete"):
        load_checkpoint(path)


def test_truncated_and_bit_flipped_files_are_named(tmp_path, micro_model, char_tokenizer):
    path = save_checkpoint(tmp_path / "ck", micro_model, char_tokenizer)
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors.*checksum"):
        load_checkpoint(path)
    weights.write_bytes(bytes(data[:-10]))
    with pytest.raises(CheckpointError, match="model.safetensors.*truncated"):
        verify_checkpoint(path, full=False)


def test_a_file_changed_after_a_verification_is_hashed_again(tmp_path, micro_model, char_tokenizer):
    path = save_checkpoint(tmp_path / "ck", micro_model, char_tokenizer)
    verify_checkpoint(path)  # passes, and is remembered for this process
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 3] ^= 0x10  # same size, same inode: only the contents (and mtime) change
    with open(weights, "r+b") as handle:
        handle.write(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors.*checksum"):
        verify_checkpoint(path)


def test_newer_format_is_refused(tmp_path, micro_model, char_tokenizer):
    path = save_checkpoint(tmp_path / "ck", micro_model, char_tokenizer)
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["format_version"] = 99
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="newer"):
        read_manifest(path)


def test_manifest_with_path_traversal_is_refused(tmp_path, micro_model, char_tokenizer):
    path = save_checkpoint(tmp_path / "ck", micro_model, char_tokenizer)
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["files"]["../../etc/passwd"] = {"bytes": 1, "sha256": "0"}
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="malformed"):
        verify_checkpoint(path)


def test_shape_mismatch_is_explained(tmp_path, micro_model, char_tokenizer):
    path = save_checkpoint(tmp_path / "ck", micro_model, char_tokenizer)
    config = json.loads((path / "config.json").read_text())
    config["model"]["d_model"] = 64
    config["model"]["d_ff"] = 256
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"transformer\.\S+ has shape \(\d+, 32\), the config needs \(\d+, 64\)"):
        load_checkpoint(path, verify=False)


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, micro_model, char_tokenizer):
    target = tmp_path / "ck"
    save_checkpoint(target, micro_model, char_tokenizer, meta={"n": 1})

    class Boom(torch.nn.Module):
        pass

    with pytest.raises(TypeError):
        save_checkpoint(target, Boom(), char_tokenizer)
    assert load_checkpoint(target).info.meta["n"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temporary directory left


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_directory_gives_checkpoint_error(tmp_path, micro_model, char_tokenizer):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(CheckpointError, match="could not write checkpoint"):
            save_checkpoint(tmp_path / "ck", micro_model, char_tokenizer)
    finally:
        tmp_path.chmod(0o700)


def test_store_keeps_last_k_and_best(tmp_path, micro_model, char_tokenizer):
    store = CheckpointStore(tmp_path / "run", keep_last=2)
    for step in (10, 20, 30, 40):
        store.save(step, micro_model, char_tokenizer, is_best=(step == 20))
    assert [s for s, _ in store.steps()] == [30, 40]
    assert load_checkpoint(store.best()).info.step == 20
    assert resolve_checkpoint(tmp_path / "run") == store.best()
    assert resolve_checkpoint(tmp_path / "run", prefer="latest") == store.step_path(40)
    # best/ shares the bytes of its step through hard links.
    assert (store.best() / "model.safetensors").stat().st_nlink >= 1


def test_store_needs_two_checkpoints():
    with pytest.raises(ConfigError):
        CheckpointStore("x", keep_last=1)


def test_crash_between_best_swap_steps_is_recovered(tmp_path, micro_model, char_tokenizer):
    store = CheckpointStore(tmp_path / "run")
    store.save(10, micro_model, char_tokenizer, is_best=True)
    # Simulate a crash after the old best was moved aside and before the new one moved in.
    os.rename(store.root / "best", store.root / ".old-best-999999-deadbeef")
    (store.root / ".tmp-step-00000020-999999-cafebabe").mkdir()
    store = CheckpointStore(tmp_path / "run")
    assert store.best() is not None
    assert not [p for p in store.root.iterdir() if p.name.startswith(".")]


def test_resolve_by_run_name_and_latest(tmp_path, micro_model, char_tokenizer):
    for name in ("a", "b"):
        CheckpointStore(tmp_path / name).save(5, micro_model, char_tokenizer)
    os.utime(tmp_path / "a" / "step-00000005", (1, 1))
    assert resolve_checkpoint("b", root=tmp_path).parent.name == "b"
    assert resolve_checkpoint("latest", root=tmp_path).parent.name == "b"
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint("nope", root=tmp_path)


def test_untrusted_pickle_is_never_executed(tmp_path, micro_model, char_tokenizer):
    path = save_checkpoint(tmp_path / "ck", micro_model, char_tokenizer)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    import pickle

    (path / "model.safetensors").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError):
        load_checkpoint(path, verify=False)
    assert not marker.exists()
