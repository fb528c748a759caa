"""The fast generation path: the weights' precision, the bf16 copy of a model with its linear
weights prepacked for oneDNN, the partial sort behind top-p, and `gpt2tui generate --precision`
in a real process."""

import copy
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt2core import generation
from gpt2core.checkpoint import CheckpointStore
from gpt2core.cpu_linear import PackedLinear, can_pack
from gpt2core.errors import ConfigError
from gpt2core.generation import CPU_BF16_MIN_PARAMS, TOP_P_PARTIAL, filter_logits, generate, inference_model, inference_precision

# Whether this machine's CPU runs the packed bf16 path (AMX, through oneDNN); the tests below
# check the packed path where it exists and the plain bf16 copy where it does not.
PACKS = can_pack(torch.device("cpu"), torch.bfloat16)
needs_packing = pytest.mark.skipif(not PACKS, reason="this CPU has no native bf16 for oneDNN to pack for")


def greedy_by_full_forwards(model, idx, n_new):
    seq = idx.clone()
    with torch.no_grad():
        for _ in range(n_new):
            seq = torch.cat([seq, model(seq)[0][:, -1].float().argmax(-1, keepdim=True)], dim=1)
    return seq[:, idx.size(1) :]


@pytest.mark.parametrize("answer, expected", [("1", "bf16"), ("0", "fp32")])
def test_auto_follows_the_cpu_bf16_answer(monkeypatch, answer, expected):
    monkeypatch.setenv("GPT2TUI_CPU_BF16", answer)
    assert inference_precision("auto", "cpu") == expected
    assert inference_precision("fp32", "cpu") == "fp32"
    assert inference_precision("bf16", "cpu") == "bf16"  # asked for: given, even where it is slow


def test_auto_keeps_small_models_in_fp32_on_a_cpu(monkeypatch, micro_model):
    monkeypatch.setenv("GPT2TUI_CPU_BF16", "1")
    assert inference_precision("auto", "cpu", CPU_BF16_MIN_PARAMS) == "bf16"
    assert inference_precision("auto", "cpu", CPU_BF16_MIN_PARAMS - 1) == "fp32"
    assert inference_model(micro_model, "auto") is micro_model  # a tiny model: its own fp32 weights


def test_unknown_precision_is_a_config_error(micro_model):
    with pytest.raises(ConfigError, match="precision must be one of"):
        inference_precision("int3", "cpu")
    with pytest.raises(ConfigError, match="precision must be one of"):
        generate(micro_model, torch.tensor([[1, 2]]), max_new_tokens=2, precision="int3")


def test_the_bf16_copy_is_made_once_tied_and_remade_when_the_weights_change(sharp_model, char_tokenizer):
    assert inference_model(sharp_model, "fp32") is sharp_model
    sharp_model.train()
    sharp_model.tokenizer = char_tokenizer  # as the loader attaches it
    twin = inference_model(sharp_model, "bf16")
    assert twin.tokenizer is char_tokenizer  # shared, not copied
    assert twin is not sharp_model and not twin.training and sharp_model.training  # the original keeps its mode
    assert {p.dtype for p in twin.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in sharp_model.parameters()} == {torch.float32}
    if PACKS:  # every linear packed, the head from the embedding, which keeps its plain layout
        assert not any(isinstance(m, nn.Linear) for m in twin.modules())
        assert isinstance(twin.lm_head, PackedLinear) and twin.lm_head.packed.is_mkldnn
    else:
        assert twin.lm_head.weight is twin.transformer.wte.weight
    assert torch.equal(twin.transformer.wte.weight, sharp_model.transformer.wte.weight.bfloat16())
    assert inference_model(sharp_model, "bf16") is twin  # kept, not rebuilt per call
    with torch.no_grad():
        sharp_model.transformer.wte.weight[0].add_(1.0)  # e.g. a training step between two chats
    fresh = inference_model(sharp_model, "bf16")
    assert fresh is not twin
    assert torch.equal(fresh.transformer.wte.weight[0], sharp_model.transformer.wte.weight[0].bfloat16())
    sharp_model.eval()


def test_bf16_generation_runs_on_bf16_weights_with_the_cache(sharp_model):
    idx = torch.randint(0, sharp_model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    got = generate(sharp_model, idx, max_new_tokens=20, temperature=0, repetition_penalty=1.0, precision="bf16")
    # The same tokens as full forwards of a plain bf16 copy (nn.Linear, no cache): the cached,
    # packed path computes the model in bf16, nothing else.
    plain = copy.deepcopy(sharp_model).to(torch.bfloat16)
    assert torch.equal(got, greedy_by_full_forwards(plain, idx, 20))
    fp32 = generate(sharp_model, idx, max_new_tokens=20, temperature=0, repetition_penalty=1.0, precision="fp32")
    assert torch.equal(fp32, greedy_by_full_forwards(sharp_model, idx, 20))


@needs_packing
@pytest.mark.parametrize("shape, bias", [((1, 1, 48), True), ((3, 7, 48), True), ((2, 5, 48), False)])
def test_a_packed_linear_gives_exactly_the_numbers_of_nn_linear_in_bf16(shape, bias):
    torch.manual_seed(2)
    linear = nn.Linear(48, 200, bias=bias).to(torch.bfloat16)
    x = torch.randn(*shape).to(torch.bfloat16)  # one decoded row, a prefill, a batch
    with torch.inference_mode():
        assert torch.equal(PackedLinear(linear)(x), linear(x))


def test_bf16_logits_are_finite_and_close_to_fp32(sharp_model):
    idx = torch.randint(0, sharp_model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        exact = sharp_model(idx)[0].float()  # (B, T, V)
        fast = inference_model(sharp_model, "bf16")(idx)[0].float()
    assert torch.isfinite(fast).all()
    spread = exact.std().item()
    assert (fast - exact).abs().max().item() < 0.1 * spread  # bf16 rounding, not a different model
    assert (fast.argmax(-1) == exact.argmax(-1)).float().mean().item() > 0.9


@pytest.mark.parametrize("answer", ["0", "1"])
def test_a_cpu_without_native_bf16_never_gets_bf16_or_packing(monkeypatch, sharp_model, answer):
    monkeypatch.setenv("GPT2TUI_CPU_BF16", answer)  # "0": what an AVX2-only CPU answers
    monkeypatch.setattr(generation, "CPU_BF16_MIN_PARAMS", 0)  # as if the micro model were 124M
    runner = inference_model(sharp_model, "auto")
    if answer == "0":
        assert runner is sharp_model  # fp32 weights, nn.Linear: nothing copied, nothing packed
        assert not can_pack(torch.device("cpu"), torch.bfloat16)
        plain = inference_model(sharp_model, "bf16")  # asked for by name: given, but not packed
        assert isinstance(plain.lm_head, nn.Linear) and plain.lm_head.weight.dtype == torch.bfloat16
    else:
        assert runner.transformer.wte.weight.dtype == torch.bfloat16
        assert isinstance(runner.lm_head, PackedLinear) == PACKS
    assert not can_pack(torch.device("cpu"), torch.float32)  # fp32 stays nn.Linear: transformers' exact numbers
    assert not can_pack(torch.device("meta"), torch.bfloat16)


@pytest.mark.parametrize(
    "flags, packs",
    [
        ({"avx2", "avx512f", "avx512_bf16"}, True),  # an AMD EPYC (Zen 4): AVX512-BF16, no AMX
        ({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}, True),  # a Sapphire Rapids Xeon
        ({"avx2", "avx512f"}, False),  # no bf16 instruction: oneDNN would emulate it
    ],
)
def test_packing_needs_a_bf16_instruction(monkeypatch, sharp_model, flags, packs):
    monkeypatch.setattr("gpt2core.cpu_linear.cpu_flags", lambda: frozenset(flags))
    monkeypatch.setenv("GPT2TUI_CPU_BF16", "1")  # bf16 chosen either way: only packing is in question
    onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert can_pack(torch.device("cpu"), torch.bfloat16) == (packs and onednn)
    twin = inference_model(sharp_model, "bf16")
    if packs and onednn:
        assert isinstance(twin.lm_head, PackedLinear)
    else:
        assert isinstance(twin.lm_head, nn.Linear) and twin.lm_head.weight is twin.transformer.wte.weight


def test_sampling_with_a_seed_repeats_in_bf16(sharp_model):
    idx = torch.tensor([[3, 1, 4, 1, 5]])
    runs = [generate(sharp_model, idx, max_new_tokens=30, seed=11, top_k=0, top_p=0.9, precision="bf16") for _ in range(2)]
    assert torch.equal(*runs)
    assert not torch.equal(runs[0], generate(sharp_model, idx, max_new_tokens=30, seed=12, top_k=0, top_p=0.9, precision="bf16"))


def full_sort_top_p(logits, top_p):
    """Nucleus filtering the plain way: sort the whole vocabulary, keep tokens whose better
    tokens hold less than top_p."""
    ordered, ids = torch.sort(logits, dim=-1, descending=True)
    probs = F.softmax(ordered, dim=-1)
    drop = probs.cumsum(-1) - probs >= top_p
    return torch.full_like(logits, float("-inf")).scatter(-1, ids, ordered.masked_fill(drop, float("-inf")))


@pytest.mark.parametrize("scale", [8.0, 0.01])  # peaked: the partial sort suffices; flat: the full sort is needed
def test_top_p_without_top_k_equals_the_full_sort(scale):
    logits = torch.randn(3, 4 * TOP_P_PARTIAL, generator=torch.Generator().manual_seed(5)) * scale
    for top_p in (0.5, 0.9, 0.99):
        got = filter_logits(logits, top_p=top_p)
        want = full_sort_top_p(logits, top_p)
        assert torch.equal(torch.isinf(got), torch.isinf(want)), (scale, top_p)
        assert torch.allclose(got[~torch.isinf(got)], want[~torch.isinf(want)])
    kept = (~torch.isinf(filter_logits(logits, top_p=0.9))).sum(-1)
    assert bool((kept > TOP_P_PARTIAL).all()) == (scale < 1)  # the flat case really takes the other branch


def test_cli_precision_option_in_a_real_process(tmp_path, sharp_model, char_tokenizer):
    CheckpointStore(tmp_path / "checkpoints" / "demo").save(3, sharp_model, char_tokenizer, is_best=True)

    def run(*extra):
        return subprocess.run(
            [sys.executable, "-m", "gpt2tui", "generate", "-c", "demo", "-p", "To be", "-n", "30", "--seed", "2", *extra],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )

    fp32, bf16, bf16_again = run("--precision", "fp32"), run("--precision", "bf16"), run("--precision", "bf16")
    assert fp32.returncode == bf16.returncode == 0, fp32.stderr + bf16.stderr
    assert "generating with fp32 weights" in fp32.stderr and "generating with bf16 weights" in bf16.stderr
    assert bf16.stdout == bf16_again.stdout and len(bf16.stdout) > 1
    bad = run("--precision", "int3")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "int3" in bad.stderr
