"""gpt2core: GPT-2 from scratch in PyTorch — model, tokenizers, data, training, generation, search.

Importable without Textual, Rich or click. Names load lazily (PEP 562), so that
``import gpt2core.rundir`` (which the console uses to list runs) does not pull in torch.

    >>> import gpt2core
    >>> model = gpt2core.load_model("checkpoints/my-run")     # or a Hugging Face GPT-2 directory
    >>> new_ids = gpt2core.generate(model, idx, max_new_tokens=50, temperature=0.8)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "GPT": "gpt2core.model",
    "KVCache": "gpt2core.model",
    "ModelConfig": "gpt2core.config",
    "SampleConfig": "gpt2core.config",
    "PRESETS": "gpt2core.config",
    "preset": "gpt2core.config",
    "Tokenizer": "gpt2core.tokenizer",
    "train_bpe": "gpt2core.tokenizer",
    "train_char": "gpt2core.tokenizer",
    "gpt2_tokenizer": "gpt2core.tokenizer",
    "save_checkpoint": "gpt2core.checkpoint",
    "load_checkpoint": "gpt2core.checkpoint",
    "verify_checkpoint": "gpt2core.checkpoint",
    "CheckpointStore": "gpt2core.checkpoint",
    "GPT2Error": "gpt2core.errors",
    "ConfigError": "gpt2core.errors",
    "CheckpointError": "gpt2core.errors",
    "TokenizerError": "gpt2core.errors",
    "DataError": "gpt2core.errors",
    "HubUnavailableError": "gpt2core.errors",
    "load_model": "gpt2core.loading",
    "load_model_and_tokenizer": "gpt2core.loading",
    "resolve_device": "gpt2core.loading",
    "load_hf": "gpt2core.hf",
    "export_hf": "gpt2core.hf",
    "generate": "gpt2core.generation",
    "stream_text": "gpt2core.generation",
    "TextStream": "gpt2core.generation",
    "iter_tokens": "gpt2core.generation",
    "sample_next_token": "gpt2core.generation",
    "filter_logits": "gpt2core.generation",
    "apply_repetition_penalty": "gpt2core.generation",
    "DataConfig": "gpt2core.config",
    "TrainConfig": "gpt2core.config",
    "RunConfig": "gpt2core.config",
    "build_run_config": "gpt2core.defaults",
    "Trainer": "gpt2core.train",
    "TrainResult": "gpt2core.train",
    "prepare_data": "gpt2core.data",
    "BatchSampler": "gpt2core.data",
    "evaluate_checkpoint": "gpt2core.evaluate",
    "evaluate_tokens": "gpt2core.evaluate",
}

# The original specification's names for our configs, so code written against it runs unchanged.
_SPEC_ALIASES: dict[str, str] = {
    "GPT2Config": "ModelConfig",
    "TrainingConfig": "TrainConfig",
    "InferenceConfig": "SampleConfig",
}

__all__ = sorted([*_EXPORTS, *_SPEC_ALIASES])


def __getattr__(name: str) -> Any:
    target = _SPEC_ALIASES.get(name, name)
    module = _EXPORTS.get(target)
    if module is None:
        raise AttributeError(f"module 'gpt2core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), target)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
