"""The CPU kernels behind issue 17's training and generation numbers, ours against the reference,
in one invocation:

- **attention** at nanoGPT's CPU recipe shape (batch 12, 4 heads, 64 positions, head size 32),
  forward + backward, bf16: ours (``model._causal_attention_written_out``) against torch's
  kernel, both in bf16 and in fp32 with the casts (what CPU bf16 training used before);
- **a training step** of the recipe's model (4 layers, 128 wide, bf16 autocast, fused AdamW,
  clipping), ours against the same model with torch's kernel in fp32, alternating blocks of
  steps in one process so a change in the machine's speed hits both; then the step's FLOP/s
  against the rate bf16 ``torch.mm`` reaches at the recipe's shapes;
- **a batch-1 pass over the 124M shape's 48 per-layer matrices** in bf16: ours
  (``cpu_linear.PackedLinear``) against ``F.linear`` on the plain weights, and fp32 ``F.linear``;
- **the exit** of a process that imported torch, torch._dynamo and datasets: ours
  (``gpt2tui.cli._exit_now``) against Python's normal exit, from the child's last line to the
  parent seeing it gone.

    python bench/bench_cpu_kernels.py            # about a minute
    python bench/bench_cpu_kernels.py --quick

Each line prints ours, the reference and the ratio; the header names the CPU, its flags, the
threads and the load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpt2core import model as model_module  # noqa: E402
from gpt2core.config import ModelConfig  # noqa: E402
from gpt2core.cpu_linear import PackedLinear, can_pack  # noqa: E402
from gpt2core.precision import cpu_flags, device_description  # noqa: E402

FLAGS_SHOWN = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
RECIPE = ModelConfig(vocab_size=67, context_length=64, d_model=128, num_heads=4, num_layers=4, d_ff=512, dropout=0.0, bias=False, gelu="erf")


def best_ms(fn, reps: int, rounds: int = 3) -> float:
    """The best of ``rounds`` means over ``reps`` calls, in ms (the least disturbed round)."""
    for _ in range(max(3, reps // 10)):
        fn()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(reps):
            fn()
        times.append((time.perf_counter() - started) / reps * 1e3)
    return min(times)


def row(what: str, ours: float, reference: float, unit: str = "ms") -> None:
    print(f"  {what:58s} ours {ours:8.3f} {unit}  reference {reference:8.3f} {unit}  ours/reference {ours / reference:5.2f}")


def kernel_fp32(q, k, v, dropout_p: float = 0.0):
    """torch's kernel in fp32 with the casts: what CPU bf16 training attended with before."""
    with torch.autocast(device_type="cpu", enabled=False):
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), dropout_p=dropout_p, is_causal=True).to(q.dtype)


def alternating(sides: dict, blocks: int, reps: int) -> tuple[dict[str, float], float]:
    """Median ms per call of each side, timed in alternating blocks of ``reps`` calls so that a
    change in the machine's speed (these VMs drift by 10-20% within minutes) hits every side;
    and the median ratio of the first side to the second within a block."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(blocks):
        for name, fn in sides.items():
            times[name].append(best_ms(fn, reps, rounds=1))
    first, second = list(times)[:2]
    ratio = statistics.median(a / b for a, b in zip(times[first], times[second]))
    return {name: statistics.median(t) for name, t in times.items()}, ratio


def attention(blocks: int) -> None:
    q, k, v = (torch.randn(12, 4, 64, 32, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    grad = torch.randn(12, 4, 64, 32, dtype=torch.bfloat16)
    sides = {
        "ours": lambda: model_module._causal_attention_written_out(q, k, v, 0.0).backward(grad),
        "fp32 kernel": lambda: kernel_fp32(q, k, v).backward(grad),
        "bf16 kernel": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(grad),
    }
    medians, ratio = alternating(sides, blocks, 50)
    print(f"attention, 12 x 4 heads x 64 positions x 32, forward + backward, bf16 inputs, {blocks} alternating blocks:")
    row("vs torch's kernel in fp32 with the casts (before)", medians["ours"], medians["fp32 kernel"])
    print(f"  median ratio within blocks {ratio:.3f}")
    row("vs torch's kernel in bf16", medians["ours"], medians["bf16 kernel"])


def training_step(blocks: int) -> float:
    def build():
        torch.manual_seed(0)
        net = model_module.GPT(RECIPE)
        return net, torch.optim.AdamW(net.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1, fused=True)

    x, y = (torch.randint(0, RECIPE.vocab_size, (12, 64), generator=torch.Generator().manual_seed(s)) for s in (1, 2))
    sides = {"ours": build(), "reference": build()}
    written_out = model_module._causal_attention_written_out

    def step(net, opt):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, loss = net(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def side(name):
        net, opt = sides[name]
        attend = written_out if name == "ours" else kernel_fp32

        def run():
            model_module._causal_attention_written_out = attend
            step(net, opt)

        return run

    try:
        medians, ratio = alternating({name: side(name) for name in sides}, blocks, 20)
    finally:
        model_module._causal_attention_written_out = written_out
    print(f"training step of nanoGPT's CPU recipe model, bf16 autocast, {blocks} alternating blocks of 20 steps:")
    row("vs the same step attending with torch's kernel in fp32", medians["ours"], medians["reference"])
    print(f"  median ratio within blocks {ratio:.3f}")
    return medians["ours"]


def against_the_matmul_rate(step_ms: float, reps: int) -> None:
    """The step's FLOP/s against the rate torch.mm itself reaches at the recipe's shapes (the
    reference: what the step would reach if it were nothing but its matrix products)."""
    tokens = 12 * RECIPE.context_length
    step_flop = RECIPE.flops_per_token() * tokens
    rates = []
    for k, n in ((128, 384), (128, 128), (128, 512), (512, 128)):  # c_attn, attn c_proj, c_fc, mlp c_proj
        x, w, g = (torch.randn(*shape, dtype=torch.bfloat16) for shape in ((tokens, k), (n, k), (tokens, n)))
        for a, b in ((x, w.t()), (g, w), (g.t(), x)):  # forward, input gradient, weight gradient
            rates.append(2 * tokens * k * n / (best_ms(lambda: a @ b, reps) / 1e3))
    matmul_rate = statistics.median(rates)
    achieved = step_flop / (step_ms / 1e3)
    print(f"the step's arithmetic ({step_flop / 1e9:.2f} GFLOP) against bf16 torch.mm at the recipe's shapes:")
    row("achieved GFLOP/s vs the median matmul rate", achieved / 1e9, matmul_rate / 1e9, unit="GF/s")
    print(f"  matmul rates {min(rates) / 1e9:.0f}-{max(rates) / 1e9:.0f} GFLOP/s")


def batch1_pass(reps: int) -> None:
    shapes = [(2304, 768), (768, 768), (3072, 768), (768, 3072)] * 12  # a layer: c_attn, attn c_proj, c_fc, mlp c_proj
    linears = [nn.Linear(i, o, bias=True).to(torch.bfloat16).eval() for o, i in shapes]
    rows = {i: torch.randn(1, i, dtype=torch.bfloat16) for i in (768, 3072)}
    weight_bytes = sum(lin.weight.numel() * 2 for lin in linears)
    print(f"a batch-1 pass over the 124M shape's 48 per-layer matrices ({weight_bytes / 1e6:.0f} MB in bf16):")
    if not can_pack(torch.device("cpu"), torch.bfloat16):
        print("  packing: not on this CPU (no bf16 instruction, or GPT2TUI_CPU_BF16=0); nothing to compare")
        return
    packed = [PackedLinear(lin) for lin in linears]
    fp32 = [nn.Linear(i, o).eval() for o, i in shapes]
    with torch.inference_mode():
        ours = best_ms(lambda: [p(rows[p.in_features]) for p in packed], reps)
        plain = best_ms(lambda: [lin(rows[lin.in_features]) for lin in linears], reps)
        full = best_ms(lambda: [lin(rows[lin.in_features].float()) for lin in fp32], reps)
    row("vs F.linear on the plain bf16 weights", ours, plain)
    row("vs F.linear in fp32 (twice the bytes)", ours, full)
    print(f"  read rate: ours {weight_bytes / ours / 1e6:.1f} GB/s, plain bf16 {weight_bytes / plain / 1e6:.1f} GB/s")


_CHILD = """
import sys, time
import torch, torch._dynamo, datasets  # what a training run has imported by its end
from gpt2tui.cli import _exit_now
print(time.time(), flush=True)
if sys.argv[1] == "ours":
    _exit_now(0)
"""


def exit_cost(repeats: int) -> None:
    def once(side: str) -> float:
        child = subprocess.Popen([sys.executable, "-c", _CHILD, side], stdout=subprocess.PIPE, text=True)
        last_line = float(child.stdout.readline())
        child.wait()
        return time.time() - last_line

    seconds = {"ours": [], "reference": []}
    for _ in range(repeats):
        for side in seconds:
            seconds[side].append(once(side))
    print(f"exit after importing torch, torch._dynamo and datasets, median of {repeats}:")
    row("vs Python's normal exit", statistics.median(seconds["ours"]), statistics.median(seconds["reference"]), unit="s ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (about 20 s)")
    args = parser.parse_args()
    flags = cpu_flags()
    print(f"device: {device_description(torch.device('cpu'))}; {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    print("cpu flags: " + ", ".join(f"{f}={'yes' if f in flags else 'no'}" for f in FLAGS_SHOWN))
    print(f"torch {torch.__version__}; load average (1 min) {os.getloadavg()[0]:.2f}")
    attention(6 if args.quick else 30)
    step_ms = training_step(6 if args.quick else 20)
    against_the_matmul_rate(step_ms, 50 if args.quick else 300)
    batch1_pass(5 if args.quick else 20)
    exit_cost(2 if args.quick else 5)
    print(f"load average (1 min) at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
