"""The optimizer: AdamW with decoupled weight decay on the right parameters, the fastest kernel."""

from __future__ import annotations

import torch

from gpt2core.config import TrainConfig
from gpt2core.model import GPT


def build_optimizer(model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings (dim >= 2) and none on biases and
    LayerNorm gains; the fused kernel where this torch has one for the device, else foreach."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs = dict(lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), eps=1e-8)
    if device.type in ("cuda", "cpu", "mps"):
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError):
            pass  # no fused kernel for this device in this torch
    return torch.optim.AdamW(groups, foreach=True, **kwargs)
