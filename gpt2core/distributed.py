"""Training on several processes (GPUs, machines) with torchrun and DistributedDataParallel.

torchrun starts one process per GPU (or per share of the CPU cores) and tells each its place in
environment variables (RANK, LOCAL_RANK, WORLD_SIZE). ``Distributed.from_env``
reads them. A process started without torchrun, or by torchrun with one process, is a world of
one: every method here is then a no-op and the trainer runs exactly as a single process does.

What the trainer asks of this module, and why:

- ``start``: join the process group, nccl on CUDA and gloo on the CPU, with a timeout so that
  no collective can wait forever ($GPT2TUI_DIST_TIMEOUT seconds, 30 minutes by default);
- the batch: ``batch_size`` is the global micro-batch. Every rank draws the same global window
  starts and keeps its slice (``BatchSampler``), so N ranks x B/N rows are the rows one process
  trains on with B, and the sampler's state means the same thing at every world size;
- ``wrap`` / ``sync_gradients``: DDP, with the gradient all-reduce on the last micro-step only;
- ``agree``: one small all-gather per step carries every rank's loss, wish to stop, clock and
  reserve. The logged loss is the ranks' mean, and every rank takes its decisions (stop, time
  budget, schedule horizon, NaN skip) from the same numbers, so no rank is left waiting in a
  collective the others have quit;
- ``window_loss``: the validation windows are split across ranks and their losses combined;
- ``gather_rng`` / ``restore_rng``: every rank's RNG goes into the checkpoint (rank 0's where a
  single process keeps its own), so a resume on the same world size continues exactly.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import re
import time
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist

from gpt2core.errors import ConfigError, GPT2Error
from gpt2core.rng import capture_rng, restore_rng

TIMEOUT_ENV = "GPT2TUI_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0  # covers local rank 0 tokenising a large corpus while the others wait


class PeerLostError(GPT2Error):
    """A collective failed: another process of the run died, hung past the timeout or lost its network."""


def _lost_peer(exc: BaseException) -> bool:
    """Whether ``exc`` is a failed collective (gloo raises plain RuntimeErrors for them)."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(word in text for word in ("gloo", "NCCL", "nccl", "Connection closed by peer", "Connection reset"))


@contextlib.contextmanager
def collective(what: str) -> Iterator[None]:
    """Turn a failed collective into a PeerLostError that says what happened, in one line."""
    try:
        yield
    except Exception as exc:
        if not _lost_peer(exc):
            raise
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        detail = re.sub(r"^\[[^\]]*\]\s*", "", detail).split(" This is typically")[0]  # gloo's source location and advice
        raise PeerLostError(
            f"the processes of this run lost each other during {what}: another process probably failed "
            f"(its own messages say why) or stopped answering within ${TIMEOUT_ENV}; detail: {detail[:300]}"
        ) from exc


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"${name} is {value!r}, not an integer; it is torchrun's to set") from None


def collective_timeout() -> datetime.timedelta:
    """How long a collective may wait for the other ranks before it fails."""
    raw = os.environ.get(TIMEOUT_ENV, "")
    if not raw:
        return datetime.timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not seconds > 0:
        raise ConfigError(f"${TIMEOUT_ENV} must be a positive number of seconds, got {raw!r}")
    return datetime.timedelta(seconds=seconds)


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of rank ``rank``'s own random stream (its dropout masks) from the run's seed and
    the step it starts at: distinct for every rank and every resume point."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, np.uint64)[0])


def batch_layout(batch_size: int, grad_accum: int, context_length: int, world_size: int) -> dict:
    """How the batch flags map onto processes, for the run record: ``batch_size`` is the global
    micro-batch, so an optimizer step sees batch_size x grad_accum sequences at every world size."""
    return {
        "world_size": world_size,
        "batch_size": batch_size,
        "per_rank_batch_size": batch_size // world_size,
        "grad_accum": grad_accum,
        "sequences_per_step": batch_size * grad_accum,
        "tokens_per_step": batch_size * grad_accum * context_length,
    }


class RankWriter:
    """What a rank other than 0 holds in place of the RunWriter: the run directory, TensorBoard
    and the checkpoints are rank 0's alone, so this one writes nothing."""

    def on_event(self, event) -> None:
        pass

    def stop_requested(self) -> bool:
        return False  # rank 0 reads the stop_request file; the step agreement tells the others

    def take_write_error(self) -> None:
        return None  # writes nothing, so nothing fails

    def close(self, state: str | None = None, message: str | None = None, reason: str | None = None) -> None:
        pass


class Distributed:
    """This process's part in a distributed run; see the module docstring."""

    def __init__(self, rank: int = 0, local_rank: int = 0, world_size: int = 1):
        self.rank = rank
        self.local_rank = local_rank  # the process's place on its machine: its GPU, its turn at the data cache
        self.world_size = world_size
        self.backend: str | None = None
        self.device = torch.device("cpu")
        self._owns_group = False
        # the decisions of the latest step agreement, the same on every rank
        self.agreed_stop = False
        self.agreed_elapsed = 0.0  # the slowest rank's training seconds in this segment
        self.agreed_reserve = 0.0  # the longest evaluation + checkpoint time of any rank
        self._busy = [0.0] * world_size  # per rank: seconds spent in steps since the last report
        self._busy_steps = 0

    @classmethod
    def from_env(cls) -> "Distributed":
        """The place torchrun gave this process (or an already initialised process group); a
        world of one when there is neither."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            rank, world = dist.get_rank(), dist.get_world_size()
            return cls(rank, _env_int("LOCAL_RANK", rank), world)
        world = _env_int("WORLD_SIZE", 1)
        if world <= 1:
            return cls()
        if not dist.is_available():
            raise ConfigError("this PyTorch build has no torch.distributed, so it cannot train on several processes")
        return cls(_env_int("RANK", 0), _env_int("LOCAL_RANK", 0), world)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- the process group --------------------------------------------------------------------------

    def start(self, device: torch.device) -> torch.device:
        """Join the process group for ``device`` and return this rank's device (cuda:LOCAL_RANK)."""
        if not self.enabled:
            return device
        if device.type == "cuda":
            count = torch.cuda.device_count()
            if device.index is not None and device.index != self.local_rank:
                raise ConfigError(f"under torchrun every process takes the GPU of its local rank; use --device cuda, not {device}")
            if self.local_rank >= count:
                raise ConfigError(
                    f"process {self.rank} has local rank {self.local_rank}, but this machine has {count} GPU(s); "
                    f"start at most {count} processes per machine (--nproc)"
                )
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
            backend = "nccl"
        elif device.type == "cpu":
            backend = "gloo"
        else:
            raise ConfigError(f"training on several processes needs CUDA (nccl) or the CPU (gloo), not {device.type}; use --device cpu")
        self.device = device
        if not dist.is_initialized():
            bound = {"device_id": device} if device.type == "cuda" else {}
            dist.init_process_group(backend, timeout=collective_timeout(), **bound)
            self._owns_group = True
        self.backend = dist.get_backend()
        return device

    def close(self) -> None:
        """Leave the process group this object joined (one a caller made is theirs to close)."""
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
        self._owns_group = False

    def barrier(self) -> None:
        if self.enabled:
            with collective("a barrier"):
                dist.barrier()

    @contextlib.contextmanager
    def local_leader_first(self) -> Iterator[None]:
        """Local rank 0 runs the block first (tokenising into the cache); the other ranks of its
        machine run it afterwards and find the cache filled. A failing leader exits, and
        torchrun stops the ranks still waiting."""
        if self.enabled and self.local_rank != 0:
            self.barrier()
        yield
        if self.enabled and self.local_rank == 0:
            self.barrier()

    def broadcast_object(self, value):
        """Rank 0's ``value`` on every rank."""
        if not self.enabled:
            return value
        box = [value]
        with collective("the start"):
            dist.broadcast_object_list(box, src=0)
        return box[0]

    # -- batches and gradients ----------------------------------------------------------------------

    def rank_batch_size(self, batch_size: int) -> int:
        """This rank's share of the global micro-batch."""
        if batch_size % self.world_size:
            raise ConfigError(
                f"--batch-size {batch_size} does not split evenly over {self.world_size} processes; it is the global "
                f"batch of all processes together, so use a multiple of {self.world_size}"
            )
        return batch_size // self.world_size

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` in DDP (its parameters broadcast from rank 0 now, its gradients averaged
        across ranks in backward)."""
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        with collective("the weights' broadcast from rank 0"):
            return DistributedDataParallel(module, device_ids=device_ids)  # the GPT has no buffers to broadcast

    @contextlib.contextmanager
    def sync_gradients(self, module: torch.nn.Module, sync: bool) -> Iterator[None]:
        """A context for one micro-step's forward and backward: DDP all-reduces the gradients
        only when ``sync`` (the last micro-step); the others accumulate locally under ``no_sync``."""
        if not self.enabled:
            yield
            return
        with collective("the gradient all-reduce"), (contextlib.nullcontext() if sync else module.no_sync()):
            yield

    # -- random streams -----------------------------------------------------------------------------

    def seed_rank_rng(self, seed: int) -> None:
        """Ranks other than 0 draw dropout masks of their own; rank 0 keeps the stream a single
        process would have."""
        if self.enabled and self.rank != 0:
            torch.manual_seed(rank_seed(seed, self.rank))

    def gather_rng(self) -> dict:
        """The other ranks' RNG states for a checkpoint, as ``{"rank_rng": [rank 1, rank 2, ...]}``
        (a collective: every rank calls it); ``{}`` for one process."""
        if not self.enabled:
            return {}
        states: list = [None] * self.world_size
        with collective("a checkpoint"):
            dist.all_gather_object(states, capture_rng())
        return {"rank_rng": states[1:]}

    def restore_rng(self, state: dict, *, seed: int, step: int) -> None:
        """This rank's RNG from a trainer state: rank 0 (and a single process) takes ``rng``,
        rank r its saved ``rank_rng`` entry, or, when the checkpoint was written by fewer
        ranks, a fresh stream seeded from (seed, rank, step)."""
        if self.rank == 0:
            restore_rng(state["rng"])
            return
        saved = state.get("rank_rng") or []
        if self.rank - 1 < len(saved):
            restore_rng(saved[self.rank - 1])
        else:
            torch.manual_seed(rank_seed(seed, self.rank, step))

    # -- the step agreement -------------------------------------------------------------------------

    def agree(self, loss_sum: torch.Tensor, norm: torch.Tensor, *, stop: bool, elapsed: float, reserve: float, step_started: float) -> tuple[float, float]:
        """The step's one collective. Every rank gives its loss, whether it was asked to stop,
        its training seconds in this segment, its evaluation + checkpoint seconds and when its
        step began; every rank gets back the same (mean loss, grad norm) and the same
        ``agreed_stop`` / ``agreed_elapsed`` / ``agreed_reserve`` to decide by."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # so the step's seconds are the GPU's, not the launch queue's
        busy = time.monotonic() - step_started
        mine = torch.cat(
            [
                torch.stack([loss_sum.detach().double().reshape(()), norm.detach().double().reshape(())]),
                torch.tensor([float(stop), elapsed, reserve, busy], dtype=torch.float64, device=loss_sum.device),
            ]
        )  # (6,)
        rows = [torch.empty_like(mine) for _ in range(self.world_size)]
        with collective("a step's agreement"):
            dist.all_gather(rows, mine)
            table = torch.stack(rows).tolist()  # (world, 6): the step's one device-to-host copy
        loss = sum(row[0] for row in table) / self.world_size
        norm_value = table[0][1]  # the gradients were all-reduced, so every rank computed this norm; rank 0's decides
        self.agreed_stop = any(row[2] > 0 for row in table)
        self.agreed_elapsed = max(row[3] for row in table)
        self.agreed_reserve = max(row[4] for row in table)
        for i, row in enumerate(table):
            self._busy[i] += row[5]
        self._busy_steps += 1
        return loss, norm_value

    def rank_tokens_per_sec(self, tokens_per_step: int) -> list[float] | None:
        """Each rank's tokens/s since the last call: its share of every step's tokens over the
        seconds it spent in those steps (up to the step agreement, so waiting for a slower rank
        in the gradient all-reduce counts, waiting in the agreement does not). None for one process."""
        if not self.enabled or not self._busy_steps:
            return None
        tokens = tokens_per_step / self.world_size * self._busy_steps
        speeds = [tokens / busy if busy > 0 else 0.0 for busy in self._busy]
        self._busy, self._busy_steps = [0.0] * self.world_size, 0
        return speeds

    # -- evaluation ---------------------------------------------------------------------------------

    def window_loss(
        self, model: torch.nn.Module, tokens: np.ndarray, starts: np.ndarray, *, batch_size: int, autocast=None, should_stop=None
    ) -> float:
        """Mean loss over the windows ``starts``, each rank scoring every world_size-th one; the
        same number a single process computes over all of them (up to summation order).

        ``should_stop`` (asked between batches; EvaluationStopped when True) applies to a single
        process only: ranks leaving an evaluation at different batches would leave the others
        waiting in its all_reduce, so a stop on several ranks waits for the evaluation's end."""
        from gpt2core.evaluate import window_loss

        if not self.enabled:
            return window_loss(model, tokens, starts, batch_size=batch_size, autocast=autocast, should_stop=should_stop)
        mine = starts[self.rank :: self.world_size]
        loss = window_loss(model, tokens, mine, batch_size=batch_size, autocast=autocast) if len(mine) else 0.0
        total = torch.tensor([loss * len(mine), float(len(mine))], dtype=torch.float64, device=self.device)
        with collective("an evaluation"):
            dist.all_reduce(total)
            weighted, count = total.tolist()
        return weighted / count if count else math.nan
