"""Training under bf16 autocast on the CPU attends in fp32 for short windows (gpt2core/model.py
says why): the result must be the bf16 model's, only with a more precise attention."""

import torch

from gpt2core.config import ModelConfig
from gpt2core.model import GPT, _attend_in_fp32

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


def test_the_fp32_attention_is_chosen_only_for_cpu_bf16_training_on_short_windows():
    q = torch.zeros(1, 4, 64, 16, dtype=torch.bfloat16, requires_grad=True)
    assert _attend_in_fp32(q)
    assert not _attend_in_fp32(q.detach())  # inference: the bf16 kernel's forward is the faster one
    assert not _attend_in_fp32(torch.zeros(1, 4, 64, 16, requires_grad=True))  # fp32 already
    assert not _attend_in_fp32(torch.zeros(1, 4, 1024, 16, dtype=torch.bfloat16, requires_grad=True))  # long: bf16 pays
