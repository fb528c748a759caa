"""Generation at batch 1: ours against transformers' ``generate()``, and against the memory bandwidth.

One invocation runs, at the 124M GPT-2 shape with random weights (no hub):

- ours, ``gpt2core.generate`` with ``precision="auto"`` (bf16 weights where the device computes
  bf16 natively, see ``gpt2core.generation.inference_precision``; on such CPUs their linear
  weights are prepacked for oneDNN, ``gpt2core.cpu_linear``), and with ``precision="fp32"``;
- ours in bf16 without the packing (``generation.PACK_CPU_BF16`` off for a second copy of the
  model), to show what packing gives;
- transformers' ``GPT2LMHeadModel.generate()`` at its default precision (fp32 weights, SDPA),
  with the same weights and the same sampling (temperature 0.8, top-k 50, top-p 0.95,
  repetition penalty 1.2), ``max_new_tokens`` = ``min_new_tokens`` so both make every token;
- a read (sum) of a tensor far larger than the caches, whose bytes per second bound how fast the
  weights can be read: a decoded token reads every weight once, so bandwidth / weight bytes per
  token is the tokens/s limit.

The sides run interleaved (in a rotating order) for several rounds and the medians are reported,
because the machines this runs on are often shared: a neighbour's load then hits every side alike.
Each side is timed twice: wall time, and this process's CPU time (user + system over all its
threads). On a busy machine the wall time counts the time other processes held the cores; CPU time
does not, so tokens per CPU-second compare the work each side needs (with --threads 1 they equal
tokens/s on an idle machine). Before timing it checks that greedy fp32 output equals transformers'
and that a seed repeats.

    python bench/bench_generate.py                      # 124M, 64 new tokens, 5 rounds
    python bench/bench_generate.py --rounds 9 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import SAMPLING, build_pair  # noqa: E402  (same weights on both sides, one place)

from gpt2core import generation  # noqa: E402
from gpt2core.cpu_linear import can_pack  # noqa: E402
from gpt2core.generation import generate, inference_precision  # noqa: E402
from gpt2core.precision import cpu_flags  # noqa: E402

TARGET = 2.0  # issue 17: ours at least twice transformers' tokens/s at its default precision
FLAGS_SHOWN = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def seconds(fn, device: torch.device) -> tuple[float, float]:
    """(wall, CPU) seconds of one call; CPU is this process's, over all its threads."""
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def read_bandwidth(device: torch.device, mib: int = 1024, reps: int = 7) -> tuple[float, float]:
    """(wall, CPU) bytes per second of summing a ``mib`` MiB tensor, median of ``reps``: far
    larger than the caches, and a read like the weights' is, so this is what memory gives."""
    src = torch.ones(mib * 2**20 // 4, dtype=torch.float32, device=device)
    src.sum()  # touch every page once before timing
    times = [seconds(lambda: src.sum(), device) for _ in range(reps)]
    nbytes = src.numel() * src.element_size()
    return nbytes / statistics.median(t[0] for t in times), nbytes / statistics.median(t[1] for t in times)


def weight_bytes_per_token(model, element_size: int) -> int:
    """Bytes of weights one decoded token reads with ``element_size``-byte weights: every
    parameter once (the tied head is the embedding, read whole by the head), except the two
    tables, of which it reads one row each (a packed head is a second copy, read instead)."""
    wte, wpe = model.transformer.wte.weight, model.transformer.wpe.weight
    total = sum(p.numel() for p in model.parameters()) - wpe.numel() + wpe.size(1) + wte.size(1)
    return total * element_size


def try_compile(model, device: torch.device, reps: int = 30) -> None:
    """What compiling the decode step could give: inductor (with freezing, so it prepacks the
    weights for oneDNN itself and fuses the small operations) on a one-token bf16 forward without
    a cache, whose shapes are static, against the same forward of our packed eager copy, the two
    interleaved. The compile time depends on inductor's on-disk cache: a first one is far longer."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    twin = copy.deepcopy(model).to(torch.bfloat16).eval()
    token = torch.zeros(1, 1, dtype=torch.long, device=device)
    compiled = torch.compile(lambda idx: twin(idx, last_only=True)[0])
    runner = generation.inference_model(model, "bf16")  # the packed copy generate() uses
    sides = {"compiled": lambda: compiled(token), "eager": lambda: runner(token, last_only=True)[0]}
    cpu_s: dict[str, list[float]] = {name: [] for name in sides}
    with torch.no_grad():
        wall, cpu = seconds(sides["compiled"], device)
        for _ in range(reps):
            for name, fn in sides.items():
                cpu_s[name].append(seconds(fn, device)[1])
    compiled_ms, eager_ms = (1e3 * statistics.median(cpu_s[name]) for name in sides)
    print(
        f"torch.compile of a one-token bf16 forward: {wall:.0f} s to compile ({cpu:.0f} CPU-s in this process, "
        f"more in its workers); {compiled_ms:.1f} CPU-ms a token against {eager_ms:.1f} for the same forward, eager and packed"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="gpt2", help="model preset (default: %(default)s, the 124M shape)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of every side (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    parser.add_argument(
        "--try-compile", action="store_true",
        help="also time torch.compile (inductor, freezing) of a one-token bf16 forward: compile time and CPU ms per token",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    ours, reference, logit_diff = build_pair(args.shape, device)
    unpacked = copy.deepcopy(ours)  # its own bf16 copy, made with packing off
    auto = inference_precision("auto", device, ours.num_params())
    n = args.new_tokens
    idx = torch.randint(0, ours.config.vocab_size, (1, args.prompt_len), device=device)

    # Correctness first: fp32 greedy is transformers' output, and a seed repeats in every precision.
    with torch.no_grad():
        expected = reference.generate(idx, do_sample=False, max_new_tokens=8, min_new_tokens=8, pad_token_id=0)[:, args.prompt_len :]
    greedy_equal = torch.equal(generate(ours, idx, max_new_tokens=8, temperature=0, repetition_penalty=1.0, precision="fp32"), expected)
    repeat = [generate(ours, idx, max_new_tokens=8, seed=3, precision=auto, **SAMPLING) for _ in range(2)]

    def ours_side(model, precision: str, pack: bool = True):
        def run():
            generation.PACK_CPU_BF16 = pack
            try:
                generate(model, idx, max_new_tokens=n, seed=0, repetition_window=0, precision=precision, **SAMPLING)
            finally:
                generation.PACK_CPU_BF16 = True
        return run

    packs = can_pack(device, torch.bfloat16) and auto == "bf16"
    sides = {f"ours {auto}" + (" packed" if packs else ""): ours_side(ours, auto)}
    sides["transformers fp32"] = lambda: reference.generate(
        idx, do_sample=True, max_new_tokens=n, min_new_tokens=n, pad_token_id=0, **SAMPLING
    )
    if packs:
        sides["ours bf16 unpacked"] = ours_side(unpacked, "bf16", pack=False)
    if auto != "fp32":
        sides["ours fp32"] = ours_side(ours, "fp32")
    names = list(sides)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    with torch.no_grad():
        for name in names:
            sides[name]()  # warm-up: allocator, oneDNN kernels, our bf16 copy of the weights
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate who goes first
                w, c = seconds(sides[name], device)
                wall[name].append(n / w)
                cpu[name].append(n / c)
    bw_wall, bw_cpu = read_bandwidth(device)

    flags = cpu_flags()
    print(f"device: {device} ({torch.get_num_threads()} torch threads, {os.cpu_count()} cores), torch {torch.__version__}")
    if device.type == "cpu":
        print("cpu flags: " + ", ".join(f"{f}={'yes' if f in flags else 'no'}" for f in FLAGS_SHOWN))
    if hasattr(os, "getloadavg"):
        # Above the core count means other processes were competing for the cores while this ran.
        print(f"load average (1 min): {load_before:.2f} before, {os.getloadavg()[0]:.2f} after, on {os.cpu_count()} cores")
    print(f"shape {args.shape}: {ours.num_params() / 1e6:.0f}M parameters, prompt {args.prompt_len}, +{n} sampled tokens, batch 1, {args.rounds} rounds")
    print(f"checks: max |logit diff| vs transformers {logit_diff:.2e}; fp32 greedy equals transformers: {greedy_equal}; seeded output repeats ({auto}): {torch.equal(*repeat)}")
    print(f"read bandwidth (sum of 1 GiB): {bw_wall / 1e9:.1f} GB/s wall, {bw_cpu / 1e9:.1f} GB per CPU-second")
    ref_wall, ref_cpu = statistics.median(wall["transformers fp32"]), statistics.median(cpu["transformers fp32"])
    print(f"{'side':<22}{'tok/s':>8}{'min..max':>14}{'vs tf':>8}{'limit':>8}{'reached':>9}  |{'tok/CPU-s':>10}{'vs tf':>8}{'limit':>8}{'reached':>9}")
    for name in names:
        size = 2 if ("bf16" in name or "fp16" in name) else 4
        per_token = weight_bytes_per_token(ours, size)
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        spread = f"{min(wall[name]):.1f}..{max(wall[name]):.1f}"
        print(
            f"{name:<22}{w:>8.1f}{spread:>14}{w / ref_wall:>7.2f}x{bw_wall / per_token:>8.1f}{w / (bw_wall / per_token):>9.0%}"
            f"  |{c:>10.1f}{c / ref_cpu:>7.2f}x{bw_cpu / per_token:>8.1f}{c / (bw_cpu / per_token):>9.0%}"
        )
    if args.try_compile:
        try_compile(ours, device)
    ratio_wall = statistics.median(wall[names[0]]) / ref_wall
    ratio_cpu = statistics.median(cpu[names[0]]) / ref_cpu
    verdict = "met" if min(ratio_wall, ratio_cpu) >= TARGET else "not met"
    print(f"{names[0]} / transformers: {ratio_wall:.2f}x wall, {ratio_cpu:.2f}x per CPU-second (target {TARGET:.1f}x: {verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
