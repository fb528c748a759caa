"""Throughput of one training run on 1 process and on N processes (torchrun + DDP), side by side.

    python bench/bench_distributed.py                    # CPU: 1 proc x all cores, 1 proc x 1 thread, N procs
    python bench/bench_distributed.py --steps 300 --preset tiny
    python bench/bench_distributed.py --device cuda      # GPUs: 1 process, then one per GPU

Every row is a real `gpt2tui train` command (the `--nproc` launcher, torchrun, gloo or nccl)
on the built-in corpus with the same global batch, so the rows train on the same data and
differ only in how the work is spread. tokens/s is the trainer's own figure (rank 0's wall
clock over each log interval, all ranks' tokens), combined over the intervals after the first
(which pays for start-up and allocation). The reference row is one process using every core
(or one GPU); ratio = row / reference.

On CPUs, N processes share the same cores the single process already uses through its threads,
so expect little or no gain: DDP pays off when every process has a device (or a socket) of its
own. Other processes on the machine change CPU numbers a lot: run it when the machine is quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _gpt2tui_train(workdir: Path, name: str, flags: list[str], *, nproc: int, threads: int) -> dict:
    """Run one configuration; returns its tokens/s and per-rank tokens/s."""
    command = [sys.executable, "-m", "gpt2tui", "train", *flags, "--run-name", name, "--threads", str(threads)]
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    records = [json.loads(line) for line in (workdir / "runs" / name / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["type"] == "step"][1:-1]  # not the warm-up interval, nor the short last one
    if not steps:
        raise SystemExit(f"{name}: too few steps to time; raise --steps")
    tokens_per_sec = len(steps) / sum(1.0 / r["tokens_per_sec"] for r in steps)  # equal tokens per interval
    ranks = [r["rank_tokens_per_sec"] for r in steps if r.get("rank_tokens_per_sec")]
    per_rank = [len(ranks) / sum(1.0 / speeds[i] for speeds in ranks) for i in range(len(ranks[0]))] if ranks else None
    started = next(r for r in records if r["type"] == "run_started")
    return {"tokens_per_sec": tokens_per_sec, "per_rank": per_rank, "device": started["device"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch (all processes together)")
    parser.add_argument("--context-length", type=int, default=128)
    parser.add_argument("--nproc", type=int, default=None, help="processes of the distributed rows [cores or GPUs]")
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device here; run with --device cpu")
        most = args.nproc or torch.cuda.device_count()
        rows = [("1 process, 1 GPU (reference)", 1, max(1, cores // most))]
        rows += [(f"{n} processes, 1 GPU each", n, max(1, cores // n)) for n in sorted({2, most}) if 1 < n <= torch.cuda.device_count()]
    else:
        most = args.nproc or cores
        rows = [(f"1 process x {cores} threads (reference)", 1, cores), ("1 process x 1 thread", 1, 1)]
        rows += [(f"{n} processes x {max(1, cores // n)} thread(s)", n, max(1, cores // n)) for n in sorted({2, most}) if n > 1]

    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        workdir = Path(tmp)
        def flags(steps: int) -> list[str]:
            return [
                "--preset", args.preset, "--tokenizer", "char", "--cache-dir", str(workdir / "cache"),
                "--batch-size", str(args.batch_size), "--context-length", str(args.context_length),
                "--max-steps", str(steps), "--max-epochs", "0", "--max-training-hours", "0", "--warmup-steps", "10",
                "--eval-interval", str(10 * steps), "--eval-iters", "1", "--log-interval", str(max(1, steps // 10)),
                "--sample-tokens", "0", "--no-tensorboard", "--device", args.device, "--plain",
            ]  # fmt: skip

        _gpt2tui_train(workdir, "warm-cache", flags(20), nproc=1, threads=cores)  # tokenise once, outside the timed runs
        results = [(label, _gpt2tui_train(workdir, f"run-{i}", flags(args.steps), nproc=nproc, threads=threads)) for i, (label, nproc, threads) in enumerate(rows)]

    reference = results[0][1]["tokens_per_sec"]
    print(f"\n== training throughput, 1 vs several processes ({args.preset} preset, global batch {args.batch_size} x {args.context_length} tokens) ==")
    print(f"device: {results[0][1]['device']}; {cores} CPU cores; torch {torch.__version__}; load average {os.getloadavg()[0]:.2f}")
    print(f"{'configuration':36} {'tokens/s':>10} {'ratio':>7}  per rank")
    for label, result in results:
        per_rank = ", ".join(f"{speed:,.0f}" for speed in result["per_rank"]) if result["per_rank"] else ""
        print(f"{label:36} {result['tokens_per_sec']:10,.0f} {result['tokens_per_sec'] / reference:6.2f}x  {per_rank}")


if __name__ == "__main__":
    main()
