"""Our GPT against transformers' GPT2LMHeadModel of the same shape and the same weights.

Measured in one run, on one machine, interleaved (ours, reference, ours, ...) so that load from
other processes hits both alike; each number is the best (fastest) of the timed iterations,
the one least disturbed by whatever else the machine was doing (as timeit reports).

- train fp32: forward + backward tokens/s (batch x sequence tokens per step);
- train bf16: the same under torch.autocast(bfloat16), where the CPU has native bf16
  (avx512_bf16 / AMX) or on a GPU; otherwise skipped with a note (``--bf16 on`` forces it);
- generate: new tokens/s at batch 1, ours (``gpt2core.generate`` with its KV cache) against
  ``GPT2LMHeadModel.generate()``, both sampling with the same settings (temperature 0.8,
  top-k 50, top-p 0.95, repetition penalty 1.2 over the whole sequence), prompt included.

Targets (docs/INFERENCE.md): training >= 1.0x the reference at equal precision; generation
>= 2.0x. Usage:

    python bench/bench_model.py                          # tiny, small and gpt2 shapes, a few minutes on 2 cores
    python bench/bench_model.py --shapes gpt2 --seq-len 128 --iters 5 --device cuda
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

import torch

from gpt2core.config import preset
from gpt2core.generation import generate
from gpt2core.hf import hf_state_dict
from gpt2core.model import GPT

SAMPLING = dict(temperature=0.8, top_k=50, top_p=0.95, repetition_penalty=1.2)
TARGETS = {"train": 1.0, "generate": 2.0}


@dataclass
class Row:
    what: str
    device: str
    ours: float
    reference: float
    unit: str
    target: float | None

    @property
    def ratio(self) -> float:
        return self.ours / self.reference if self.reference else float("nan")


def build_pair(shape: str, device: torch.device):
    """Our model and transformers' with identical weights, both in eval mode, dropout off."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = preset(shape).replace(dropout=0.0)
    torch.manual_seed(0)
    ours = GPT(config).to(device)
    hf_config = GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.context_length,
        n_embd=config.d_model,
        n_layer=config.num_layers,
        n_head=config.num_heads,
        n_inner=config.d_ff,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=config.layer_norm_eps,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="sdpa",
    )
    reference = GPT2LMHeadModel(hf_config).to(device)
    missing, unexpected = reference.load_state_dict(hf_state_dict(ours), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    reference.tie_weights()
    ours.eval()
    reference.eval()
    idx = torch.randint(0, config.vocab_size, (1, 16), device=device)
    with torch.no_grad():
        diff = (ours(idx)[0] - reference(idx).logits).abs().max().item()
    return ours, reference, diff


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved(fn_ours, fn_ref, iters: int, warmup: int, device: torch.device) -> tuple[float, float]:
    """Best seconds of each, run alternately."""
    for _ in range(warmup):
        fn_ours()
        fn_ref()
    ours, ref = [], []
    for _ in range(iters):
        ours.append(timed(fn_ours, device))
        ref.append(timed(fn_ref, device))
    return min(ours), min(ref)


def bench_train(ours, reference, batch, seq_len, iters, warmup, device, bf16: bool) -> tuple[float, float]:
    vocab = ours.config.vocab_size
    x = torch.randint(0, vocab, (batch, seq_len), device=device)
    y = torch.randint(0, vocab, (batch, seq_len), device=device)
    ours.train()
    reference.train()
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)  # noqa: E731

    def step_ours():
        with autocast():
            _, loss = ours(x, y)
        loss.backward()
        ours.zero_grad(set_to_none=True)

    def step_ref():
        with autocast():
            loss = reference(input_ids=x, labels=y).loss
        loss.backward()
        reference.zero_grad(set_to_none=True)

    t_ours, t_ref = interleaved(step_ours, step_ref, iters, warmup, device)
    ours.eval()
    reference.eval()
    tokens = batch * seq_len
    return tokens / t_ours, tokens / t_ref


def bench_generate(ours, reference, prompt_len, new_tokens, iters, warmup, device) -> tuple[float, float]:
    idx = torch.randint(0, ours.config.vocab_size, (1, prompt_len), device=device)
    counts = {}

    def gen_ours():
        out = generate(ours, idx, max_new_tokens=new_tokens, seed=0, repetition_window=0, **SAMPLING)
        counts["ours"] = out.size(1)

    def gen_ref():
        with torch.no_grad():
            out = reference.generate(
                idx,
                do_sample=True,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=0,
                **SAMPLING,
            )
        counts["reference"] = out.size(1) - prompt_len

    t_ours, t_ref = interleaved(gen_ours, gen_ref, iters, warmup, device)
    assert counts["ours"] == counts["reference"] == new_tokens, counts
    return new_tokens / t_ours, new_tokens / t_ref


def native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="tiny,small,gpt2", help="comma-separated presets (default: %(default)s)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4, help="training batch (default: %(default)s)")
    parser.add_argument("--seq-len", type=int, default=0, help="training sequence length; 0 = min(context, 128), 64 for gpt2-size shapes")
    parser.add_argument("--iters", type=int, default=7, help="timed iterations of each; gpt2-size shapes run 2 fewer (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=0, help="generated tokens; 0 = 128, 32 for gpt2-size shapes")
    parser.add_argument("--bf16", choices=["auto", "on", "off"], default="auto", help="bf16 autocast rows (default: where native)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    do_bf16 = args.bf16 == "on" or (args.bf16 == "auto" and native_bf16(device))
    notes = []
    if args.bf16 == "auto" and not do_bf16:
        notes.append(f"bf16 autocast skipped: this {device.type} has no native bf16 (no avx512_bf16/AMX); --bf16 on forces it")

    rows: list[Row] = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}", file=sys.stderr)
    for shape in [s.strip() for s in args.shapes.split(",") if s.strip()]:
        ours, reference, diff = build_pair(shape, device)
        big = ours.config.d_model >= 768
        seq_len = min(args.seq_len or (64 if big else 128), ours.config.context_length)
        # transformers cannot generate past the context (ours can), so stay inside it
        new_tokens = min(args.new_tokens or (32 if big else 128), ours.config.context_length - args.prompt_len)
        iters = max(1, args.iters - 2) if big else args.iters
        print(f"{shape}: {ours.num_params() / 1e6:.1f}M params, max |logit diff| {diff:.1e}", file=sys.stderr)
        train = bench_train(ours, reference, args.batch, seq_len, iters, args.warmup, device, bf16=False)
        rows.append(Row(f"{shape} train fp32 B{args.batch} T{seq_len}", device.type, *train, "tok/s", TARGETS["train"]))
        if do_bf16:
            train = bench_train(ours, reference, args.batch, seq_len, iters, args.warmup, device, bf16=True)
            rows.append(Row(f"{shape} train bf16 B{args.batch} T{seq_len}", device.type, *train, "tok/s", TARGETS["train"]))
        gen = bench_generate(ours, reference, args.prompt_len, new_tokens, iters, args.warmup, device)
        rows.append(Row(f"{shape} generate B1 +{new_tokens}", device.type, *gen, "tok/s", TARGETS["generate"]))
        del ours, reference

    header = f"{'what':<32} {'device':<6} {'ours':>10} {'reference':>10} {'ratio':>7}  target"
    print(header)
    print("-" * len(header))
    for row in rows:
        verdict = "" if row.target is None else (f">={row.target:.1f}x " + ("met" if row.ratio >= row.target else "MISSED"))
        print(f"{row.what:<32} {row.device:<6} {row.ours:>10.1f} {row.reference:>10.1f} {row.ratio:>6.2f}x  {verdict}")
    print(f"(reference: transformers {__import__('transformers').__version__} GPT2LMHeadModel, sdpa attention; units: tokens/s)")
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
