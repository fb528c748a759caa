"""Shared fixtures: tiny real models and tokenizers, and a machine-friendly torch set-up.

Tests never touch the network: HF_HUB_OFFLINE makes every hub access fail fast (a test that
needs the real probe path clears it itself). Models are tiny (micro preset) so the whole
suite runs on two CPU cores in minutes.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SAMPLE_TEXT = (
    "The quick brown fox jumps over the lazy dog. "
    "A journey of a thousand miles begins with a single step.\n"
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer "
    "the slings and arrows of outrageous fortune, or to take arms against a sea of troubles.\n"
) * 20


@pytest.fixture(scope="session")
def sample_text() -> str:
    return SAMPLE_TEXT


@pytest.fixture(scope="session")
def char_tokenizer():
    from gpt2core.tokenizer import train_char

    return train_char([SAMPLE_TEXT])


@pytest.fixture(scope="session")
def bpe_tokenizer():
    from gpt2core.tokenizer import train_bpe

    return train_bpe([SAMPLE_TEXT], 300)


@pytest.fixture
def micro_model(char_tokenizer):
    from gpt2core.config import preset
    from gpt2core.model import GPT

    torch.manual_seed(0)
    return GPT(preset("micro").replace(vocab_size=char_tokenizer.vocab_size)).eval()


@pytest.fixture
def micro_checkpoint(tmp_path, micro_model, char_tokenizer):
    """``micro_model`` saved as a run's checkpoint folder: tmp_path/checkpoints/demo, step 3, best."""
    from gpt2core.checkpoint import CheckpointStore

    folder = tmp_path / "checkpoints" / "demo"
    CheckpointStore(folder).save(3, micro_model, char_tokenizer, is_best=True)
    return folder


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tiny models on one thread: the micro model gains nothing from a second
    one, and on a busy 2-core machine the threads' spinning costs seconds per run."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    """A folder with SAMPLE_TEXT as corpus.txt, and room for a shared token cache (cache/)."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "corpus.txt").write_text(SAMPLE_TEXT)
    return root


@pytest.fixture
def sharp_model(char_tokenizer):
    """A micro model with weights scaled up 5x: its greedy choices depend on the whole context
    (at GPT-2's initial scale a random model repeats one token whatever came before), so a
    wrong cache or window shows up as different tokens."""
    from gpt2core.config import preset
    from gpt2core.model import GPT

    torch.manual_seed(0)
    model = GPT(preset("micro").replace(vocab_size=char_tokenizer.vocab_size)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(5)
    return model
