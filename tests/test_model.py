import math

import pytest
import torch

from gpt2core.config import PRESETS, ModelConfig, preset
from gpt2core.errors import ConfigError
from gpt2core.model import GPT


def test_gpt2_preset_has_124m_parameters():
    assert PRESETS["gpt2"].model.num_params() == 124_439_808


@pytest.mark.parametrize("name", ["micro", "tiny", "small"])
def test_config_count_matches_built_model(name):
    config = preset(name)
    assert GPT(config).num_params() == config.num_params()


def test_forward_shapes_and_loss(micro_model):
    V = micro_model.config.vocab_size
    idx = torch.randint(0, V, (3, 11))
    logits, no_loss = micro_model(idx)
    assert no_loss is None
    assert logits.shape == (3, 11, V)
    logits2, loss = micro_model(idx, idx)
    assert torch.equal(logits, logits2)
    # An untrained model is close to uniform over the vocabulary.
    assert abs(loss.item() - math.log(V)) < 0.5


def test_head_is_tied_to_token_embedding(micro_model):
    assert micro_model.lm_head.weight is micro_model.transformer.wte.weight


def test_residual_projections_are_scaled():
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=64, context_length=16, d_model=256, num_heads=4, num_layers=8, d_ff=1024))
    expected = 0.02 / math.sqrt(2 * 8)
    std = model.transformer.h[0].attn.c_proj.weight.std().item()
    assert abs(std - expected) / expected < 0.1
    assert abs(model.transformer.h[0].mlp.c_fc.weight.std().item() - 0.02) < 0.002


def test_causality(micro_model):
    idx = torch.randint(0, micro_model.config.vocab_size, (1, 12))
    changed = idx.clone()
    changed[0, 8] = (changed[0, 8] + 1) % micro_model.config.vocab_size
    a, b = micro_model(idx)[0], micro_model(changed)[0]
    assert torch.allclose(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_kv_cache_matches_full_forward(micro_model):
    idx = torch.randint(0, micro_model.config.vocab_size, (2, 20))
    full = micro_model(idx)[0]
    cache = micro_model.new_cache()
    pieces = [micro_model(idx[:, :7], cache=cache)[0]]
    for t in range(7, 12):
        pieces.append(micro_model(idx[:, t : t + 1], cache=cache)[0])
    pieces.append(micro_model(idx[:, 12:], cache=cache)[0])  # a multi-token chunk after a cached prefix
    assert cache.length == 20
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)


def test_too_long_sequence_is_refused(micro_model):
    with pytest.raises(ValueError, match="context length"):
        micro_model(torch.zeros(1, micro_model.config.context_length + 1, dtype=torch.long))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"num_heads": 5}, "must divide d_model"),
        ({"d_model": 0}, "d_model must be a positive integer"),
        ({"num_layers": -1}, "num_layers must be a positive integer"),
        ({"dropout": 1.5}, "dropout must be in"),
        ({"vocab_size": 2.5}, "vocab_size must be a positive integer"),
    ],
)
def test_impossible_configs_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**{**ModelConfig().to_dict(), **changes})


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="gpt2-medium"):
        preset("huge")
