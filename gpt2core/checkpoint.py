"""Checkpoints: a directory of safetensors + JSON, written atomically, verified when read.

Layout of one checkpoint directory::

    model.safetensors          weights (the tied head stored once)
    config.json                format version, model config, tokenizer spec, metadata
    tokenizer.json             the tokenizer, so loading never needs the network
    trainer_state.safetensors  optimizer / scaler / RNG tensors (training checkpoints only)
    trainer_state.json         step, epoch, data cursor, best loss, the non-tensor state
    manifest.json              size and SHA-256 of every file above; written last

A directory is a checkpoint only if its manifest is there and agrees with the files: it is
written into a hidden temporary directory beside the target, fsynced, and renamed into place,
so a crash at any moment leaves either the old checkpoint or the new one, never half of one.
Nothing is unpickled: tensors come from safetensors, everything else from JSON.

``CheckpointStore`` manages the checkpoints of one run: ``step-00001200/`` directories (the
last ``keep_last`` are kept) and ``best/``, hard links to the files of the best step so far.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file, save_model

from gpt2core.atomic import TMP_PREFIX, parse_side_name, side_path
from gpt2core.config import ModelConfig
from gpt2core.errors import CheckpointError, ConfigError, TokenizerError
from gpt2core.model import GPT
from gpt2core.process import pid_alive
from gpt2core.safe_json import UnreadableJSON, read_json_file
from gpt2core.tokenizer import KINDS, TOKENIZER_FILE, Tokenizer

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
BEST = "best"
STEP_DIR = re.compile(r"^step-(\d{8,})$")
_OLD_PREFIX = ".old-"
DEFAULT_CHECKPOINTS_ROOT = Path("checkpoints")
_MAX_JSON_BYTES = 64 << 20  # manifest, config and trainer-state JSON are KBs; a file this big is not ours
_SIZE_SLACK = 64 << 20  # bytes a config may ask for beyond its weights file before loading is refused unbuilt


# -- nested state (optimizer, scaler, RNG) <-> tensors + JSON ---------------------------------------


def pack_state(state: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split nested dicts/lists/tuples holding tensors into a JSON-able skeleton and a flat
    {key: tensor} map, so optimizer and RNG state can be saved without pickle."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj: Any, path: str) -> Any:
        if isinstance(obj, torch.Tensor):
            key = path or "_"
            tensors[key] = obj.detach().cpu().contiguous()
            return {"__tensor__": key}
        if hasattr(obj, "dtype") and hasattr(obj, "tolist") and type(obj).__module__ == "numpy":
            return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
        if isinstance(obj, dict):
            if not all(isinstance(k, (str, int)) for k in obj):
                raise TypeError(f"cannot pack dict keys of types {sorted({type(k).__name__ for k in obj})}")
            return {"__dict__": [[k, walk(v, f"{path}.{k}" if path else str(k))] for k, v in obj.items()]}
        if isinstance(obj, tuple):
            return {"__tuple__": [walk(v, f"{path}.{i}") for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(obj)]
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise TypeError(f"cannot pack {type(obj).__name__} at {path or 'top level'}")

    return walk(state, prefix), tensors


def unpack_state(skeleton: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of ``pack_state``."""
    if isinstance(skeleton, list):
        return [unpack_state(v, tensors) for v in skeleton]
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__ndarray__" in skeleton:
            import numpy as np

            return np.asarray(skeleton["__ndarray__"], dtype=skeleton["dtype"])
        if "__tuple__" in skeleton:
            return tuple(unpack_state(v, tensors) for v in skeleton["__tuple__"])
        if "__dict__" in skeleton:
            return {k: unpack_state(v, tensors) for k, v in skeleton["__dict__"]}
        return {k: unpack_state(v, tensors) for k, v in skeleton.items()}
    return skeleton


# -- low-level file helpers -------------------------------------------------------------------------


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # some filesystems (and Windows) cannot open directories; rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, allow_nan=True)
        f.write("\n")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _unwrap(model: torch.nn.Module) -> GPT:
    """The bare GPT inside torch.compile's and DDP's wrappers."""
    while not isinstance(model, GPT):
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if inner is None:
            raise TypeError(f"expected a gpt2core GPT model, got {type(model).__name__}")
        model = inner
    return model


# -- writing ----------------------------------------------------------------------------------------


def save_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    *,
    meta: Mapping[str, Any] | None = None,
    trainer_state: Any = None,
) -> Path:
    """Write a complete checkpoint at ``directory`` atomically (replacing one that is there).

    ``meta`` is free JSON (step, val_loss, run name, train config) stored in config.json;
    ``trainer_state`` is any nested structure of tensors and JSON values (see ``pack_state``).
    On any failure (disk full, permission denied) the temporary files are removed, whatever
    was at ``directory`` is untouched, and a CheckpointError says what went wrong.
    """
    directory = Path(directory)
    gpt = _unwrap(model)
    parent = directory.parent
    tmp = side_path(directory, TMP_PREFIX)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        _write_contents(tmp, gpt, tokenizer, meta or {}, trainer_state)
        _install(tmp, directory)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise CheckpointError(f"could not write checkpoint {directory}: {exc.strerror or exc}") from exc
        if isinstance(exc, SafetensorError):  # safetensors reports a failed write (disk full) as its own error
            raise CheckpointError(f"could not write checkpoint {directory}: {_io_reason(exc)}") from exc
        raise
    return directory


def _io_reason(error: Exception) -> str:
    """'File too large' from safetensors' 'Error while serializing: I/O error: File too large (os error 27)'."""
    text = str(error)
    return re.sub(r"\s*\(os error \d+\)$", "", text.rsplit("I/O error: ", 1)[-1]) if "I/O error: " in text else text


def _write_contents(tmp: Path, gpt: GPT, tokenizer: Tokenizer, meta: Mapping[str, Any], trainer_state: Any) -> None:
    save_model(gpt, str(tmp / WEIGHTS), metadata={"format": "pt"})
    tokenizer_spec = tokenizer.save(tmp)
    _write_json(
        tmp / CONFIG,
        {
            "format_version": FORMAT_VERSION,
            "model": gpt.config.to_dict(),
            "tokenizer": tokenizer_spec,
            "meta": dict(meta),
        },
    )
    if trainer_state is not None:
        skeleton, tensors = pack_state(trainer_state)
        save_file(tensors, str(tmp / STATE_TENSORS))
        _write_json(tmp / STATE_JSON, {"format_version": FORMAT_VERSION, "state": skeleton})
    _write_manifest(tmp)


def _write_manifest(tmp: Path) -> None:
    files = {}
    for path in sorted(tmp.iterdir()):
        if path.name == MANIFEST or not path.is_file():
            continue
        _fsync_file(path)
        files[path.name] = {"bytes": path.stat().st_size, "sha256": sha256_of(path)}
    _write_json(
        tmp / MANIFEST,
        {"format_version": FORMAT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": files},
    )
    _fsync_file(tmp / MANIFEST)
    _fsync_dir(tmp)


def _install(tmp: Path, target: Path) -> None:
    """Rename a finished temporary directory to ``target``, swapping out what was there."""
    parent = target.parent
    old = None
    if target.exists():
        old = side_path(target, _OLD_PREFIX)
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except OSError:
        if old is not None:
            os.rename(old, target)  # put the previous checkpoint back
        raise
    _fsync_dir(parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def link_checkpoint(source: str | Path, target: str | Path) -> Path:
    """Make ``target`` a complete copy of checkpoint ``source`` using hard links (no extra disk
    space), falling back to copies where the filesystem has no hard links; atomic like a save."""
    source, target = Path(source), Path(target)
    verify_checkpoint(source, full=False)
    tmp = side_path(target, TMP_PREFIX)
    try:
        tmp.mkdir(parents=True)
        for path in source.iterdir():
            if path.is_file():
                try:
                    os.link(path, tmp / path.name)
                except OSError:
                    shutil.copy2(path, tmp / path.name)
        _fsync_dir(tmp)
        _install(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"could not write checkpoint {target}: {exc.strerror or exc}") from exc
    return target


# -- reading ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint's config.json says, without loading any weights."""

    path: Path
    model_config: ModelConfig
    tokenizer_spec: dict
    meta: dict = field(default_factory=dict)
    has_trainer_state: bool = False

    @property
    def step(self) -> int | None:
        return self.meta.get("step")


def _read_json(path: Path) -> Any:
    """A checkpoint's JSON file through the one untrusted-JSON reader (regular files only,
    capped, depth-limited); every failure is a CheckpointError naming the file."""
    try:
        return read_json_file(path, max_bytes=_MAX_JSON_BYTES)
    except UnreadableJSON as exc:
        if exc.missing:
            raise CheckpointError(f"{path.parent} is missing {path.name}") from None
        raise CheckpointError(f"{exc}; the checkpoint is corrupt") from None


def read_manifest(directory: str | Path) -> dict:
    """Parse and sanity-check manifest.json; arbitrary bytes give a CheckpointError, nothing else."""
    directory = Path(directory)
    if not (directory / MANIFEST).exists():
        raise CheckpointError(f"{directory} is not a complete checkpoint (no {MANIFEST}; the write may have been interrupted)")
    manifest = _read_json(directory / MANIFEST)
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{directory / MANIFEST} is malformed: expected a JSON object")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{directory / MANIFEST} has no valid format_version")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{directory} uses checkpoint format {version}, newer than this gpt2tui reads ({FORMAT_VERSION}); upgrade gpt2tui"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise CheckpointError(f"{directory / MANIFEST} is malformed: no file list")
    for name, entry in files.items():
        if (
            not isinstance(name, str)
            or "/" in name
            or "\\" in name
            or name in ("", ".", "..")
            or "\x00" in name
            or len(name.encode("utf-8", "surrogatepass")) > 255  # longer is no file name (ENAMETOOLONG)
            or not isinstance(entry, dict)
            or not isinstance(entry.get("bytes"), int)
            or not isinstance(entry.get("sha256"), str)
        ):
            raise CheckpointError(f"{directory / MANIFEST} is malformed: bad entry for {name!r}")
    for required in (WEIGHTS, CONFIG):
        if required not in files:
            raise CheckpointError(f"{directory / MANIFEST} does not list {required}")
    return manifest


def verify_checkpoint(directory: str | Path, *, full: bool = True) -> dict:
    """Check every file against the manifest: present, right size and (``full``) right SHA-256.
    Raises CheckpointError naming the first file that is wrong; returns the manifest."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    stamps = []
    for name, entry in manifest["files"].items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing; the checkpoint is incomplete")
        stat = path.stat()
        if stat.st_size != entry["bytes"]:
            raise CheckpointError(f"{path} is {stat.st_size} bytes but the manifest says {entry['bytes']}: the file is truncated or altered")
        stamps.append((name, entry["sha256"], stat.st_ino, stat.st_size, stat.st_mtime_ns))
    if not full:
        return manifest
    key, stamp = directory.resolve(), tuple(stamps)
    if _hashed_ok.get(key) == stamp:  # verified earlier in this process and untouched since
        return manifest
    for name, entry in manifest["files"].items():
        if sha256_of(directory / name) != entry["sha256"]:
            raise CheckpointError(f"{directory / name} does not match its checksum in the manifest: the file is corrupt")
    _hashed_ok[key] = stamp
    return manifest


# Checkpoints whose every file matched its SHA-256 in this process, with each file's inode, size
# and mtime then: resuming verifies before reading the config and again before loading, and a
# 124M run's files are 1.5 GB to hash. Any write or replacement changes a stamp and re-hashes.
_hashed_ok: dict[Path, tuple] = {}


def read_checkpoint_info(directory: str | Path) -> CheckpointInfo:
    directory = Path(directory)
    manifest = read_manifest(directory)
    config = _read_json(directory / CONFIG)
    if not isinstance(config, dict):
        raise CheckpointError(f"{directory / CONFIG} is malformed: expected a JSON object")
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{directory / CONFIG} has format version {version!r}; this gpt2tui reads up to {FORMAT_VERSION}")
    try:
        model_config = ModelConfig.from_dict(config["model"])
    except (KeyError, TypeError, ConfigError) as exc:
        raise CheckpointError(f"{directory / CONFIG} has an invalid model config: {exc}") from None
    spec = config.get("tokenizer")
    if not isinstance(spec, dict):
        raise CheckpointError(f"{directory / CONFIG} has no tokenizer spec")
    _check_tokenizer_spec(spec, directory, manifest)
    meta = config.get("meta") if isinstance(config.get("meta"), dict) else {}
    return CheckpointInfo(directory, model_config, spec, meta, (directory / STATE_JSON).exists())


def _check_tokenizer_spec(spec: dict, directory: Path, manifest: dict) -> None:
    """config.json names the tokenizer file, and config.json is untrusted: the name must be a
    plain file name that the manifest lists (so its size and checksum are checked like every
    other file) and a regular file inside the checkpoint. An absolute path, ``../x``,
    ``/dev/zero``, a FIFO or a non-string are refused before anything opens them."""
    where = directory / CONFIG
    name = spec.get("file", TOKENIZER_FILE)
    if not isinstance(name, str) or name != Path(name).name or name in ("", ".", "..") or "\\" in name or "\x00" in name:
        raise CheckpointError(f"{where}: the tokenizer file must be a plain file name inside the checkpoint, got {str(name)[:80]!r}")
    if name not in manifest["files"] or name in (MANIFEST, CONFIG, WEIGHTS, STATE_TENSORS, STATE_JSON):
        raise CheckpointError(f"{where} names tokenizer file {name!r}, which the checkpoint's {MANIFEST} does not list as one")
    try:
        is_regular = stat.S_ISREG(os.stat(directory / name).st_mode)
    except OSError:
        raise CheckpointError(f"{directory / name} is missing; the checkpoint is incomplete") from None
    if not is_regular:
        raise CheckpointError(f"{directory / name} is not a regular file")
    kind = spec.get("kind")
    if kind is not None and kind not in KINDS:
        raise CheckpointError(f"{where}: unknown tokenizer kind {str(kind)[:40]!r}; this gpt2tui knows {', '.join(KINDS)}")
    if "vocab_size" in spec and (not isinstance(spec["vocab_size"], int) or isinstance(spec["vocab_size"], bool)):
        raise CheckpointError(f"{where}: the tokenizer's vocab_size must be a whole number")


@dataclass
class LoadedCheckpoint:
    model: GPT
    tokenizer: Tokenizer
    info: CheckpointInfo
    note: str | None = None  # what the user should know about the choice (best/ was damaged: the latest step instead)


def load_checkpoint(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    verify: bool = True,
    prefer: str = "best",
    root: str | Path = DEFAULT_CHECKPOINTS_ROOT,
) -> LoadedCheckpoint:
    """Load model (eval mode) and tokenizer from a checkpoint directory, or from a run's
    checkpoint folder (its ``best`` or latest step, see ``resolve_checkpoint``). When a run was
    named and its ``best/`` fails verification, its latest step is loaded instead and
    ``note`` says so (a damaged best must not make a run with good checkpoints unusable)."""
    directory = resolve_checkpoint(path, prefer=prefer, root=root)
    note = None
    if verify:
        try:
            verify_checkpoint(directory)
        except CheckpointError as exc:
            fallback = _latest_instead_of_best(path, directory)
            if fallback is None:
                raise
            verify_checkpoint(fallback)
            note = f"{directory} failed verification ({exc}); loaded the run's latest checkpoint {fallback} instead"
            directory = fallback
    info = read_checkpoint_info(directory)
    try:
        tokenizer = Tokenizer.load(directory, info.tokenizer_spec)
    except TokenizerError as exc:
        raise CheckpointError(f"{directory}: {exc}") from None
    if tokenizer.vocab_size > info.model_config.vocab_size:
        raise CheckpointError(
            f"{directory}: the tokenizer has {tokenizer.vocab_size} tokens but the model only "
            f"{info.model_config.vocab_size}; the tokenizer does not belong to this model"
        )
    _check_weights_size(info.model_config, directory / WEIGHTS)
    require_header_fits(info.model_config, directory / WEIGHTS)  # before GPT(...) allocates anything
    model = GPT(info.model_config)
    _load_weights(model, directory / WEIGHTS)
    require_finite_weights(model, directory / WEIGHTS)
    model.to(device).eval()
    return LoadedCheckpoint(model, tokenizer, info, note)


def _latest_instead_of_best(asked: str | Path, chosen: Path) -> Path | None:
    """The run's latest step when ``chosen`` is the ``best/`` that resolving a run picked
    (never when the user named a checkpoint directory itself)."""
    if chosen.name != BEST or is_checkpoint(asked):
        return None
    latest = CheckpointStore(chosen.parent, cleanup=False).latest()
    return latest if latest is not None and latest != chosen else None


def read_tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """{name: shape} from a safetensors file's header alone: no tensor data is read."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except Exception as exc:  # safetensors raises its own SafetensorError for bad headers
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """{name: shape} of the state dict ``GPT(config)`` would have, without building it: a
    one-block model on the meta device (no memory) gives the names and shapes, and the block's
    entries repeat for every layer."""
    with torch.device("meta"):
        one_block = GPT(config.replace(num_layers=1))
    shapes: dict[str, tuple[int, ...]] = {}
    block = "transformer.h.0."
    for key, value in one_block.state_dict().items():
        if key.startswith(block):
            for i in range(config.num_layers):
                shapes[f"transformer.h.{i}.{key[len(block):]}"] = tuple(value.shape)
        else:
            shapes[key] = tuple(value.shape)
    return shapes


_LAYER_KEY = re.compile(r"^transformer\.h\.(\d+)\.")


def require_header_fits(config: ModelConfig, path: Path) -> None:
    """Refuse, before building the model, a config.json that the weight file's header does not
    match (layer count first, then every name and shape), or whose model would not fit in this
    machine's memory: a damaged or crafted config must cost a header read, not minutes and GBs."""
    params = config.num_params()
    memory = _physical_memory()
    if memory is not None and params * 4 > memory:  # the model is built in fp32 before loading
        raise CheckpointError(
            f"{path.parent / CONFIG} describes a {params:,}-parameter model ({params * 4 / 2**30:.1f} GiB in fp32), "
            f"more than this machine's {memory / 2**30:.1f} GiB of memory"
        )
    shapes = read_tensor_shapes(path)
    layers = {int(m.group(1)) for key in shapes if (m := _LAYER_KEY.match(key))}
    if layers != set(range(config.num_layers)):
        found = f"{len(layers)} layer(s)" if layers == set(range(len(layers))) else f"layer indices {sorted(layers)[:5]}..."
        raise CheckpointError(f"{path} holds {found} but its config.json says num_layers={config.num_layers}")
    for a, b in (("lm_head.weight", "transformer.wte.weight"), ("transformer.wte.weight", "lm_head.weight")):
        if a not in shapes and b in shapes:  # the tied head is stored once, under either name
            shapes[a] = shapes[b]
    require_shapes_fit(expected_shapes(config), shapes, where=str(path), config="the config")


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None  # not knowable here (Windows): the size checks still bound the model


def require_finite_weights(model: torch.nn.Module, where: str | Path) -> None:
    """Refuse weights holding NaN or infinity: sampling from them fails inside torch
    ("probability tensor contains nan") and exporting them hands a broken model on."""
    for name, param in model.named_parameters():
        if not bool(torch.isfinite(param).all()):
            raise CheckpointError(
                f"{where} holds non-finite weights (NaN or infinity, first in {name}): the training diverged or the file "
                "was altered; use an earlier checkpoint"
            )


def _check_weights_size(config: ModelConfig, path: Path) -> None:
    try:
        size = path.stat().st_size
    except OSError:
        raise CheckpointError(f"{path} is missing; the checkpoint is incomplete") from None
    require_weights_size(config, size, where=str(path))


def require_weights_size(config: ModelConfig, size: int, *, where: str) -> None:
    """Refuse a config.json that asks for more parameters than ``size`` bytes of weights can
    hold, before allocating them: a damaged or crafted config must not exhaust memory."""
    params = config.num_params()
    # No dtype GPT-2 weights are stored in (ours or Hugging Face's) is smaller than 2 bytes a value.
    # The slack lets a small honest mismatch reach require_tensors_fit, whose error names the tensor.
    if params * 2 > size + _SIZE_SLACK:
        raise CheckpointError(
            f"{where} holds {size:,} bytes, too few for the {params:,}-parameter model its config.json describes"
        )


def _load_weights(model: GPT, path: Path) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own SafetensorError for bad headers
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None
    # The head is tied to the token embedding, so the file stores one of the two names.
    for a, b in (("lm_head.weight", "transformer.wte.weight"), ("transformer.wte.weight", "lm_head.weight")):
        if a not in tensors and b in tensors:
            tensors[a] = tensors[b]
    require_tensors_fit(expected, tensors, where=str(path), config="the config")
    model.load_state_dict(tensors, strict=True)


def require_tensors_fit(expected: dict[str, tuple[int, ...]], tensors: Mapping[str, Any], *, where: str, config: str) -> None:
    """Refuse (CheckpointError) tensors whose names or shapes differ from ``expected``: loading
    them would fail deep inside torch, or worse, broadcast into a model of another shape."""
    require_shapes_fit(expected, {key: tuple(t.shape) for key, t in tensors.items()}, where=where, config=config)


def require_shapes_fit(expected: dict[str, tuple[int, ...]], shapes: Mapping[str, tuple[int, ...]], *, where: str, config: str) -> None:
    """``require_tensors_fit`` on shapes alone (from a safetensors header, before any loading)."""
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{where} does not fit the model {config} describes: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for key, shape in expected.items():
        if tuple(shapes[key]) != shape:
            raise CheckpointError(f"{where}: {key} has shape {tuple(shapes[key])}, {config} needs {shape}")


def load_trainer_state(path: str | Path) -> Any:
    """The ``trainer_state`` given to ``save_checkpoint``, rebuilt from safetensors + JSON."""
    directory = Path(path)
    if not (directory / STATE_JSON).exists():
        raise CheckpointError(f"{directory} holds weights only (no trainer state), so training cannot resume from it")
    skeleton = _read_json(directory / STATE_JSON)
    if not isinstance(skeleton, dict) or "state" not in skeleton:
        raise CheckpointError(f"{directory / STATE_JSON} is malformed")
    try:
        with safe_open(str(directory / STATE_TENSORS), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise CheckpointError(f"{directory / STATE_TENSORS} is not readable ({exc})") from None
    try:
        return unpack_state(skeleton["state"], tensors)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{directory / STATE_JSON} does not match its tensors ({exc})") from None


# -- the trainer state's schema (what gpt2core.train writes as ``trainer_state``) ------------------

STATE_FORMAT = 1  # the trainer state's own version, inside the checkpoint's FORMAT_VERSION


def check_trainer_state(state: dict, where: Path) -> None:
    """Refuse a trainer state whose fields have the wrong types (a damaged or crafted
    trainer_state.json), naming the field, before anything is tokenised or written; a wrong
    type would otherwise surface as a TypeError deep inside torch mid-start-up."""

    def whole(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    def number(value: object) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    optimizer, sampler, schedule = state.get("optimizer"), state.get("sampler"), state.get("schedule")
    checks = {
        "step": whole(state.get("step")),
        "tokens_seen": whole(state.get("tokens_seen")),
        "train_time_s": number(state.get("train_time_s")) and state["train_time_s"] >= 0,
        "best_val_loss": state.get("best_val_loss") is None or number(state["best_val_loss"]),
        "last_val_loss": state.get("last_val_loss") is None or number(state["last_val_loss"]),
        "bad_in_a_row": whole(state.get("bad_in_a_row", 0)),
        "skipped": whole(state.get("skipped", 0)),
        "optimizer": isinstance(optimizer, dict) and isinstance(optimizer.get("state"), dict) and isinstance(optimizer.get("param_groups"), list),
        "scaler": state.get("scaler") is None or isinstance(state["scaler"], dict),
        "sampler": isinstance(sampler, dict) and isinstance(sampler.get("generator"), torch.Tensor) and whole(sampler.get("batches_drawn")),
        "schedule": isinstance(schedule, dict) and whole(schedule.get("warmup_steps")) and (schedule.get("horizon") is None or whole(schedule["horizon"])),
        "rng": isinstance(state.get("rng"), dict) and isinstance(state["rng"].get("torch"), torch.Tensor),
    }
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise CheckpointError(f"{where} is damaged: its field {bad[0]!r} is missing or has the wrong type; resume from another checkpoint")


def read_trainer_state(directory: Path) -> dict:
    """The trainer state to resume from, its format and field types checked (a one-line
    CheckpointError otherwise), before any tokenising or process group."""
    state = load_trainer_state(directory)
    found = state.get("format") if isinstance(state, dict) else None
    if found != STATE_FORMAT:
        raise CheckpointError(f"{directory} has trainer state format {found!r}; this gpt2tui reads {STATE_FORMAT}")
    check_trainer_state(state, directory / STATE_JSON)
    return state


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()



def resolve_checkpoint(path: str | Path, *, prefer: str = "best", root: str | Path = DEFAULT_CHECKPOINTS_ROOT) -> Path:
    """A checkpoint directory from what a user typed:

    - a checkpoint directory itself;
    - a run's checkpoint folder, e.g. ``checkpoints/my-run`` (``prefer`` 'best' takes ``best/``
      and falls back to the latest step; 'latest' takes the latest step);
    - a run name, looked up under ``root``; or ``latest``, the run under ``root`` that saved last.
    """
    path = Path(path)
    if is_checkpoint(path):
        return path
    if not path.exists() and len(path.parts) == 1:
        root = Path(root)
        if str(path) == "latest":
            runs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")] if root.is_dir() else []  # hidden: mid-deletion
            newest = max(
                ((c.stat().st_mtime, c) for r in runs if (c := CheckpointStore(r, cleanup=False).latest()) is not None),
                default=None,
            )
            if newest is None:
                raise CheckpointError(f"'latest' asks for the newest run, but {root} holds no checkpoints yet")
            path = newest[1].parent
        elif (root / path).exists():
            path = root / path
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: the path does not exist")
    if path.is_file():
        raise CheckpointError(f"{path} is a file; a gpt2tui checkpoint is a directory (with {MANIFEST} inside)")
    if is_checkpoint(path):
        return path
    store = CheckpointStore(path, cleanup=False)
    found = store.best() if prefer == "best" else None
    found = found or store.latest()
    if found is None:
        if (path / CONFIG).exists():
            raise CheckpointError(f"{path} has no {MANIFEST}: it is an incomplete checkpoint or not a gpt2tui one")
        raise CheckpointError(f"no complete checkpoint in {path}")
    return found


# -- one run's checkpoints --------------------------------------------------------------------------


class CheckpointStore:
    """The checkpoints of one run: ``step-NNNNNNNN/`` directories and ``best/``."""

    def __init__(self, root: str | Path, keep_last: int = 3, *, cleanup: bool = True):
        if keep_last < 2:
            raise ConfigError(f"keep_last must be at least 2 so a good checkpoint always survives, got {keep_last}")
        self.root = Path(root)
        self.keep_last = keep_last
        if cleanup and self.root.is_dir():
            self._recover()

    def _recover(self) -> None:
        """Undo what a crash mid-save left: put a swapped-out ``best`` back, drop dead temp dirs."""
        for path in self.root.iterdir():
            for prefix in (TMP_PREFIX, _OLD_PREFIX):
                if not path.name.startswith(prefix):
                    continue
                name, pid = parse_side_name(path.name[len(prefix) :])
                if pid is not None and pid_alive(pid) and pid != os.getpid():
                    continue  # another live process is writing it
                target = self.root / name
                if prefix == _OLD_PREFIX and not target.exists() and is_checkpoint(path):
                    os.rename(path, target)
                else:
                    shutil.rmtree(path, ignore_errors=True)

    def step_path(self, step: int) -> Path:
        return self.root / f"step-{step:08d}"

    def steps(self) -> list[tuple[int, Path]]:
        """Complete step checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.iterdir():
            match = STEP_DIR.match(path.name)
            if match and is_checkpoint(path):
                found.append((int(match.group(1)), path))
        return sorted(found)

    def latest(self) -> Path | None:
        steps = self.steps()
        return steps[-1][1] if steps else None

    def best(self) -> Path | None:
        path = self.root / BEST
        return path if is_checkpoint(path) else None

    def save(
        self,
        step: int,
        model: torch.nn.Module,
        tokenizer: Tokenizer,
        *,
        meta: Mapping[str, Any] | None = None,
        trainer_state: Any = None,
        is_best: bool = False,
    ) -> Path:
        """Write ``step-N``, link it as ``best`` if asked, then drop steps beyond ``keep_last``.
        Old checkpoints are removed only after the new one is complete."""
        path = save_checkpoint(self.step_path(step), model, tokenizer, meta={**(meta or {}), "step": step}, trainer_state=trainer_state)
        if is_best:
            link_checkpoint(path, self.root / BEST)
        self.prune()
        return path

    def prune(self) -> None:
        for _, path in self.steps()[: -self.keep_last]:
            delete_checkpoint(path)


def delete_checkpoint(path: Path) -> None:
    """Delete a checkpoint directory (or a run's folder of them) so that a crash half-way never
    leaves a directory with its manifest but without its weights: rename it out of the way
    first (atomic), then delete. What a crash leaves is a hidden ``.tmp-`` directory, which no
    loader takes for a checkpoint; ``CheckpointStore._recover`` removes those inside a run."""
    doomed = side_path(path, TMP_PREFIX)
    try:
        os.rename(path, doomed)
    except OSError:
        return  # already gone (another process pruned it)
    shutil.rmtree(doomed, ignore_errors=True)
