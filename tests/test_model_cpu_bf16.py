"""Training under bf16 autocast on the CPU attends through written-out products for short
windows (gpt2core/model.py says why): the result must be the attention torch's kernel computes,
within bf16 rounding, in the values and in the gradients."""

import pytest
import torch
import torch.nn.functional as F

from gpt2core.config import ModelConfig
from gpt2core.model import GPT, _attend_written_out, _causal_attention_written_out

CONFIG = ModelConfig(vocab_size=65, context_length=64, d_model=64, num_heads=4, num_layers=2, d_ff=256, dropout=0.0, bias=False)


def _loss_and_grads(model: GPT, idx: torch.Tensor, autocast: bool):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits, loss = model(idx[:, :-1], idx[:, 1:])
    loss.backward()
    return logits, loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_bf16_training_step_matches_fp32_within_bf16_rounding():
    torch.manual_seed(0)
    model = GPT(CONFIG)
    idx = torch.randint(0, CONFIG.vocab_size, (4, CONFIG.context_length + 1))
    _, loss32, grads32 = _loss_and_grads(model, idx, autocast=False)
    logits, loss16, grads16 = _loss_and_grads(model, idx, autocast=True)
    assert logits.dtype == torch.bfloat16  # the rest of the network stays in bf16
    assert abs(loss16 - loss32) < 2e-2
    for name, g32 in grads32.items():
        g16 = grads16[name].float()
        assert torch.isfinite(g16).all(), name
        cosine = torch.nn.functional.cosine_similarity(g16.flatten(), g32.flatten(), dim=0)
        assert cosine > 0.99, (name, cosine.item())


def test_the_written_out_attention_is_chosen_only_for_cpu_bf16_training_on_short_windows():
    q = torch.zeros(1, 4, 64, 16, dtype=torch.bfloat16, requires_grad=True)
    assert _attend_written_out(q)
    assert not _attend_written_out(q.detach())  # inference: the bf16 kernel's forward is the faster one
    assert not _attend_written_out(torch.zeros(1, 4, 64, 16, requires_grad=True))  # fp32: the kernel
    assert not _attend_written_out(torch.zeros(1, 4, 1024, 16, dtype=torch.bfloat16, requires_grad=True))  # long: the kernel pays


@pytest.mark.parametrize("T", [1, 7, 64])
def test_the_written_out_attention_equals_the_kernel_within_bf16_rounding(T):
    torch.manual_seed(1)
    q, k, v = (torch.randn(3, 4, T, 16) for _ in range(3))  # (B, nh, T, hs)
    grad_out = torch.randn(3, 4, T, 16)

    def run(fn, dtype):
        leaves = [t.to(dtype).clone().requires_grad_() for t in (q, k, v)]
        out = fn(*leaves)
        out.backward(grad_out.to(dtype))
        return out.float(), [t.grad.float() for t in leaves]

    want, want_grads = run(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True), torch.float32)
    got, got_grads = run(lambda a, b, c: _causal_attention_written_out(a, b, c, 0.0), torch.bfloat16)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() < 3e-2  # bf16 keeps ~3 significant digits
    for g, w in zip(got_grads, want_grads):  # (q, k at T=1 get none: one key, a constant softmax)
        assert (g - w).abs().max().item() <= 2e-2 * max(w.abs().max().item(), 1.0)
    if T > 1:  # causal: the first position sees only itself, whatever comes after it
        assert torch.allclose(got[:, :, 0], v[:, :, 0].bfloat16().float(), atol=1e-2)


def test_the_written_out_attention_drops_probabilities_in_training():
    torch.manual_seed(2)
    q, k, v = (torch.randn(2, 2, 32, 8, dtype=torch.bfloat16) for _ in range(3))
    exact = _causal_attention_written_out(q, k, v, 0.0)
    torch.manual_seed(3)
    dropped = _causal_attention_written_out(q, k, v, 0.5)
    torch.manual_seed(3)
    assert torch.equal(dropped, _causal_attention_written_out(q, k, v, 0.5))  # the seed repeats it
    assert not torch.equal(dropped, exact)
