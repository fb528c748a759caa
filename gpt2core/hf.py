"""Import and export of Hugging Face GPT-2 models (``transformers.GPT2LMHeadModel``).

Our module names are GPT-2's, so a Hugging Face state dict maps onto ``GPT`` key for key. The
differences handled here:

- Hugging Face's ``Conv1D`` stores its weight as (in, out); ``nn.Linear`` stores (out, in), so
  the four projection weights of every block are transposed on the way in and out;
- checkpoints saved from ``GPT2Model`` have no ``transformer.`` prefix, and old ones carry the
  causal-mask buffers ``attn.bias`` / ``attn.masked_bias``, which are not weights;
- the LM head is tied to the token embedding unless the config says ``tie_word_embeddings:
  false`` and the file holds a different ``lm_head.weight``; such a model is untied in memory;
- Hugging Face GPT-2 always has biases, so a ``bias=False`` model exports zero biases (the same
  function).

Weights are read from safetensors, or from ``pytorch_model.bin`` with ``torch.load(weights_only=True)``
(no arbitrary unpickling). Hub names go through ``gpt2core.hub.from_cache_or_hub`` so that an
offline machine fails in seconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from gpt2core.atomic import side_path
from gpt2core.checkpoint import _unwrap, require_finite_weights, require_tensors_fit, require_weights_size
from gpt2core.config import ModelConfig
from gpt2core.errors import CheckpointError, ConfigError, GPT2Error
from gpt2core.safe_json import UnreadableJSON, read_json_file
from gpt2core.model import GPT
from gpt2core.tokenizer import EOS_TOKEN, TOKENIZER_FILE, Tokenizer, gpt2_tokenizer

# The GPT-2 checkpoints OpenAI released (plus the distilled one), by their short hub names.
HUB_MODELS = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2")
# Hugging Face's names for the two GELU forms a model here may use (ModelConfig.gelu): its
# tanh-approximation activations (GPT-2's), and the exact erf one; export writes the first of each.
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
ERF_GELUS = ("gelu",)
# Weights stored by Hugging Face's Conv1D as (in, out).
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
MASK_BUFFERS = re.compile(r"\.attn\.(bias|masked_bias)$")  # causal masks, not weights
HF_CONFIG = "config.json"
SAFETENSORS = "model.safetensors"
PYTORCH_BIN = "pytorch_model.bin"
_INDEX_SUFFIX = ".index.json"
_HUB_HINT = "pass a local Hugging Face GPT-2 directory, or one of your checkpoints (gpt2tui train makes one offline)"


@dataclass
class HFImport:
    """A Hugging Face GPT-2 loaded as our model."""

    model: GPT
    tokenizer: Tokenizer | None
    directory: Path  # where the files were read (a hub name's local snapshot)
    tokenizer_note: str = ""  # why there is no tokenizer, when there is none


# -- config ---------------------------------------------------------------------------------------


def model_config_from_hf(hf: Mapping[str, Any], where: str = "the config") -> ModelConfig:
    """Our ModelConfig from a Hugging Face GPT-2 config.json, refusing what GPT-2 is not."""
    model_type = hf.get("model_type")
    if model_type != "gpt2":
        raise CheckpointError(
            f"{where} describes a {model_type or 'model of unknown type'!r} model; only GPT-2 (model_type 'gpt2') can be loaded"
        )
    activation = hf.get("activation_function", "gelu_new")
    if activation not in TANH_GELUS + ERF_GELUS:
        raise CheckpointError(
            f"{where} uses activation {activation!r}; this GPT-2 implements GELU ({', '.join(TANH_GELUS + ERF_GELUS)})"
        )
    for flag, wanted, why in (
        ("scale_attn_weights", True, "attention scores scaled by 1/sqrt(head size)"),
        ("scale_attn_by_inverse_layer_idx", False, "no per-layer attention scaling"),
        ("add_cross_attention", False, "no cross-attention"),
    ):
        if bool(hf.get(flag, wanted)) != wanted:
            raise CheckpointError(f"{where} sets {flag}={hf.get(flag)!r}; this GPT-2 supports only {why}")
    n_embd = hf.get("n_embd", 768)
    n_inner = hf.get("n_inner")  # None means GPT-2's 4 * n_embd
    if n_inner is None and isinstance(n_embd, int):
        n_inner = 4 * n_embd
    try:
        return ModelConfig(
            vocab_size=hf.get("vocab_size", 50257),
            context_length=hf.get("n_positions", hf.get("n_ctx", 1024)),
            d_model=n_embd,
            num_heads=hf.get("n_head", 12),
            num_layers=hf.get("n_layer", 12),
            d_ff=n_inner,
            dropout=float(hf.get("resid_pdrop", 0.1)),
            bias=True,
            gelu="tanh" if activation in TANH_GELUS else "erf",
            layer_norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        )
    except (ConfigError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{where} is not a usable GPT-2 config: {exc}") from None


def hf_config_from_model(config: ModelConfig, *, tied: bool, eos_id: int | None, dtype: torch.dtype) -> dict[str, Any]:
    """A config.json that ``GPT2LMHeadModel.from_pretrained`` reads as this model's shape."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.context_length,
        "n_ctx": config.context_length,  # older transformers releases read this name
        "n_embd": config.d_model,
        "n_head": config.num_heads,
        "n_layer": config.num_layers,
        "n_inner": config.d_ff,
        "activation_function": TANH_GELUS[0] if config.gelu == "tanh" else ERF_GELUS[0],
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "layer_norm_epsilon": config.layer_norm_eps,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "tie_word_embeddings": tied,
        "bos_token_id": eos_id,  # GPT-2 uses <|endoftext|> for both
        "eos_token_id": eos_id,
        "torch_dtype": str(dtype).removeprefix("torch."),
    }


# -- reading weights ------------------------------------------------------------------------------


def is_hf_directory(path: str | Path) -> bool:
    """A directory with a Hugging Face config.json (and no gpt2tui manifest)."""
    path = Path(path)
    if not (path / HF_CONFIG).is_file() or (path / "manifest.json").exists():
        return False
    try:
        config = read_json_file(path / HF_CONFIG, max_bytes=16 << 20)
    except UnreadableJSON:
        return False
    return isinstance(config, dict) and "model_type" in config


def _weight_files(directory: Path) -> list[Path]:
    """The weight files of a Hugging Face directory, safetensors first, shards included."""
    for single in (SAFETENSORS, PYTORCH_BIN):
        if (directory / single).is_file():
            return [directory / single]
        index = directory / (single + _INDEX_SUFFIX)
        if index.is_file():
            try:
                weight_map = read_json_file(index, max_bytes=64 << 20)["weight_map"]
                names = sorted(set(weight_map.values()))
            except (UnreadableJSON, KeyError, TypeError, AttributeError):
                raise CheckpointError(f"{index} is not a valid weight index") from None
            for name in names:  # shard names come from the index: never a path out of the directory
                if not isinstance(name, str) or name != Path(name).name or name in ("", ".", "..") or "\\" in name:
                    raise CheckpointError(f"{index} names weight file {str(name)[:80]!r}, which is not a file inside {directory}")
            return [directory / name for name in names]
    raise CheckpointError(f"{directory} has no {SAFETENSORS} or {PYTORCH_BIN}: it holds no GPT-2 weights")


def _read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing (named by the weight index)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        # weights_only: tensors and plain containers only, never arbitrary pickled objects
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors and the unpickler raise many types for bad bytes
        raise CheckpointError(f"{path} is not a readable weight file ({type(exc).__name__}: {exc})") from None
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return loaded


def _to_our_keys(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face names -> ours: add the ``transformer.`` prefix, drop mask buffers, transpose Conv1D."""
    ours: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        if MASK_BUFFERS.search(key):
            continue
        if not key.startswith(("transformer.", "lm_head.")):
            key = "transformer." + key  # saved from GPT2Model, which has no prefix
        if key.endswith(CONV1D_WEIGHTS):
            tensor = tensor.t()  # (in, out) -> (out, in)
        ours[key] = tensor
    return ours


def load_hf_weights(model: GPT, tensors: Mapping[str, torch.Tensor], *, tie: bool, where: str) -> None:
    """Copy Hugging Face tensors into ``model``; an untied head gets its own parameter."""
    tensors = _to_our_keys(tensors)
    head = tensors.pop("lm_head.weight", None)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != "lm_head.weight"}
    require_tensors_fit(expected, tensors, where=where, config="its config.json")
    wte = tensors["transformer.wte.weight"]
    if not tie:
        if head is None:
            raise CheckpointError(f"{where}: config.json says tie_word_embeddings is false but there is no lm_head.weight")
        if tuple(head.shape) != tuple(wte.shape):
            raise CheckpointError(f"{where}: lm_head.weight has shape {tuple(head.shape)}, expected {tuple(wte.shape)}")
    with torch.no_grad():
        for key, param in model.state_dict(keep_vars=True).items():
            if key != "lm_head.weight":
                param.copy_(tensors[key])
        if not tie and not torch.equal(head, wte):
            # The head differs from the embedding: give it its own parameter (our GPT ties by default).
            model.lm_head.weight = nn.Parameter(head.to(model.lm_head.weight.dtype).clone())


# -- loading ---------------------------------------------------------------------------------------


def looks_like_hub_name(name: str) -> bool:
    """A name that means a hub model: a GPT-2 release, ``hf:owner/name``, or ``owner/name``
    whose first part is not a local directory (so a mistyped local path is not sent to the hub)."""
    if name in HUB_MODELS or name.startswith("hf:"):
        return True
    parts = name.split("/")
    return (
        len(parts) == 2
        and all(re.fullmatch(r"[A-Za-z0-9][\w.-]*", p) for p in parts)
        and not Path(parts[0]).exists()
    )


def load_hf(source: str | Path) -> HFImport:
    """A Hugging Face GPT-2 from a local directory or a hub name, as our model (eval, CPU)."""
    directory = Path(source)
    if not directory.is_dir():
        name = str(source).removeprefix("hf:")
        what = f"the Hugging Face model {name!r}"
        if name not in HUB_MODELS and not str(source).startswith("hf:"):
            what += " (there is no local path of that name either)"
        directory = _snapshot(name, what)
    config_path = directory / HF_CONFIG
    try:
        hf_config = read_json_file(config_path, max_bytes=16 << 20)
    except UnreadableJSON as exc:
        if exc.missing:
            raise CheckpointError(f"{directory} has no {HF_CONFIG}; it is not a Hugging Face model directory") from None
        raise CheckpointError(str(exc)) from None
    if not isinstance(hf_config, dict):
        raise CheckpointError(f"{config_path} is malformed: expected a JSON object")
    config = model_config_from_hf(hf_config, where=str(config_path))
    tensors: dict[str, torch.Tensor] = {}
    files = _weight_files(directory)
    for path in files:
        tensors.update(_read_weight_file(path))
    require_weights_size(config, sum(path.stat().st_size for path in files), where=str(directory))
    model = GPT(config)
    load_hf_weights(model, tensors, tie=bool(hf_config.get("tie_word_embeddings", True)), where=str(directory))
    require_finite_weights(model, directory)
    model.eval()
    tokenizer, note = _tokenizer_beside(directory, config.vocab_size)
    return HFImport(model, tokenizer, directory, note)


def _tokenizer_beside(directory: Path, model_vocab: int) -> tuple[Tokenizer | None, str]:
    """The tokenizer saved next to the weights; GPT-2's own (from the local cache) when there is none
    and the vocabulary is GPT-2's. Returns (tokenizer or None, why there is none)."""
    try:
        if (directory / TOKENIZER_FILE).is_file():
            tokenizer = Tokenizer.load(directory)
        elif (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
            tokenizer = gpt2_tokenizer(str(directory))
        elif model_vocab == 50257:
            tokenizer = gpt2_tokenizer("gpt2")
        else:
            return None, f"{directory} has no tokenizer files (tokenizer.json, or vocab.json + merges.txt)"
    except GPT2Error as exc:  # TokenizerError or HubUnavailableError
        return None, str(exc)
    if tokenizer.vocab_size > model_vocab:
        return None, f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {model_vocab}"
    return tokenizer, ""


def _snapshot(name: str, what: str) -> Path:
    """Local snapshot of hub model ``name`` (config, weights, tokenizer), from the cache or the hub."""
    from huggingface_hub import snapshot_download

    from gpt2core.hub import from_cache_or_hub

    common = [HF_CONFIG, TOKENIZER_FILE, "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json"]

    def load(local_only: bool) -> Path:
        # safetensors first; a repository without them gets its pytorch_model.bin instead
        path = Path(snapshot_download(name, allow_patterns=[*common, "model*.safetensors*"], local_files_only=local_only))
        if not _has_weights(path):
            path = Path(snapshot_download(name, allow_patterns=[*common, "pytorch_model*.bin*"], local_files_only=local_only))
        return path

    return from_cache_or_hub(
        load,
        what,
        _HUB_HINT,
        complete=lambda path: (path / HF_CONFIG).is_file() and _has_weights(path),
    )


def _has_weights(directory: Path) -> bool:
    try:
        _weight_files(directory)
        return True
    except CheckpointError:
        return False


# -- export ----------------------------------------------------------------------------------------


def hf_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Our weights under Hugging Face's names and layouts (Conv1D (in, out), zero biases where
    ``bias=False``); ``lm_head.weight`` only when the head is untied."""
    gpt: GPT = _unwrap(model)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in gpt.state_dict().items():
        if key == "lm_head.weight":
            continue
        if key.endswith(CONV1D_WEIGHTS):
            tensor = tensor.t()  # (out, in) -> (in, out)
        out[key] = tensor.detach().cpu().contiguous()
    if not gpt.config.bias:
        for name, module in gpt.named_modules():
            if isinstance(module, (nn.Linear, nn.LayerNorm)) and name != "lm_head" and f"{name}.bias" not in out:
                width = module.out_features if isinstance(module, nn.Linear) else module.normalized_shape[0]
                out[f"{name}.bias"] = torch.zeros(width, dtype=out[f"{name}.weight"].dtype)
    if not is_tied(gpt):
        out["lm_head.weight"] = gpt.lm_head.weight.detach().cpu().contiguous()
    return out


def is_tied(model: GPT) -> bool:
    return model.lm_head.weight is model.transformer.wte.weight


def _checkpoint_at_or_above(directory: Path) -> Path | None:
    """The gpt2tui checkpoint ``directory`` is or lies in, or would replace (``best`` or
    ``step-N`` in a run's checkpoint folder), else None."""
    from gpt2core.checkpoint import BEST, STEP_DIR, CheckpointStore, is_checkpoint

    resolved = directory.resolve()
    for folder in (resolved, *resolved.parents):
        if is_checkpoint(folder):
            return folder
    store = CheckpointStore(resolved.parent, cleanup=False)
    if (resolved.name == BEST or STEP_DIR.match(resolved.name)) and (store.steps() or store.best()):
        return resolved
    return None


def check_export_target(directory: str | Path, *, overwrite: bool = False) -> Path:
    """Refuse a file, or a non-empty directory unless ``overwrite`` (users' files are not replaced by accident)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"{directory} is a file; export writes a directory")
    inside = _checkpoint_at_or_above(directory)
    if inside is not None:  # --force replaces files by name: it would overwrite the checkpoint's config.json and weights
        raise CheckpointError(f"{directory} is inside the gpt2tui checkpoint {inside}; export never writes into a checkpoint, choose another --out")
    if directory.is_dir() and any(directory.iterdir()) and not overwrite:
        raise CheckpointError(f"{directory} is not empty; choose a new directory or overwrite it on purpose (--force)")
    return directory


def export_hf(model: nn.Module, directory: str | Path, tokenizer: Tokenizer | None = None, *, overwrite: bool = False) -> Path:
    """Write ``model`` (and its tokenizer) as a Hugging Face GPT-2 directory:

    ``config.json`` + ``model.safetensors`` that ``GPT2LMHeadModel.from_pretrained`` loads, and
    ``tokenizer.json`` + ``tokenizer_config.json`` that ``AutoTokenizer.from_pretrained`` loads.
    ``tokenizer`` defaults to ``model.tokenizer``. A non-empty ``directory`` is refused unless
    ``overwrite``; the files are written beside it first, so a failure leaves it as it was.
    """
    from safetensors.torch import save_file

    gpt: GPT = _unwrap(model)
    tokenizer = tokenizer if tokenizer is not None else getattr(gpt, "tokenizer", None)
    directory = check_export_target(directory, overwrite=overwrite)
    if tokenizer is not None and tokenizer.vocab_size > gpt.config.vocab_size:
        raise CheckpointError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {gpt.config.vocab_size}; it does not belong to it"
        )
    weights = hf_state_dict(gpt)
    eos_id = tokenizer.eos_id if tokenizer is not None else (50256 if gpt.config.vocab_size == 50257 else None)
    config = hf_config_from_model(gpt.config, tied=is_tied(gpt), eos_id=eos_id, dtype=weights["transformer.wte.weight"].dtype)

    tmp = side_path(directory)
    try:
        tmp.mkdir(parents=True)
        save_file(weights, str(tmp / SAFETENSORS), metadata={"format": "pt"})  # transformers checks "format"
        (tmp / HF_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if tokenizer is not None:
            _save_hf_tokenizer(tokenizer, tmp, gpt.config.context_length)
        if not directory.exists():
            os.rename(tmp, directory)
        else:
            for path in tmp.iterdir():
                os.replace(path, directory / path.name)
    except OSError as exc:
        raise CheckpointError(f"could not write {directory}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def _save_hf_tokenizer(tokenizer: Tokenizer, directory: Path, context_length: int) -> None:
    """tokenizer.json (our backend unchanged) + tokenizer_config.json naming a class every
    transformers release knows: GPT2TokenizerFast for byte-level BPE, PreTrainedTokenizerFast for chars."""
    from transformers import GPT2TokenizerFast, PreTrainedTokenizerFast

    cls = PreTrainedTokenizerFast if tokenizer.kind == "char" else GPT2TokenizerFast
    hf = cls(
        tokenizer_object=tokenizer.backend,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        model_max_length=context_length,
    )
    hf.save_pretrained(str(directory))
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    # transformers 5 writes its internal "TokenizersBackend", which 4.x cannot resolve
    config["tokenizer_class"] = "PreTrainedTokenizerFast" if tokenizer.kind == "char" else "GPT2TokenizerFast"
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
