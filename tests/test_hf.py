"""Hugging Face interop against real transformers models (randomly initialised, no download)."""

import json
import time

import pytest
import torch
from safetensors.torch import save_file

transformers = pytest.importorskip("transformers")
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel  # noqa: E402

from gpt2core.checkpoint import CheckpointStore  # noqa: E402
from gpt2core.config import ModelConfig, preset  # noqa: E402
from gpt2core.errors import CheckpointError, HubUnavailableError  # noqa: E402
from gpt2core.generation import generate  # noqa: E402
from gpt2core.hf import export_hf, load_hf, model_config_from_hf  # noqa: E402
from gpt2core.loading import load_model, load_model_and_tokenizer  # noqa: E402
from gpt2core.model import GPT  # noqa: E402

transformers.logging.set_verbosity_error()

# (name, GPT2Config fields, how the weights are saved)
SHAPES = [
    # vocab not a multiple of 64, n_inner None (4 * n_embd), save_pretrained's safetensors with the prefix
    ("odd-vocab", dict(vocab_size=101, n_positions=48, n_embd=48, n_layer=2, n_head=4), "save_pretrained"),
    # many small heads, n_inner set, pytorch_model.bin with the old mask buffers
    ("bin-8-heads", dict(vocab_size=67, n_positions=40, n_embd=32, n_layer=3, n_head=8, n_inner=80), "bin"),
    # GPT2Model weights (no `transformer.` prefix), another epsilon and tanh-GELU spelling, one head
    (
        "no-prefix",
        dict(vocab_size=50, n_positions=40, n_embd=24, n_layer=2, n_head=1, layer_norm_epsilon=1e-6, activation_function="gelu_pytorch_tanh"),
        "no-prefix",
    ),
    # the exact (erf) GELU: loads as gelu = "erf" and exports as "gelu" again
    ("erf-gelu", dict(vocab_size=53, n_positions=24, n_embd=32, n_layer=2, n_head=2, activation_function="gelu"), "save_pretrained"),
]


def make_hf(fields, seed=0):
    torch.manual_seed(seed)
    config = GPT2Config(**fields, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # non-zero biases and LayerNorm parameters, so a mix-up shows
        for name, param in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model


def save_hf(model, directory, how):
    directory.mkdir(parents=True, exist_ok=True)
    if how == "save_pretrained":
        model.save_pretrained(directory)
        return directory
    model.config.save_pretrained(directory)
    if how == "bin":
        state = {k: v.clone() for k, v in model.state_dict().items()}
        n = model.config.n_positions
        for i in range(model.config.n_layer):  # what checkpoints from older transformers carry
            state[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
            state[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
        torch.save(state, directory / "pytorch_model.bin")
    elif how == "no-prefix":
        save_file({k: v.contiguous() for k, v in model.transformer.state_dict().items()}, str(directory / "model.safetensors"))
    return directory


@pytest.fixture(params=SHAPES, ids=[s[0] for s in SHAPES])
def hf_pair(request, tmp_path):
    name, fields, how = request.param
    hf = make_hf(fields)
    directory = save_hf(hf, tmp_path / name, how)
    return hf, load_hf(directory).model, directory


def tokens(vocab, batch, length, seed=0):
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_logits_match_transformers(hf_pair):
    hf, ours, _ = hf_pair
    assert ours.config.gelu == ("erf" if hf.config.activation_function == "gelu" else "tanh")
    idx = tokens(hf.config.vocab_size, 3, hf.config.n_positions)
    with torch.no_grad():
        expected = hf(idx).logits
    assert not ours.training
    assert torch.allclose(ours(idx)[0], expected, atol=1e-5, rtol=0)


def test_greedy_continuations_match_transformers_generate(hf_pair):
    hf, ours, _ = hf_pair
    idx = tokens(hf.config.vocab_size, 2, 7, seed=1)
    n = hf.config.n_positions - 7
    for penalty in (1.0, 1.3):
        with torch.no_grad():
            expected = hf.generate(
                idx, do_sample=False, max_new_tokens=n, min_new_tokens=n, repetition_penalty=penalty, pad_token_id=0
            )[:, 7:]
        # transformers penalises every earlier token: window 0 (all)
        got = generate(ours, idx, max_new_tokens=n, temperature=0, repetition_penalty=penalty, repetition_window=0, precision="fp32")
        assert torch.equal(got, expected), f"repetition_penalty={penalty}"


def test_export_round_trips_through_from_pretrained(hf_pair, tmp_path):
    hf, ours, _ = hf_pair
    out = export_hf(ours, tmp_path / "exported")
    reloaded = GPT2LMHeadModel.from_pretrained(out).eval()
    idx = tokens(hf.config.vocab_size, 2, 16, seed=2)
    with torch.no_grad():
        assert torch.allclose(reloaded(idx).logits, hf(idx).logits, atol=1e-6, rtol=0)
    assert load_hf(out).model.config == ours.config


def test_our_model_and_tokenizer_export_to_transformers(tmp_path, bpe_tokenizer, char_tokenizer):
    for tokenizer in (bpe_tokenizer, char_tokenizer):
        torch.manual_seed(0)
        # padded vocabulary (model larger than the tokenizer) and no biases: exported as zero biases
        model = GPT(preset("micro").replace(vocab_size=tokenizer.vocab_size + 3, bias=False)).eval()
        out = export_hf(model, tmp_path / tokenizer.kind, tokenizer)
        hf = GPT2LMHeadModel.from_pretrained(out).eval()
        idx = tokens(tokenizer.vocab_size, 2, 20)
        with torch.no_grad():
            assert torch.allclose(hf(idx).logits, model(idx)[0], atol=1e-5, rtol=0)
        auto = AutoTokenizer.from_pretrained(out)
        text = "To be, or not to be — naïve 😀\n  twice"
        assert auto.encode(text) == tokenizer.encode(text)
        assert auto.decode(tokenizer.encode(text)) == tokenizer.decode(tokenizer.encode(text))
        assert auto.eos_token_id == tokenizer.eos_id
        # and back: the exported directory loads as our model with its tokenizer
        again, again_tokenizer, _ = load_model_and_tokenizer(out)
        assert torch.allclose(again(idx)[0], model(idx)[0], atol=1e-6)
        assert again_tokenizer.encode(text) == tokenizer.encode(text)


def test_untied_head_is_kept_apart(tmp_path):
    hf = make_hf(dict(vocab_size=70, n_positions=16, n_embd=16, n_layer=1, n_head=2, tie_word_embeddings=False))
    with torch.no_grad():
        hf.lm_head.weight.copy_(torch.randn_like(hf.lm_head.weight))
    assert not torch.equal(hf.lm_head.weight, hf.transformer.wte.weight)
    hf.save_pretrained(tmp_path / "untied")
    ours = load_hf(tmp_path / "untied").model
    idx = tokens(70, 2, 16)
    with torch.no_grad():
        assert torch.allclose(ours(idx)[0], hf(idx).logits, atol=1e-5, rtol=0)
    reloaded = GPT2LMHeadModel.from_pretrained(export_hf(ours, tmp_path / "out")).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(idx).logits, hf(idx).logits, atol=1e-6, rtol=0)


def test_config_mapping():
    config = model_config_from_hf({"model_type": "gpt2", "n_embd": 64, "n_head": 4, "n_layer": 3, "n_positions": 128, "vocab_size": 1000})
    assert config == ModelConfig(vocab_size=1000, context_length=128, d_model=64, num_heads=4, num_layers=3, d_ff=256, dropout=0.1)
    assert model_config_from_hf({"model_type": "gpt2", "n_embd": 64, "n_head": 4, "n_inner": 100}).d_ff == 100


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"model_type": "llama"}, "only GPT-2"),
        ({"activation_function": "relu"}, "implements GELU"),
        ({"activation_function": "quick_gelu"}, "implements GELU"),
        ({"scale_attn_by_inverse_layer_idx": True}, "per-layer attention scaling"),
        ({"n_head": 5}, "must divide"),
    ],
)
def test_non_gpt2_configs_are_refused(tmp_path, changes, message):
    directory = save_hf(make_hf(dict(vocab_size=50, n_positions=8, n_embd=16, n_layer=1, n_head=2)), tmp_path / "m", "save_pretrained")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, **changes}))
    with pytest.raises(CheckpointError, match=message):
        load_hf(directory)


def test_broken_weights_are_clear_errors(tmp_path):
    directory = save_hf(make_hf(dict(vocab_size=50, n_positions=8, n_embd=16, n_layer=1, n_head=2)), tmp_path / "m", "save_pretrained")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "n_layer": 2}))
    with pytest.raises(CheckpointError, match="missing"):
        load_hf(directory)
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="not a readable weight file"):
        load_hf(directory)
    (directory / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors or pytorch_model.bin"):
        load_hf(directory)


def test_config_asking_for_more_than_the_weights_hold_is_refused(tmp_path):
    directory = save_hf(make_hf(dict(vocab_size=50, n_positions=8, n_embd=16, n_layer=1, n_head=2)), tmp_path / "m", "save_pretrained")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "n_layer": 48, "n_embd": 8192, "n_head": 64}))
    with pytest.raises(CheckpointError, match="too few for the .*-parameter model its config.json describes"):
        load_hf(directory)  # 38.7B parameters would be ~155 GB: refused, never allocated


def test_hub_name_offline_fails_fast(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no checkpoints/gpt2 here
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # an empty cache
    started = time.monotonic()
    with pytest.raises(HubUnavailableError, match="unreachable"):
        load_model("gpt2")
    assert time.monotonic() - started < 10


def test_load_model_takes_every_kind_of_name(monkeypatch, tmp_path, char_tokenizer):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = GPT(preset("micro").replace(vocab_size=char_tokenizer.vocab_size))
    store = CheckpointStore(tmp_path / "checkpoints" / "demo")
    store.save(5, model, char_tokenizer, is_best=True)
    store.save(9, model, char_tokenizer)
    idx = tokens(char_tokenizer.vocab_size, 1, 10)
    with torch.no_grad():
        expected, _ = model.eval()(idx)
    for name in ("checkpoints/demo", "checkpoints/demo/step-00000009", "demo", "latest"):
        loaded = load_model(name)
        assert isinstance(loaded, GPT) and not loaded.training
        assert loaded.tokenizer.encode("To be") == char_tokenizer.encode("To be")
        assert torch.allclose(loaded(idx)[0], expected)
    _, _, description = load_model_and_tokenizer("demo")
    assert "best" in description and "step 5" in description
    with pytest.raises(CheckpointError, match="no checkpoint at nowhere"):
        load_model("nowhere")
    with pytest.raises(HubUnavailableError, match="'nowhere/at-all' .*no local path"):
        load_model("nowhere/at-all")  # owner/name: a hub model, unless its first part is a local folder
    with pytest.raises(CheckpointError, match="no checkpoint at checkpoints/dmeo"):
        load_model("checkpoints/dmeo")
