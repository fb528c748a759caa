"""What a training run trains with, built once before the loop: ``build_run`` returns the
run config as settled and a ``RunParts``.

The order of the steps is part of reproducibility: the seed is set before the model is
built, every rank's own dropout stream after the DDP wrap, the optimizer after both; a
resumed run then loads the saved state dicts over these (gpt2core.train.Trainer._restore).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from gpt2core.checkpoint import CheckpointStore, load_checkpoint
from gpt2core.config import RunConfig
from gpt2core.data import BatchSampler, PreparedData, eval_starts, prepare_data
from gpt2core.distributed import Distributed
from gpt2core.errors import ConfigError
from gpt2core.evaluate import eval_batch_size
from gpt2core.init_from import StartPoint
from gpt2core.model import GPT
from gpt2core.optim import build_optimizer
from gpt2core.precision import Precision, choose_precision, configure_backends, peak_flops
from gpt2core.schedule import RunPlan
from gpt2core.threads import ThreadTuner
from gpt2core.train_resume import Resume


@dataclass
class RunParts:
    """The objects a run trains with; the loop uses them, only their own state changes."""

    device: torch.device  # where it trains (cuda:LOCAL_RANK under torchrun)
    precision: Precision  # the autocast dtype, and whether fp16 needs loss scaling
    data: PreparedData  # the token splits and the tokenizer
    val_tokens: np.ndarray  # the val split the fixed evaluation windows are cut from
    eval_windows: np.ndarray  # the window starts every evaluation uses (like with like)
    eval_batch: int  # windows per evaluation forward pass (memory-bounded)
    model: GPT  # the weights: what is saved and sampled from
    forward: Callable  # the model as a step calls it: compiled and/or DDP-wrapped
    optimizer: torch.optim.Optimizer  # AdamW (gpt2core.optim.build_optimizer)
    scaler: torch.amp.GradScaler  # loss scaling; enabled for fp16 only
    sampler: BatchSampler  # this rank's training batches, resumable
    store: CheckpointStore  # the run's checkpoint directory (rank 0 cleans it up)
    thread_tuner: ThreadTuner | None  # --threads auto on one CPU process; None otherwise
    peak: float | None  # the device's peak FLOP/s for MFU; None when unknown
    flops_per_token: float  # model FLOPs per trained token
    tokens_per_step: int  # tokens in one optimizer step, all ranks together
    plan: RunPlan  # the limits, the lr schedule and a budget's horizon


def build_run(
    config: RunConfig, dist: Distributed, device: torch.device, checkpoint_dir: Path, *, resume: Resume | None, start: StartPoint | None
) -> tuple[RunConfig, RunParts]:
    """The run config as settled (the tokenizer's vocab size; on the CPU the thread count,
    recorded so a resume reuses it) and the parts; ``resume`` gives the weights, tokenizer
    and corpus (all checked when the Trainer was made), ``start`` those of --init-from."""
    t = config.train
    resume_dir = resume.directory if resume is not None else None
    rank_batch = dist.rank_batch_size(t.batch_size)  # --batch-size is the global micro-batch
    precision = choose_precision(t, device)
    configure_backends(device)
    torch.manual_seed(t.seed)
    loaded = load_checkpoint(resume_dir, device=device, verify=False) if resume_dir else None
    with dist.local_leader_first():  # one tokenisation per machine; the other ranks read its cache
        data = prepare_data(config.data, tokenizer=loaded.tokenizer if loaded else (start.tokenizer if start else None), corpus=resume.corpus if resume else None)
    config = config.replace(model=config.model.replace(vocab_size=data.tokenizer.vocab_size))
    T = config.model.context_length
    data.require("train", T + 1)
    val_tokens = data.require("val", T + 1)

    if loaded is not None:
        model = loaded.model
        if model.config != config.model:
            raise ConfigError(f"{resume_dir} holds a model of another shape than the run config says")
    else:
        model = (start.model_for(config) if start else GPT(config.model)).to(device)
    model.train()
    forward = torch.compile(model) if t.compile else model
    forward = dist.wrap(forward)  # DDP: rank 0's weights everywhere, gradients averaged
    dist.seed_rank_rng(t.seed)  # every rank its own dropout masks
    optimizer = build_optimizer(model, t, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.needs_scaler)
    sampler = BatchSampler(data.splits["train"], rank_batch, T, seed=t.seed + 1, device=device, rank=dist.rank, world_size=dist.world_size)
    thread_tuner = None
    if device.type == "cpu":  # Trainer.run() puts torch's thread count back afterwards
        if t.threads == "auto" and torch.get_num_threads() > 1 and not dist.enabled:
            thread_tuner = ThreadTuner(torch.get_num_threads())
        else:
            # A fixed count, recorded in the run config (so in every checkpoint): the sums of
            # a step depend on it, and a resume reuses it unless told otherwise.
            threads = t.threads if isinstance(t.threads, int) else torch.get_num_threads()
            torch.set_num_threads(threads)
            config = config.replace(train=t.replace(threads=threads))
            t = config.train
    tokens_per_step = t.batch_size * t.grad_accum * T
    parts = RunParts(
        device=device,
        precision=precision,
        data=data,
        val_tokens=val_tokens,
        eval_windows=eval_starts(len(val_tokens), T, t.eval_iters * t.batch_size),
        eval_batch=eval_batch_size(T, config.model.vocab_size, floor=t.batch_size),
        model=model,
        forward=forward,
        optimizer=optimizer,
        scaler=scaler,
        sampler=sampler,
        store=CheckpointStore(checkpoint_dir, keep_last=t.keep_last, cleanup=dist.is_main),
        thread_tuner=thread_tuner,
        peak=peak_flops(device, precision),
        flops_per_token=config.model.flops_per_token(T),
        tokens_per_step=tokens_per_step,
        plan=RunPlan.from_limits(t, len(data.splits["train"]) / tokens_per_step),
    )
    return config, parts
