"""nanoGPT's own train.py against `gpt2tui train` on nanoGPT's CPU recipe, in one invocation.

    python bench/bench_nanogpt.py --nanogpt /tmp/nanogpt                 # one run each
    python bench/bench_nanogpt.py --nanogpt /tmp/nanogpt --seeds 1337,1,2  # seed spread
    python bench/bench_nanogpt.py --nanogpt /tmp/nanogpt --threads 1     # a machine others share
    python bench/bench_nanogpt.py --nanogpt /tmp/nanogpt --repeat 2 --ours-extra=--precision=fp32

The recipe is the one nanoGPT's README gives for a CPU: tiny shakespeare at character level,
4 layers, 4 heads, 128 wide, context 64, batch 12, 2000 iterations, lr 1e-3 -> 1e-4 (cosine),
warmup 100, beta2 0.99, weight decay 0.1, clip 1.0, dropout 0, no biases, evaluation every 250
iterations on 20 batches. Both sides train on the same 90% of the text (nanoGPT's train.bin);
ours reads it as a local dataset directory (train.txt / validation.txt / test.txt), so nothing of
it is held out a second time.

Each side runs as the user would start it, a fresh process (import time included), one after
the other, alternating reference / ours for every seed and repeat, so a change in the machine's
load hits both. A warm-up run of ours (10 steps) fills the token cache and the disk cache first.
Afterwards both are scored by the same code (`score`) on the same windows: every
non-overlapping window of 64 characters of nanoGPT's val split (1742 windows, 111,488
predicted characters), with each side's own model code and tokenizer; nanoGPT's saved
checkpoint (the one its evaluation found best) against our best/ and our last step.

The reference is nanoGPT's real train.py, never copied here: pass a checkout with --nanogpt
(`git clone` github.com/karpathy/nanoGPT). Its data/shakespeare_char/prepare.py downloads
input.txt; without network put tiny shakespeare there yourself (1,115,394 characters; it is
karpathy/char-rnn's data/tinyshakespeare/input.txt). When train.bin / val.bin / meta.pkl are
missing this script writes them the way prepare.py does (sorted characters, first 90% train).
nanoGPT has no seed option: a seed other than its 1337 is given by wrapping torch.manual_seed
(the wrapper is the few lines in `_reference_command`).
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpt2core.checkpoint import load_checkpoint  # noqa: E402
from gpt2core.precision import cpu_flags, cpu_peak_flops, device_description  # noqa: E402

STEPS = 2000
CONTEXT = 64

# nanoGPT's README, "I only have a macbook" (the CPU recipe), word for word.
REFERENCE_ARGS = (
    "config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20 --log_interval=1 "
    "--block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 "
    "--lr_decay_iters=2000 --dropout=0.0"
)

# The same recipe in our flags. nanoGPT's defaults that its command does not name are spelled out:
# weight_decay 0.1, grad_clip 1.0, beta1 0.9, d_ff 4 x n_embd; bias False goes in a --config file
# (bias = false), which every version of gpt2tui reads; so does nanoGPT's exact GELU (nn.GELU(), erf),
# where ours defaults to GPT-2's tanh form (Hugging Face parity): the same network on both sides.
RECIPE_TOML = "[model]\nbias = false\ngelu = \"erf\"\n"
OURS_ARGS = (
    "--tokenizer char --context-length 64 --d-model 128 --num-heads 4 --num-layers 4 --d-ff 512 --dropout 0 "
    "--batch-size 12 --lr 1e-3 --min-lr 1e-4 --weight-decay 0.1 --beta1 0.9 --beta2 0.99 --warmup-steps 100 "
    "--gradient-clip 1.0 --eval-interval 250 --eval-iters 20 --device cpu --plain"
)


def _data_dir(nanogpt: Path) -> Path:
    return nanogpt / "data" / "shakespeare_char"


def prepare(nanogpt: Path, workdir: Path) -> tuple[str, str]:
    """(train text, val text) of nanoGPT's split; writes its .bin files if missing, and our
    dataset directory holding the same two texts."""
    data = _data_dir(nanogpt)
    source = data / "input.txt"
    if not (nanogpt / "train.py").exists() or not source.exists():
        sys.exit(f"error: {nanogpt} needs train.py and data/shakespeare_char/input.txt (see --help)")
    text = source.read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)  # prepare.py's split
    train_text, val_text = text[:cut], text[cut:]
    chars = sorted(set(text))
    if not all((data / f).exists() for f in ("train.bin", "val.bin", "meta.pkl")):
        index = {c: i for i, c in enumerate(chars)}
        for name, part in (("train.bin", train_text), ("val.bin", val_text)):
            np.array([index[c] for c in part], dtype=np.uint16).tofile(data / name)
        with open(data / "meta.pkl", "wb") as f:  # train.py reads vocab_size from it
            pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": index}, f)
    if os.path.getsize(data / "val.bin") != 2 * len(val_text):
        sys.exit(f"error: {data}/val.bin is not the last 10% of input.txt; delete the .bin files to rewrite them")
    ours = workdir / "shakespeare"
    ours.mkdir(parents=True, exist_ok=True)
    (ours / "train.txt").write_text(train_text, encoding="utf-8")
    (ours / "validation.txt").write_text(val_text, encoding="utf-8")
    (ours / "test.txt").write_text(val_text, encoding="utf-8")  # a test split present: none is carved from train
    (workdir / "recipe.toml").write_text(RECIPE_TOML, encoding="utf-8")
    return train_text, val_text


def _reference_command(nanogpt: Path, out_dir: Path, seed: int, steps: int) -> list[str]:
    args = REFERENCE_ARGS.replace("--max_iters=2000 --lr_decay_iters=2000", f"--max_iters={steps} --lr_decay_iters={steps}")
    argv = ["train.py", *shlex.split(args), f"--out_dir={out_dir}"]
    wrapper = (
        "import runpy, sys, torch\n"
        "_seed = torch.manual_seed\n"
        f"torch.manual_seed = lambda s: _seed(s - 1337 + {seed})\n"  # train.py seeds 1337 + rank
        f"sys.argv = {argv!r}\n"
        "runpy.run_path('train.py', run_name='__main__')\n"
    )
    return [sys.executable, "-c", wrapper]


def _ours_command(workdir: Path, name: str, seed: int, steps: int, extra: list[str]) -> list[str]:
    gpt2tui = Path(sys.executable).with_name("gpt2tui")
    return [
        str(gpt2tui), "train", "--dataset-name", str(workdir / "shakespeare"), "--config", str(workdir / "recipe.toml"),
        *shlex.split(OURS_ARGS),
        "--max-steps", str(steps), "--seed", str(seed), "--run-name", name, "--cache-dir", str(workdir / "cache"),
        "--runs-dir", str(workdir / "runs"), "--checkpoints-dir", str(workdir / "checkpoints"), *extra,
    ]  # fmt: skip


def _timed(command: list[str], cwd: Path, log: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run. The CPU time (user + system of the child) is the
    number to compare on a machine that others load: at one thread it is the wall time the run
    would take alone, while the wall time also counts the time others held the cores."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"error: {command[0]} exited {done.returncode}; its output is in {log}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@torch.no_grad()
def score(logits_of, ids: torch.Tensor) -> float:
    """Mean next-token cross-entropy (nats) over every non-overlapping CONTEXT window of ``ids``
    (1-D), batch by batch; ``logits_of(x)`` maps (B, T) ids to (B, T, V) logits."""
    n = (len(ids) - 1) // CONTEXT
    x = ids[: n * CONTEXT].view(n, CONTEXT)  # (n, T)
    y = ids[1 : n * CONTEXT + 1].view(n, CONTEXT)  # (n, T): each position's next character
    total = 0.0
    for i in range(0, n, 256):
        logits = logits_of(x[i : i + 256]).float()  # (b, T, V)
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), y[i : i + 256].flatten(), reduction="sum").item()
    return total / (n * CONTEXT)


def score_reference(nanogpt: Path, out_dir: Path, val_text: str, chars: list[str]) -> tuple[float, int]:
    sys.path.insert(0, str(nanogpt))
    from model import GPT as NanoGPT, GPTConfig  # nanoGPT's model.py, from the user's checkout

    checkpoint = torch.load(out_dir / "ckpt.pt", map_location="cpu", weights_only=True)
    model = NanoGPT(GPTConfig(**checkpoint["model_args"]))
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in checkpoint["model"].items()})
    model.eval()
    index = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([index[c] for c in val_text])
    # nanoGPT returns every position's logits only when given targets; the targets are ignored here.
    return score(lambda x: model(x, x)[0], ids), int(checkpoint["iter_num"])


def score_ours(checkpoint: Path, val_text: str) -> tuple[float, int]:
    loaded = load_checkpoint(checkpoint)
    ids = torch.tensor(loaded.tokenizer.encode(val_text))
    if len(ids) != len(val_text):
        sys.exit("error: our char tokenizer did not give one token per character")
    return score(lambda x: loaded.model(x)[0], ids), int(loaded.info.meta.get("step", -1))


def _machine() -> str:
    flags = cpu_flags()
    named = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return (
        f"{device_description(torch.device('cpu'))}; {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; "
        f"flags: {' '.join(named) or 'unknown'}; torch {torch.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nanogpt", type=Path, required=True, help="a nanoGPT checkout (train.py, model.py, data/shakespeare_char/input.txt)")
    parser.add_argument("--seeds", default="1337", help="comma-separated seeds; each is run by both sides")
    parser.add_argument("--repeat", type=int, default=1, help="runs per seed and side")
    parser.add_argument("--steps", type=int, default=STEPS, help="iterations (the recipe's 2000)")
    parser.add_argument("--only", choices=["both", "ours", "reference"], default="both", help="run one side only")
    parser.add_argument("--ours-extra", default="", help="extra flags for gpt2tui train, e.g. '--precision fp32'")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for both sides (1 on a shared machine; default: inherited)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep runs and checkpoints here (default: a temporary directory)")
    args = parser.parse_args()
    nanogpt = args.nanogpt.resolve()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # read by both children's torch at start
        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    extra = shlex.split(args.ours_extra)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        _, val_text = prepare(nanogpt, workdir)
        chars = sorted(set((_data_dir(nanogpt) / "input.txt").read_text(encoding="utf-8")))
        print(f"machine: {_machine()}")
        print(f"peak (this CPU's nominal): fp32 {cpu_peak_flops('fp32') or float('nan'):.3g} FLOP/s, bf16 {cpu_peak_flops('bf16') or float('nan'):.3g}")
        print(f"ours: {' '.join(_ours_command(workdir, 'NAME', 0, args.steps, extra)[2:])}")
        print(f"reference: python train.py {REFERENCE_ARGS}")
        if args.only != "reference":
            _timed(_ours_command(workdir, "warmup", 1, 10, extra), workdir, workdir / "warmup.log")
        rows = []  # (side, seed, repeat, seconds, load, scored loss, scored step, best-or-final label)
        for seed in seeds:
            for r in range(args.repeat):
                sides = ["reference", "ours"] if (seeds.index(seed) * args.repeat + r) % 2 == 0 else ["ours", "reference"]
                for side in sides:
                    if args.only not in ("both", side):
                        continue
                    load = os.getloadavg()[0]
                    name = f"{side}-{seed}-{r}"
                    if side == "reference":
                        out = workdir / name
                        seconds, cpu = _timed(_reference_command(nanogpt, out, seed, args.steps), nanogpt, workdir / f"{name}.log")
                        loss, step = score_reference(nanogpt, out, val_text, chars)
                        rows.append((side, seed, r, seconds, cpu, load, loss, step, math.nan))
                    else:
                        seconds, cpu = _timed(_ours_command(workdir, name, seed, args.steps, extra), workdir, workdir / f"{name}.log")
                        best, best_step = score_ours(workdir / "checkpoints" / name / "best", val_text)
                        last, _ = score_ours(workdir / "checkpoints" / name / f"step-{args.steps:08d}", val_text)
                        rows.append((side, seed, r, seconds, cpu, load, best, best_step, last))
                    print(f"  {side} seed {seed} run {r}: {seconds:.1f} s wall, {cpu:.1f} s CPU, scored val {rows[-1][6]:.4f}", file=sys.stderr, flush=True)
        print(f"\n{'side':10} {'seed':>5} {'run':>3} {'wall s':>8} {'CPU s':>8} {'load':>5} {'val (saved)':>12} {'at step':>8} {'val (last)':>11}")
        for side, seed, r, seconds, cpu, load, loss, step, last in rows:
            print(f"{side:10} {seed:5d} {r:3d} {seconds:8.1f} {cpu:8.1f} {load:5.2f} {loss:12.4f} {step:8d} {last:11.4f}")
        means = {}
        for side in ("reference", "ours"):
            mine = [row for row in rows if row[0] == side]
            if mine:
                vals = [row[6] for row in mine]
                spread = f" +- {statistics.stdev(vals):.4f} (sd)" if len(vals) > 1 else ""
                means[side] = (statistics.mean(r[3] for r in mine), statistics.mean(r[4] for r in mine))
                print(f"{side:10} mean wall {means[side][0]:.1f} s, CPU {means[side][1]:.1f} s, val {statistics.mean(vals):.4f}{spread} over {len(vals)}")
        if len(means) == 2:
            (ref_wall, ref_cpu), (our_wall, our_cpu) = means["reference"], means["ours"]
            print(f"ratio ours/nanoGPT: wall {our_wall / ref_wall:.2f}, CPU {our_cpu / ref_cpu:.2f}  (below 1: ours is faster)")
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
