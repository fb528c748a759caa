"""Linear layers with their weights prepacked for oneDNN, for bf16 inference on a CPU.

At batch 1 a decoded token is a row vector times every weight matrix, so its time is the time to
read the weights. ``nn.Linear`` in bf16 on a CPU hands oneDNN a plain (out, in) matrix on every
call, and oneDNN reorders it into its blocked layout each time before the AMX / AVX512-BF16
kernel runs: on a CPU with AMX the 50257 x 768 head then took longer in bf16 than in fp32. Reordering once, when
the inference copy is made, leaves the kernel itself: a bf16 token costs ~0.65x an fp32 one at 124M
(docs/PERFORMANCE.md, generation). The outputs are the same numbers as ``F.linear`` in bf16 (the
same kernel, fed the same weights), so the bf16 tests of the plain path hold for the packed one.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from gpt2core.precision import BF16_CPU_FLAGS, cpu_flags, cpu_has_native_bf16


def can_pack(device: torch.device, dtype: torch.dtype) -> bool:
    """True where packing was measured to pay: bf16 weights on a CPU with a bf16 instruction
    (AMX's ``amx_bf16`` or AVX512's ``avx512_bf16``), which ``cpu_has_native_bf16`` (so
    GPT2TUI_CPU_BF16=0 simulates an AVX2-only CPU here too) and oneDNN itself also confirm.

    Both kinds pay (docs/PERFORMANCE.md, generation): on a 2-core AMD EPYC with AVX512-BF16 and
    no AMX a 124M token generates at 3.8x transformers' fp32 speed packed against 2.1x unpacked
    (bench/bench_generate.py; an earlier round's "slower" reading there was wrong), and costs
    ~0.65x an fp32 token on a Xeon with AMX. Not where bf16 is emulated: oneDNN has no bf16 kernel to pack for, and "auto"
    generates in fp32 there anyway (``inference_precision``). Not fp32: ``nn.Linear`` gives
    exactly transformers' numbers, since both run the same MKL kernels on the same layout.
    """
    if device.type != "cpu" or dtype != torch.bfloat16 or not torch.backends.mkldnn.is_available():
        return False
    # cpu_has_native_bf16 may be forced on (GPT2TUI_CPU_BF16=1) where the flags lack the instruction:
    # oneDNN would then emulate bf16, so the flags are asked too.
    return cpu_has_native_bf16() and bool(BF16_CPU_FLAGS & cpu_flags()) and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class PackedLinear(nn.Module):
    """``nn.Linear``'s forward on a weight reordered once into oneDNN's layout (inference only:
    the packed weight is an opaque oneDNN tensor, not a parameter; it has no gradient and is
    not in the state dict)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # batch_size=1 tells oneDNN to pick the layout for one row at a time (decoding); the
        # packed weight still takes any number of rows (the prompt's prefill).
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), 1)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, packed"


def pack_linears(model: nn.Module) -> int:
    """Replace every ``nn.Linear`` in ``model`` (an eval-mode inference copy) by a PackedLinear,
    in place; returns how many. A tied head gets its own packed copy of the embedding, which
    the embedding lookup keeps reading in its plain layout."""
    swaps = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.Linear)
    ]
    for parent, name, child in swaps:
        setattr(parent, name, PackedLinear(child))
    return len(swaps)
