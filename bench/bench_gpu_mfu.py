"""The GPU ceiling of one training step: the model alone in a tight loop, against the same step
inside the real trainer (bench_train.py presets). The gap between the two is the trainer's own cost
(data, loss and grad-norm reads, NaN checks, logging); the rows with another vocabulary show what
the LM head's shape costs (50,257 is not a multiple of 64; nanoGPT pads it to 50,304).

    python bench/bench_gpu_mfu.py --batch 32 --vocab 50257,50304

Each row: torch.compile, bf16 autocast, fused AdamW, SDPA attention, random tokens already on the
GPU, CUDA-event timing over --steps steps after --warmup.

A diagnostic probe, not an ours-vs-reference benchmark: it measures no reference of its own, so
compare its rows with `bench_train.py presets --presets gpt2 --compile` run on the same machine.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpt2core.config import TrainConfig, preset  # noqa: E402
from gpt2core.model import GPT  # noqa: E402
from gpt2core.optim import build_optimizer  # noqa: E402
from gpt2core.precision import Precision, configure_backends, peak_flops  # noqa: E402


def attention_backend(name: str):
    """Pin SDPA to one kernel family (default: PyTorch's own choice, flash on Hopper)."""
    if name == "default":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION}[name]
    return sdpa_kernel(backend)


def measure(vocab: int, batch: int, steps: int, warmup: int, compile_: bool, sdpa: str, mode: str | None) -> tuple[float, float]:
    device = torch.device("cuda")
    configure_backends(device)
    config = preset("gpt2").replace(vocab_size=vocab)
    model = GPT(config).to(device)
    optimizer = build_optimizer(model, TrainConfig(), device)
    forward = torch.compile(model, mode=mode) if compile_ else model
    T = config.context_length
    x = torch.randint(0, vocab, (batch, T), device=device)  # (B, T)
    y = torch.randint(0, vocab, (batch, T), device=device)  # (B, T)

    def step() -> None:
        with attention_backend(sdpa), torch.autocast("cuda", dtype=torch.bfloat16):
            _, loss = forward(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(steps):
        step()
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000 / steps
    tokens_per_s = batch * T / seconds
    peak = peak_flops(device, Precision("bf16", "cuda", "bench"))
    return tokens_per_s, config.flops_per_token(T) * tokens_per_s / peak if peak else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", default="32", help="comma-separated batch sizes")
    parser.add_argument("--vocab", default="50257,50304", help="comma-separated vocabulary sizes")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--eager", action="store_true", help="skip torch.compile")
    parser.add_argument("--mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs (default: torch's default)")
    parser.add_argument("--sdpa", default="default", help="comma-separated attention kernels: default, flash, cudnn, efficient")
    args = parser.parse_args()
    how = "eager" if args.eager else f"torch.compile mode={args.mode or 'default'}"
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; gpt2 shape (124M), context 1024, bf16, {how}")
    print(f"{'attention':>9} {'vocab':>6} {'batch':>5} {'tokens/s':>10} {'MFU':>6}")
    for sdpa in args.sdpa.split(","):
        for batch in [int(b) for b in args.batch.split(",")]:
            for vocab in [int(v) for v in args.vocab.split(",")]:
                tps, mfu = measure(vocab, batch, args.steps, args.warmup, not args.eager, sdpa, args.mode)
                print(f"{sdpa:>9} {vocab:>6} {batch:>5} {tps:10.0f} {mfu * 100:5.1f}%", flush=True)
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
