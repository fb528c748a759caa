"""Training benchmarks: throughput of the presets, time to a target loss, and our trainer against
a plain PyTorch loop of the nanoGPT kind.

    python bench/bench_train.py                      # everything (about 15 minutes on 2 CPU cores)
    python bench/bench_train.py compare --steps 500  # just the comparison, shorter
    python bench/bench_train.py presets target

Sections:

presets  tokens/s, seconds per step and MFU of the micro, tiny and small presets (and gpt2 on a
         GPU), measured through the real trainer on the built-in corpus.
target   wall time of the default no-option run (the plan `gpt2tui train` uses on this device) until
         its validation loss first reaches --target.
compare  the issue's run: the built-in corpus (~1.2 MB) at character level, 4 layers, 4 heads, 128 wide, context
         64, batch 12, --steps steps, evaluation every 250 steps on 20 batches. "ours" is
         gpt2core.train.train (run directory, TensorBoard, checkpoints and samples included);
         "reference" is the loop at the bottom of this file: the same GPT module, AdamW with the
         same groups and schedule, nanoGPT's per-row batch gather, evaluation batch by batch under
         no_grad, a torch.save checkpoint when the val loss improves. Both start from the same
         token arrays and seed; wall time includes evaluation and checkpoints.

nanoGPT's own train.py against `gpt2tui train` on its CPU recipe is bench/bench_nanogpt.py.

Only compare has a reference measured in the same run (and the ratio); presets and target are
absolute numbers for this machine (MFU is relative to the device's peak FLOP/s).
Every table names the device and the torch thread count. Other processes on the machine change
the numbers a lot on a 2-core box: run it when the machine is quiet (`uptime`).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpt2core.config import DataConfig, ModelConfig, RunConfig, TrainConfig, preset  # noqa: E402
from gpt2core.data import prepare_data  # noqa: E402
from gpt2core.defaults import auto_options, build_run_config  # noqa: E402
from gpt2core.events import EvalEvent, RunStarted, StepEvent  # noqa: E402
from gpt2core.model import GPT  # noqa: E402
from gpt2core.precision import choose_precision, device_description  # noqa: E402
from gpt2core.schedule import CosineSchedule  # noqa: E402
from gpt2core.train import train  # noqa: E402


def _device() -> torch.device:
    from gpt2core.loading import resolve_device

    return resolve_device("auto")


def _header(title: str, device: torch.device) -> None:
    print(f"\n== {title} ==")
    print(f"device: {device_description(device)}; torch {torch.__version__}; load average {os.getloadavg()[0]:.2f}")


def _run(config: RunConfig, workdir: Path, name: str, on_event=None, stop=None):
    return train(config, run_name=name, runs_dir=workdir / "runs", checkpoints_dir=workdir / "checkpoints", on_event=on_event, stop=stop)


# -- presets ------------------------------------------------------------------------------------------


def bench_presets(workdir: Path, steps: int, names: list[str] | None, batch: int | None, compile_: bool) -> None:
    device = _device()
    _header(f"preset throughput (real trainer, built-in corpus{', torch.compile' if compile_ else ''})", device)
    names = names or ["micro", "tiny", "small"] + (["gpt2"] if device.type == "cuda" else [])
    print(f"{'preset':8} {'params':>8} {'batch x ctx':>12} {'precision':>9} {'s/step':>8} {'tokens/s':>10} {'MFU':>7}")
    for name in names:
        model = preset(name)
        rows = batch or (8 if name != "micro" else 32)
        options = dict(
            preset=name,
            tokenizer="gpt2" if name == "gpt2" else ("char" if name == "micro" else "bpe"),
            cache_dir=str(workdir / "cache"),
            batch_size=rows,
            compile=compile_,
            max_steps=steps,
            max_epochs=None,
            max_training_hours=None,
            warmup_steps=2,
            eval_interval=10**9,
            eval_iters=1,
            log_interval=1,
            sample_tokens=0,
        )
        records = []
        config = build_run_config(options)
        precision = choose_precision(config.train, device).name
        _run(config, workdir, f"preset-{name}", on_event=lambda e: records.append(e) if isinstance(e, (StepEvent, RunStarted)) else None)
        params = next(e.num_params for e in records if isinstance(e, RunStarted))
        timed = [e for e in records if isinstance(e, StepEvent) and e.step > max(2, steps // 4)]  # the first steps allocate, warm caches, compile
        tps = float(np.median([e.tokens_per_sec for e in timed]))
        mfu = [e.mfu for e in timed if e.mfu is not None]
        print(
            f"{name:8} {params / 1e6:7.2f}M {rows:>5} x {model.context_length:<5} {precision:>9} {rows * model.context_length / tps:8.3f} "
            f"{tps:10.0f} {(np.median(mfu) * 100 if mfu else float('nan')):6.1f}%"
        )


# -- time to a target loss ----------------------------------------------------------------------------


def bench_target(workdir: Path, target: float) -> None:
    device = _device()
    _header(f"time to val loss {target} with the default plan (built-in corpus)", device)
    options = {**auto_options(device), "cache_dir": str(workdir / "cache")}
    config = build_run_config(options)
    prepare_data(config.data)  # tokenise outside the timed part, as a second run would
    stop = threading.Event()
    reached: list[tuple[float, int, float]] = []
    started = time.monotonic()

    def on_event(event):
        if isinstance(event, EvalEvent) and event.val_loss <= target and not reached:
            reached.append((time.monotonic() - started, event.step, event.val_loss))
            stop.set()

    result = _run(config, workdir, "target", on_event=on_event, stop=stop)
    if reached:
        seconds, step, loss = reached[0]
        print(f"reached val loss {loss:.4f} <= {target} at step {step} after {seconds:.1f} s")
    else:
        print(f"did not reach {target}: best val loss {result.best_val_loss:.4f} in {result.elapsed_s:.1f} s ({result.reason})")
    print(f"unigram baseline on this split: {result.unigram_loss:.4f}")


# -- ours vs a plain loop -----------------------------------------------------------------------------


COMPARE_MODEL = dict(context_length=64, d_model=128, num_heads=4, num_layers=4, d_ff=512, dropout=0.0)
COMPARE_TRAIN = dict(
    batch_size=12,
    learning_rate=1e-3,
    min_lr=1e-4,
    weight_decay=0.1,
    beta1=0.9,
    beta2=0.99,
    warmup_steps=100,
    gradient_clip=1.0,
    eval_interval=250,
    eval_iters=20,
    log_interval=10,
    max_epochs=None,
    max_training_hours=None,
    seed=1337,
)


def reference_loop(train_tokens: np.ndarray, val_tokens: np.ndarray, vocab_size: int, steps: int, out_dir: Path, eval_train: bool) -> float:
    """A plain training loop of the nanoGPT kind; returns the last val loss."""
    t = COMPARE_TRAIN
    B, T = t["batch_size"], COMPARE_MODEL["context_length"]
    torch.manual_seed(t["seed"])
    model = GPT(ModelConfig(vocab_size=vocab_size, **COMPARE_MODEL))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": t["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=t["learning_rate"],
        betas=(t["beta1"], t["beta2"]),
    )  # torch's default implementation for the device (nanoGPT asks for fused only on CUDA)
    schedule = CosineSchedule(t["learning_rate"], t["min_lr"], t["warmup_steps"], steps)
    splits = {"train": train_tokens, "val": val_tokens}

    def get_batch(split):
        data = splits[split]
        ix = torch.randint(len(data) - T, (B,))
        x = torch.stack([torch.from_numpy(data[i : i + T].astype(np.int64)) for i in ix.tolist()])
        y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + T].astype(np.int64)) for i in ix.tolist()])
        return x, y

    @torch.no_grad()
    def estimate_loss():
        out = {}
        model.eval()
        for split in ("train", "val") if eval_train else ("val",):
            losses = torch.zeros(t["eval_iters"])
            for k in range(t["eval_iters"]):
                x, y = get_batch(split)
                _, loss = model(x, y)
                losses[k] = loss.item()
            out[split] = losses.mean().item()
        model.train()
        return out

    best, last_val = math.inf, math.nan
    for it in range(steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = schedule.lr(it)
        if it % t["eval_interval"] == 0 or it == steps:
            last_val = estimate_loss()["val"]
            if last_val < best and it > 0:
                best = last_val
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "iter": it}, out_dir / "ckpt.pt")
        if it == steps:
            break
        x, y = get_batch("train")
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t["gradient_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if it % t["log_interval"] == 0:
            print(f"reference step {it} loss {loss.item():.4f}", file=sys.stderr, flush=True)
    return last_val


def bench_compare(workdir: Path, steps: int, with_nanogpt_eval: bool, auto_threads: bool) -> None:
    device = torch.device("cpu")
    data_cfg = DataConfig(tokenizer="char", cache_dir=str(workdir / "cache"))  # the built-in corpus, ~1.2 MB
    prepared = prepare_data(data_cfg)  # tokenised once, outside both timings
    vocab = prepared.tokenizer.vocab_size
    megabytes = sum(prepared.split_bytes.values()) / 1e6
    _header(f"ours vs a plain loop: {megabytes:.2f} MB char corpus, 4x4x128, ctx 64, batch 12, {steps} steps", device)
    print(f"train tokens {len(prepared.splits['train']):,}, val tokens {len(prepared.splits['val']):,}, vocab {vocab}")

    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])  # pay torch's one-time optimizer import before any timing
    config = RunConfig(
        model=ModelConfig(vocab_size=vocab, **COMPARE_MODEL),
        data=data_cfg,
        train=TrainConfig(device="cpu", max_steps=steps, **COMPARE_TRAIN),
        preset="bench",
    )
    train_tokens, val_tokens = np.asarray(prepared.splits["train"]), np.asarray(prepared.splits["val"])
    rows = []  # (label, seconds, final val loss, load average when it started)

    def timed(label, fn):
        load = os.getloadavg()[0]
        started = time.monotonic()
        val = fn()
        rows.append((label, time.monotonic() - started, val, load))
        print(f"  {label}: {rows[-1][1]:.1f} s", file=sys.stderr)

    # The reference runs between our two kinds of run, so a change in the machine's load shows.
    timed("ours (gpt2core.train)", lambda: _run(config, workdir, f"compare-{steps}").last_val_loss)
    timed("reference, same eval (val only)", lambda: reference_loop(train_tokens, val_tokens, vocab, steps, workdir, eval_train=False))
    if auto_threads:
        auto = config.replace(train=config.train.replace(threads="auto"))
        timed("ours, --threads auto", lambda: _run(auto, workdir, f"compare-auto-{steps}").last_val_loss)
    if with_nanogpt_eval:
        timed("reference, nanoGPT eval (train+val)", lambda: reference_loop(train_tokens, val_tokens, vocab, steps, workdir, eval_train=True))
    ours, reference = rows[0][1], rows[1][1]
    print(f"{'':38} {'wall s':>8} {'final val':>10} {'load avg':>9} {'ours/this':>10}")
    for label, seconds, val, load in rows:
        print(f"{label:38} {seconds:8.1f} {val:10.4f} {load:9.2f} {ours / seconds:10.2f}")
    print(f"ratio ours/reference (same eval): {ours / reference:.2f}  (below 1 means ours is faster)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="*", choices=["presets", "target", "compare", []], help="what to run (default: all three)")
    parser.add_argument("--steps", type=int, default=2000, help="steps of the comparison run")
    parser.add_argument("--preset-steps", type=int, default=12, help="steps per preset in the throughput table")
    parser.add_argument("--presets", default=None, help="comma-separated presets of the throughput table (default: micro,tiny,small, and gpt2 on a GPU)")
    parser.add_argument("--batch", type=int, default=None, help="batch of every preset row (default: 8, 32 for micro)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the preset rows")
    parser.add_argument("--target", type=float, default=4.0, help="val loss the default plan must reach (bpe tokens)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--nanogpt-eval", action="store_true", help="also time the reference with nanoGPT's train+val evaluation")
    parser.add_argument("--auto-threads", action="store_true", help="also time ours with --threads auto (adapts to other load)")
    parser.add_argument("--workdir", default=None, help="keep runs, checkpoints and caches here (default: a temporary directory)")
    args = parser.parse_args()
    args.sections = args.sections or ["presets", "target", "compare"]
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        if "presets" in args.sections:
            bench_presets(workdir, args.preset_steps, args.presets.split(",") if args.presets else None, args.batch, args.compile)
        if "target" in args.sections:
            bench_target(workdir, args.target)
        if "compare" in args.sections:
            bench_compare(workdir, args.steps, args.nanogpt_eval, args.auto_threads)


if __name__ == "__main__":
    main()
