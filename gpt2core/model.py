"""GPT-2, written out: embeddings, pre-norm decoder blocks, a tied LM head, and a KV cache.

Submodules carry the names of OpenAI's GPT-2 checkpoint (``transformer.wte``, ``h.0.attn.c_attn``,
``lm_head``, ...) so that Hugging Face weights load key for key; the only difference is that
Hugging Face's ``Conv1D`` stores its weight as (in, out) where ``nn.Linear`` stores (out, in).

Shapes in comments: B batch, T new positions, S positions attended to (cache + new),
C = d_model, nh heads, hs = C // nh head size, V vocabulary.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt2core.config import ModelConfig


class KVCache:
    """Keys and values of every layer for the positions seen so far, so each new token costs
    one position's compute instead of a re-run over the whole prefix.

    Buffers are allocated on the first append, in the dtype the attention produces (bf16
    under autocast), and sized for ``max_len`` positions.
    """

    def __init__(self, num_layers: int, max_len: int):
        self.num_layers = num_layers
        self.max_len = max_len
        self.length = 0  # positions already stored (identical in every layer after a forward)
        self._k: list[torch.Tensor | None] = [None] * num_layers
        self._v: list[torch.Tensor | None] = [None] * num_layers

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nh, T, hs) after the cached positions; return all of them (B, nh, S, hs)."""
        B, nh, T, hs = k.shape
        start, end = self.length, self.length + T
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {end} were asked for")
        if self._k[layer] is None:
            self._k[layer] = k.new_empty(B, nh, self.max_len, hs)
            self._v[layer] = v.new_empty(B, nh, self.max_len, hs)
        k_buf, v_buf = self._k[layer], self._v[layer]
        k_buf[:, :, start:end] = k
        v_buf[:, :, start:end] = v
        return k_buf[:, :, :end], v_buf[:, :, :end]

    def advance(self, steps: int) -> None:
        self.length += steps

    def reset(self) -> None:
        self.length = 0


# Training attention on a CPU under bf16 autocast at short windows. torch's CPU flash-attention
# kernel has a large cost per (batch, head) that short windows do not amortise, in its bf16 backward
# above all (12x4x64x32, forward + backward: 3.8 ms in bf16, 1.1 in fp32 with the casts). Written
# out as three batched products with the causal mask added, the softmax in fp32 and the products in
# bf16 (the probabilities rounded to bf16 for the product with v, as GPU flash kernels do), the
# same attention takes 0.56-0.74x the fp32 kernel's time (bench/bench_cpu_kernels.py). From 512
# positions the kernel wins (its T x T scores never materialise), and inference keeps it (its
# forward is fast in bf16 at every length measured).
_CPU_BF16_ATTENTION_MIN_T = 512


def _attend_written_out(q: torch.Tensor) -> bool:
    """Whether this training attention (q: (B, nh, T, hs)) takes the written-out path above."""
    return (
        q.device.type == "cpu"
        and q.dtype == torch.bfloat16
        and q.requires_grad
        and q.size(-2) < _CPU_BF16_ATTENTION_MIN_T
    )


def _causal_attention_written_out(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
    """softmax(q k^T / sqrt(hs) + causal mask) v for q, k, v (B, nh, T, hs) in bf16; (B, nh, T, hs)."""
    B, nh, T, hs = q.shape
    above_diagonal = torch.full((T, T), float("-inf"), dtype=q.dtype, device=q.device).triu(1)  # (T, T)
    scores = torch.baddbmm(
        above_diagonal, q.reshape(B * nh, T, hs), k.reshape(B * nh, T, hs).transpose(1, 2), alpha=hs**-0.5
    )  # (B*nh, T, T)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)  # (B*nh, T, T)
    if dropout_p > 0:
        probs = F.dropout(probs, dropout_p)
    return torch.bmm(probs, v.reshape(B * nh, T, hs)).view(B, nh, T, hs)  # (B, nh, T, hs)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)  # q, k, v at once
        self.c_proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)

        past = 0 if cache is None else cache.length
        if cache is not None:
            k, v = cache.append(layer, k, v)  # (B, nh, S, hs) with S = past + T
        mask, is_causal = None, True
        if past > 0:
            # New queries sit at positions past..past+T-1 and may see every key up to their own.
            is_causal = False
            if T > 1:
                S = past + T
                mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=past)  # (T, S)
        dropout_p = self.dropout if self.training else 0.0
        if cache is None and _attend_written_out(q):
            y = _causal_attention_written_out(q, k, v, dropout_p)  # (B, nh, T, hs)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.d_model, config.d_ff, bias=config.bias)
        self.c_proj = nn.Linear(config.d_ff, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        # GPT-2 was trained with the tanh approximation of GELU; the exact (erf) form shifts its
        # logits by ~1e-4, so it is a choice for models trained here (nanoGPT's recipe uses it).
        self.approximate = "tanh" if config.gelu == "tanh" else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate=self.approximate)))  # (B, T, C)


class Block(nn.Module):
    """Pre-norm decoder block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    """The GPT-2 language model.

    ``model(idx, targets)`` always returns ``(logits, loss)``, as nanoGPT's does: logits
    (B, T, V) and the mean cross-entropy over targets that are not -1, or ``None`` when no
    targets are given, so every caller unpacks the same shape. Pass a ``KVCache`` (from
    ``new_cache``) to continue a sequence one chunk at a time.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config  # validated when it was built (ModelConfig.__post_init__)
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.d_model),  # token embeddings (V, C)
                wpe=nn.Embedding(config.context_length, config.d_model),  # learned positions (context, C)
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config) for _ in range(config.num_layers)),
                ln_f=nn.LayerNorm(config.d_model, eps=config.layer_norm_eps, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as in GPT-2
        self.apply(self._init_weights)
        # GPT-2 scales the projections that write into the residual stream by 1/sqrt(2 * n_layer):
        # each block adds two of them, and the sum's variance would otherwise grow with depth.
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.num_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, include_embeddings: bool = True) -> int:
        """Parameters, each counted once (the tied head is the token embedding)."""
        n = sum(p.numel() for p in self.parameters())
        if not include_embeddings:
            n -= self.transformer.wte.weight.numel() + self.transformer.wpe.weight.numel()
        return n

    @property
    def device(self) -> torch.device:
        return self.transformer.wte.weight.device

    def new_cache(self, max_len: int | None = None) -> KVCache:
        return KVCache(self.config.num_layers, min(max_len or self.config.context_length, self.config.context_length))

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
        last_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T = idx.shape
        past = 0 if cache is None else cache.length
        if past + T > self.config.context_length:
            raise ValueError(
                f"sequence of {past + T} positions is longer than the context length {self.config.context_length}"
            )
        pos = torch.arange(past, past + T, dtype=torch.long, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, cache, layer)
        if cache is not None:
            cache.advance(T)
        x = self.transformer.ln_f(x)  # (B, T, C)
        if last_only:
            x = x[:, -1:, :]  # (B, 1, C): generation only needs the next token's logits
        logits = self.lm_head(x)  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)  # reshape: sliced targets are not contiguous
        return logits, loss
