"""The training loop: it reads top to bottom, reports through events and honours a stop flag.

One optimizer step: the learning rate for this step; ``grad_accum`` micro-batches forward and
backward (under autocast, scaled when fp16); unscale, clip, and one read of (loss, grad norm)
from the device to decide whether the update is safe; the update (or a skip, if the loss or
gradients are NaN/Inf); then logging, evaluation (val loss, a text sample), checkpoints and the
stop check on their schedules. Everything a resumed run needs to continue exactly is in the
checkpoint: weights, optimizer, scaler, the schedule as settled (which limit governs it), data
sampler, every RNG, the counters, the train-loss accumulator, an evaluation a stop cut short,
and the thread count (in the run config). ``_loop`` is one short loop, a line per phase; the
bad-step counter and the speed meter are small objects of their own (gpt2core.train_meters),
and the budget and horizon live in gpt2core.schedule.RunPlan.

No global state: ``train`` can be called again and again in one process (the search does), and
signals are the CLI's business; the library only looks at ``stop`` and the run's stop_request.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from gpt2core.checkpoint import CheckpointStore, load_checkpoint, load_trainer_state
from gpt2core.config import RunConfig
from gpt2core.data import BatchSampler, CorpusText, PreparedData, check_corpus_unchanged, eval_starts, load_corpus, prepare_data
from gpt2core.defaults import resolve_tokenizer, resume_point
from gpt2core.distributed import Distributed, RankWriter, batch_layout
from gpt2core.errors import CheckpointError, ConfigError, GPT2Error
from gpt2core.evaluate import EvaluationStopped, eval_batch_size
from gpt2core.events import (
    CheckpointEvent,
    EvalEvent,
    Event,
    FailedEvent,
    FinishedEvent,
    RunStarted,
    SampleEvent,
    StepEvent,
    WarningEvent,
)
from gpt2core.init_from import INIT_FROM_KEY, StartPoint, start_point_for
from gpt2core.model import GPT
from gpt2core.optim import build_optimizer
from gpt2core.precision import choose_precision, configure_backends, device_description, peak_flops
from gpt2core.rng import capture_rng
from gpt2core.rundir import METRICS, STATUS, RunLock, RunWriteError, RunWriter, check_run_name
from gpt2core.schedule import RunPlan
from gpt2core.threads import ThreadTuner
from gpt2core.train_meters import BadSteps, SpeedMeter

STATE_FORMAT = 1


def check_trainer_state(state: dict, where: Path) -> None:
    """Refuse a trainer state whose fields have the wrong types (a damaged or crafted
    trainer_state.json), naming the field, before anything is tokenised or written; a wrong
    type would otherwise surface as a TypeError deep inside torch mid-start-up."""

    def whole(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    def number(value: object) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    optimizer, sampler, schedule = state.get("optimizer"), state.get("sampler"), state.get("schedule")
    checks = {
        "step": whole(state.get("step")),
        "tokens_seen": whole(state.get("tokens_seen")),
        "train_time_s": number(state.get("train_time_s")) and state["train_time_s"] >= 0,
        "best_val_loss": state.get("best_val_loss") is None or number(state["best_val_loss"]),
        "last_val_loss": state.get("last_val_loss") is None or number(state["last_val_loss"]),
        "bad_in_a_row": whole(state.get("bad_in_a_row", 0)),
        "skipped": whole(state.get("skipped", 0)),
        "optimizer": isinstance(optimizer, dict) and isinstance(optimizer.get("state"), dict) and isinstance(optimizer.get("param_groups"), list),
        "scaler": state.get("scaler") is None or isinstance(state["scaler"], dict),
        "sampler": isinstance(sampler, dict) and isinstance(sampler.get("generator"), torch.Tensor) and whole(sampler.get("batches_drawn")),
        "schedule": isinstance(schedule, dict) and whole(schedule.get("warmup_steps")) and (schedule.get("horizon") is None or whole(schedule["horizon"])),
        "rng": isinstance(state.get("rng"), dict) and isinstance(state["rng"].get("torch"), torch.Tensor),
    }
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise CheckpointError(f"{where} is damaged: its field {bad[0]!r} is missing or has the wrong type; resume from another checkpoint")


@dataclass(frozen=True)
class TrainResult:
    run_name: str
    reason: str  # max_steps / max_epochs / time_budget / stopped / diverged
    step: int
    best_val_loss: float | None
    last_val_loss: float | None
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    run_dir: Path
    checkpoint_dir: Path
    elapsed_s: float  # training time of the whole run, resumes included
    unigram_loss: float  # the val loss of a model that knows only token frequencies
    message: str | None = None  # why a diverged run stopped
    threads: int | str | None = None  # CPU threads used (a count, or "auto" for the tuner); None off the CPU


def _params_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


class Trainer:
    """One training run; ``run()`` does it and returns a TrainResult. See ``train``."""

    def __init__(
        self,
        config: RunConfig | None,
        *,
        run_name: str | None = None,
        runs_dir: str | Path = "runs",
        checkpoints_dir: str | Path = "checkpoints",
        resume_from: str | Path | None = None,
        on_event: Callable[[Event], None] | None = None,
        stop: threading.Event | None = None,
        tensorboard: bool = True,
        init_from: "str | Path | StartPoint | None" = None,
        allow_data_change: bool = False,
    ):
        self.stop = stop or threading.Event()
        self.user_on_event = on_event
        self.dist = Distributed.from_env()  # a world of one without torchrun
        self.runs_dir = Path(runs_dir)
        self.checkpoints_root = Path(checkpoints_dir)
        self.tensorboard = tensorboard
        self.resume_dir: Path | None = None
        self.resumed_run_name: str | None = None
        self.state: dict | None = None
        self.corpus: CorpusText | None = None  # a resumed run's corpus, read to compare with its checkpoint
        self.data_changes: list[str] = []  # how the corpus differs from a resumed checkpoint's (allowed by the caller)
        self.start: StartPoint | None = None  # the weights a new run starts from (--init-from)
        if init_from is not None:  # refused with resume_from, read and checked before anything is written
            self.start, config = start_point_for(init_from, config, resume_from=resume_from, checkpoints_dir=self.checkpoints_root)
        self.init_record = self.start.record() if self.start else None
        if resume_from is not None:
            self.resume_dir, info, saved = resume_point(resume_from, self.checkpoints_root)
            # the run's newest checkpoint as this process chose: under the claim it must still be
            self.latest_at_choice = CheckpointStore(self.resume_dir.parent, cleanup=False).latest()
            self.state = load_trainer_state(self.resume_dir)
            found = self.state.get("format") if isinstance(self.state, dict) else None
            if found != STATE_FORMAT:  # refused now, before any tokenising or process group
                raise CheckpointError(f"{self.resume_dir} has trainer state format {found!r}; this gpt2tui reads {STATE_FORMAT}")
            check_trainer_state(self.state, self.resume_dir / "trainer_state.json")
            config = config or saved
            # The corpus read now against the fingerprint the checkpoint recorded: refused (before
            # anything is written) unless asked; the changes allowed are kept for the caller to show.
            self.corpus = load_corpus(config.data)  # read once: checked here, tokenised in _setup
            self.data_changes = check_corpus_unchanged(info.meta.get("data") or {}, self.corpus, allow_change=allow_data_change)
            self.resumed_run_name = info.meta.get("run_name")
            self.init_record = info.meta.get(INIT_FROM_KEY)  # a fine-tuned run still says where it started
            run_name = run_name or self.resumed_run_name
        if config is None:
            raise ConfigError("train() needs a RunConfig (or resume_from)")
        self.config = resolve_tokenizer(config)
        if run_name is not None:
            check_run_name(run_name)  # also a resumed checkpoint's recorded name: it becomes a path
        self.run_name = run_name or self._fresh_name(f"{self.config.preset or ('finetune' if self.start else 'run')}-{time.strftime('%Y%m%d-%H%M%S')}")
        self.run_dir = self.runs_dir / self.run_name
        self.checkpoint_dir = self.checkpoints_root / self.run_name
        # The run is claimed (its lock) before anything is checked or prepared, and checked
        # again under the claim: two processes starting one run cannot both pass.
        self.claim: RunLock | None = RunLock(self.run_dir, announce=False) if self.dist.is_main else None
        try:
            if self.dist.is_main and (self.state is None or self.run_name != self.resumed_run_name):
                self._refuse_existing_run()
            elif self.dist.is_main:
                self._refuse_stale_resume()
        except BaseException:
            self.release_run(discard=True)
            raise
        if self.claim is not None:
            self.claim.announce()

    def release_run(self, *, discard: bool = False) -> None:
        """Give up the claim on the run without training (a launcher hands the run to its
        worker processes); ``discard`` also removes a run directory this start created."""
        if self.claim is not None:
            self.claim.release(discard=discard)

    def _refuse_stale_resume(self) -> None:
        """The run must not have moved on between choosing the checkpoint and taking the claim:
        another process that resumed it meanwhile has written newer checkpoints (and may have
        deleted this one), and continuing from the old state would overwrite its steps."""
        now = CheckpointStore(self.resume_dir.parent, cleanup=False).latest()
        if now != self.latest_at_choice or not self.resume_dir.is_dir():
            raise ConfigError(
                f"run {self.run_name!r} moved on while this process was starting (its latest checkpoint is now {now}); "
                "run the command again to continue from there"
            )

    def _fresh_name(self, base: str) -> str:
        """``base``, or ``base-2``, ``base-3``... when two runs start within the same second."""
        name, n = base, 1
        while (self.runs_dir / name).exists() or (self.checkpoints_root / name).exists():
            n += 1
            name = f"{base}-{n}"
        return name

    def _refuse_existing_run(self) -> None:
        exists = (self.run_dir / STATUS).exists() or (self.run_dir / METRICS).exists()
        if exists or CheckpointStore(self.checkpoint_dir, cleanup=False).latest() is not None:
            raise ConfigError(
                f"run {self.run_name!r} already exists ({self.run_dir}); choose another --run-name, "
                f"or continue it with --resume-from {self.run_name}"
            )

    # -- set-up -----------------------------------------------------------------------------------

    def _setup(self) -> None:
        cfg = self.config
        t = cfg.train
        from gpt2core.loading import resolve_device

        self.device = self.dist.start(resolve_device(t.device))  # cuda:LOCAL_RANK under torchrun
        rank_batch = self.dist.rank_batch_size(t.batch_size)  # --batch-size is the global micro-batch
        if self.dist.enabled:  # rank 0 named the run: its directories are everyone's
            self.run_name = self.dist.broadcast_object(self.run_name)
            self.run_dir, self.checkpoint_dir = self.runs_dir / self.run_name, self.checkpoints_root / self.run_name
        self.precision = choose_precision(t, self.device)
        configure_backends(self.device)
        torch.manual_seed(t.seed)
        loaded = load_checkpoint(self.resume_dir, device=self.device, verify=False) if self.resume_dir else None  # verified in __init__
        with self.dist.local_leader_first():  # one tokenisation per machine; the other ranks read its cache
            self.data: PreparedData = prepare_data(
                cfg.data, tokenizer=loaded.tokenizer if loaded else (self.start.tokenizer if self.start else None), corpus=self.corpus
            )
        self.corpus = None  # the text is in the token cache now; not held for the run's length
        tokenizer = self.data.tokenizer
        self.config = cfg = cfg.replace(model=cfg.model.replace(vocab_size=tokenizer.vocab_size))
        T = cfg.model.context_length
        self.data.require("train", T + 1)
        self.val_tokens = self.data.require("val", T + 1)

        if loaded is not None:
            self.model = loaded.model
            if self.model.config != cfg.model:
                raise ConfigError(f"{self.resume_dir} holds a model of another shape than the run config says")
        else:
            self.model = (self.start.model_for(cfg) if self.start else GPT(cfg.model)).to(self.device)
        self.model.train()
        self.forward = torch.compile(self.model) if t.compile else self.model
        self.forward = self.dist.wrap(self.forward)  # DDP: rank 0's weights everywhere, gradients averaged
        self.dist.seed_rank_rng(t.seed)  # every rank its own dropout masks
        self.optimizer = build_optimizer(self.model, t, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.needs_scaler)
        self.sampler = BatchSampler(
            self.data.splits["train"], rank_batch, T, seed=t.seed + 1, device=self.device, rank=self.dist.rank, world_size=self.dist.world_size
        )
        self.eval_windows = eval_starts(len(self.val_tokens), T, t.eval_iters * t.batch_size)
        self.eval_batch = eval_batch_size(T, cfg.model.vocab_size, floor=t.batch_size)
        self.store = CheckpointStore(self.checkpoint_dir, keep_last=t.keep_last, cleanup=self.dist.is_main)
        self.thread_tuner = None
        if self.device.type == "cpu":  # run() puts torch's thread count back afterwards
            if t.threads == "auto" and torch.get_num_threads() > 1 and not self.dist.enabled:
                self.thread_tuner = ThreadTuner(torch.get_num_threads())
            else:
                # A fixed count, recorded in the run config (so in every checkpoint): the sums of
                # a step depend on it, and a resume reuses it unless told otherwise.
                threads = t.threads if isinstance(t.threads, int) else torch.get_num_threads()
                torch.set_num_threads(threads)
                self.config = cfg = cfg.replace(train=t.replace(threads=threads))
                t = cfg.train
        self.peak = peak_flops(self.device, self.precision)
        self.flops_per_token = cfg.model.flops_per_token(T)

        self.tokens_per_step = t.batch_size * t.grad_accum * T
        self.plan = RunPlan.from_limits(t, len(self.data.splits["train"]) / self.tokens_per_step)

        # counters (a resume overwrites them)
        self.step = 0
        self.tokens_seen = 0
        self.train_time_base = 0.0
        self.best_val_loss: float | None = None
        self.last_val_loss: float | None = None
        self.bad_steps = BadSteps(limit=t.max_bad_steps)
        self.last_eval_step = -1
        self.last_saved_step = -1
        self.loss_since_eval, self.steps_since_eval = 0.0, 0  # the train loss an evaluation reports
        self.eval_owed = False  # a stop cut the scheduled evaluation of this step short: the resume does it
        self.write_errors: set[Path] = set()  # run files that failed to write (warned once each)
        self.write_failure: RunWriteError | None = None  # one that ends the run (--on-save-error stop)
        self.warmup_checked_against_budget = self.plan.budget_s is None
        if self.state is not None:
            self._restore(self.state)

    def _restore(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        t = self.config.train
        for group in self.optimizer.param_groups:  # changed options on resume take effect
            group["betas"] = (t.beta1, t.beta2)
        self.optimizer.param_groups[0]["weight_decay"] = t.weight_decay
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        self.step = int(state["step"])
        self.tokens_seen = int(state["tokens_seen"])
        self.train_time_base = float(state["train_time_s"])
        self.best_val_loss = state.get("best_val_loss")
        self.last_val_loss = state.get("last_val_loss")
        self.bad_steps.in_a_row = int(state.get("bad_in_a_row", 0))
        self.bad_steps.skipped = int(state.get("skipped", 0))
        self.last_eval_step = self.last_saved_step = self.step
        self.loss_since_eval = float(state.get("loss_since_eval", 0.0))
        self.steps_since_eval = int(state.get("steps_since_eval", 0))
        self.eval_owed = bool(state.get("eval_owed", False))
        # The schedule is a function of the step and the limits: unchanged limits continue it
        # exactly (and a budget that governed goes on governing); changed ones reshape what is left.
        self.plan.load_state_dict(state["schedule"])
        self.warmup_checked_against_budget = True
        self.dist.restore_rng(state, seed=t.seed, step=self.step)

    def _trainer_state(self) -> dict:
        return {
            "format": STATE_FORMAT,
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "train_time_s": self.train_time(),
            "best_val_loss": self.best_val_loss,
            "last_val_loss": self.last_val_loss,
            "bad_in_a_row": self.bad_steps.in_a_row,
            "skipped": self.bad_steps.skipped,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "sampler": self.sampler.state_dict(),
            "schedule": self.plan.state_dict(),
            "rng": capture_rng(),
            # what the next evaluation reports as the train loss, and whether this step's is owed
            "loss_since_eval": self.loss_since_eval,
            "steps_since_eval": self.steps_since_eval,
            "eval_owed": self.eval_owed,
            "threads": torch.get_num_threads() if self.device.type == "cpu" else None,
        }

    def _fit_warmup(self, horizon: int) -> None:
        """A warmup as long as the whole run would never reach the peak: shorten it to 10%."""
        schedule = self.plan.schedule
        if schedule.warmup_steps >= horizon and self.step < schedule.warmup_steps:
            fitted = max(1, horizon // 10)
            self.emit(
                WarningEvent(
                    step=self.step,
                    message=f"warmup of {schedule.warmup_steps} steps is longer than the run ({horizon} steps); using {fitted}",
                )
            )
            schedule.warmup_steps = fitted

    # -- helpers ----------------------------------------------------------------------------------

    def train_time(self) -> float:
        if self.dist.enabled:  # the clock of the last step agreement: every rank decides by the same one
            return self.train_time_base + self.dist.agreed_elapsed
        return self.train_time_base + (time.monotonic() - self.segment_start)

    def _speed_clock(self) -> float:
        """The clock seconds per step are measured on (which moves the schedule's horizon)."""
        return self.train_time() if self.dist.enabled else time.monotonic()

    def _reserve_s(self) -> float:
        """Seconds kept for the final evaluation and checkpoint (the slowest rank's, when several)."""
        return self.dist.agreed_reserve if self.dist.enabled else self.eval_seconds + self.save_seconds

    def epoch(self) -> float:
        return self.tokens_seen / max(1, len(self.data.splits["train"]))

    def emit(self, event: Event) -> None:
        for handler in self.handlers:  # each its own: a full disk under the run files still reaches the display
            try:
                handler(event)
            except RunWriteError as error:
                self._write_failed(error)

    def _write_failed(self, error: RunWriteError) -> None:
        """metrics.jsonl or status.json could not be written (a full disk): say so once per
        file, then go on (--on-save-error continue) or end the run with a final checkpoint
        attempt (stop, the default). Training state is never lost to a log file."""
        if self.config.train.on_save_error == "continue":
            if error.path not in self.write_errors and self.user_on_event is not None:
                self.user_on_event(
                    WarningEvent(step=self.step, message=f"{error}; training goes on (--on-save-error continue) and writing resumes when there is space")
                )
            self.write_errors.add(error.path)
            return
        if self.write_failure is None:
            self.write_failure = error

    def should_stop(self) -> bool:
        if self.dist.enabled:  # any rank's stop, as the last step agreement heard it
            return self.dist.agreed_stop
        return self._stop_asked_here()

    def _stop_asked_here(self) -> bool:
        return self.stop.is_set() or self.writer.stop_requested()

    # -- evaluation, samples, checkpoints ---------------------------------------------------------

    def evaluate(self) -> bool:
        """Val loss on the fixed windows (and a sample); True when it is the best so far."""
        started = time.monotonic()
        try:
            loss = self.dist.window_loss(
                self.model, self.val_tokens, self.eval_windows, batch_size=self.eval_batch, autocast=self.precision.autocast(),
                should_stop=self._stop_asked_here,
            )
        except EvaluationStopped:  # a stop signal mid-evaluation: save and end now, without this val loss
            self.eval_owed = True  # the resumed run evaluates this step first, as the straight run did
            return False
        self.eval_owed = False
        is_best = math.isfinite(loss) and (self.best_val_loss is None or loss < self.best_val_loss)
        if is_best:
            self.best_val_loss = loss
        self.last_val_loss = loss
        self.last_eval_step = self.step
        train_loss = self.loss_since_eval / self.steps_since_eval if self.steps_since_eval else None
        self.loss_since_eval, self.steps_since_eval = 0.0, 0
        self.emit(
            EvalEvent(
                step=self.step,
                val_loss=loss,
                perplexity=math.exp(min(loss, 700.0)) if math.isfinite(loss) else math.nan,
                best_val_loss=self.best_val_loss if self.best_val_loss is not None else math.nan,
                is_best=is_best,
                train_loss=train_loss,
            )
        )
        if self.step > 0 and self.config.train.sample_tokens > 0 and self.dist.is_main:
            self.sample()
        self.eval_seconds = time.monotonic() - started
        return is_best

    def sample(self) -> None:
        from gpt2core.config import SampleConfig
        from gpt2core.generate import stream_text

        t = self.config.train
        sample_config = SampleConfig(max_new_tokens=t.sample_tokens, seed=t.seed, stream=False)
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # sampling never moves the training RNG
            text = "".join(stream_text(self.model, self.data.tokenizer, t.sample_prompt, sample_config))
        self.model.train()
        self.emit(SampleEvent(step=self.step, prompt=t.sample_prompt, text=text))

    def save(self, reason: str, is_best: bool = False) -> Path | None:
        if self.step == self.last_saved_step and not is_best:
            latest = self.store.latest()
            if reason == "stop" and latest is not None:  # already on disk: say that the run stopped on it
                self.emit(CheckpointEvent(step=self.step, path=str(latest), is_best=False, reason=reason))
            return latest
        unhealthy = self.bad_steps.in_a_row > 0 or (
            self.last_eval_step == self.step and self.last_val_loss is not None and not math.isfinite(self.last_val_loss)
        )
        if unhealthy or not _params_finite(self.model):
            what = "the loss is NaN/Inf" if unhealthy else "the weights are not finite"
            self.emit(WarningEvent(step=self.step, message=f"{what}; checkpoint not written (the last good one is kept)"))
            return None
        rank_rng = self.dist.gather_rng()  # every rank takes part; rank 0 writes them all
        if not self.dist.is_main:
            self.last_saved_step = self.step
            return None
        started = time.monotonic()
        meta = {
            "run_name": self.run_name,
            "run_config": self.config.to_dict(),
            "val_loss": self.last_val_loss,
            "best_val_loss": self.best_val_loss,
            "epoch": self.epoch(),
            "tokens_seen": self.tokens_seen,
            "train_time_s": self.train_time(),
            "data": self.data.info(),
            "device": str(self.device),
            "precision": self.precision.name,
            "world_size": self.dist.world_size,
            INIT_FROM_KEY: self.init_record,
        }
        state = {**self._trainer_state(), **rank_rng}
        try:
            path = self.store.save(self.step, self.model, self.data.tokenizer, meta=meta, trainer_state=state, is_best=is_best)
        except CheckpointError as exc:
            return self._save_failed(exc)
        self.last_saved_step = self.step
        self.save_seconds = time.monotonic() - started
        if is_best:  # best/ first, so that watchers end with last_checkpoint = the step directory
            self.best_path = self.store.best()
            self.emit(CheckpointEvent(step=self.step, path=str(self.best_path), is_best=True, reason=reason))
        self.last_path = path
        self.emit(CheckpointEvent(step=self.step, path=str(path), is_best=False, reason=reason))
        return path

    def _save_failed(self, error: CheckpointError) -> None:
        """A save that failed (disk full, no permission) left every earlier checkpoint as it was
        (see save_checkpoint). Say so, then go on or stop as ``on_save_error`` asks."""
        kept = f"the last good checkpoint ({self.last_path}) is intact" if self.last_path else "no checkpoint has been written yet"
        if self.config.train.on_save_error == "continue":
            self.emit(WarningEvent(step=self.step, message=f"{error}; {kept}; training goes on and the next save tries again"))
            return None
        raise CheckpointError(
            f"{error}; {kept}; free some space and continue with --resume-from {self.run_name} "
            "(or train with --on-save-error continue to keep going when a save fails)"
        ) from None

    # -- the loop ---------------------------------------------------------------------------------

    def train_step(self) -> tuple[float, float]:
        """One optimizer step; returns (loss, grad norm) as floats (NaN/Inf possible)."""
        t = self.config.train
        step_started = time.monotonic()
        lr = self.plan.schedule.lr(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.lr = lr
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(t.grad_accum):
            x, y = self.sampler.next_batch()
            with self.dist.sync_gradients(self.forward, sync=micro == t.grad_accum - 1):  # all-reduce once per step
                with self.precision.autocast():
                    _, loss = self.forward(x, y)
                loss = loss / t.grad_accum
                self.scaler.scale(loss).backward()
            loss_sum += loss.detach()
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.gradient_clip if t.gradient_clip > 0 else math.inf)
        if self.dist.enabled:  # the step's one sync is the ranks' agreement: mean loss, stop, clock
            loss_value, norm_value = self.dist.agree(
                loss_sum,
                norm,
                stop=self._stop_asked_here(),
                elapsed=time.monotonic() - self.segment_start,
                reserve=self.eval_seconds + self.save_seconds,
                step_started=step_started,
            )
        else:
            loss_value, norm_value = torch.stack([loss_sum.float(), norm.float()]).tolist()  # the step's one sync
        bad = not math.isfinite(loss_value) or (not self.scaler.is_enabled() and not math.isfinite(norm_value))
        if bad:
            self.scaler.update()  # with fp16 this also lowers the loss scale
        else:
            self.scaler.step(self.optimizer)  # skips by itself when fp16 gradients overflowed
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_seen += self.tokens_per_step
        self.last_step_s = time.monotonic() - step_started  # what the thread tuner compares
        return loss_value, norm_value

    def run(self) -> TrainResult:
        threads_before = torch.get_num_threads()  # --threads changes it for this run only
        try:
            return self._run()
        finally:
            torch.set_num_threads(threads_before)

    def _run(self) -> TrainResult:
        try:
            self._setup()
            main = self.dist.is_main  # only rank 0 writes the run directory and TensorBoard, and reports
            self.writer = RunWriter(self.run_dir, config=self._run_record(), world_size=self.dist.world_size, lock=self.claim) if main else RankWriter()
        except BaseException:
            self.release_run(discard=True)  # nothing was written: a failed start leaves nothing behind
            raise
        t = self.config.train
        tb = None
        try:
            if self.tensorboard and main:
                from gpt2core.tensorboard_log import TensorBoardLogger

                # A resume from an earlier checkpoint replays steps TensorBoard already has: it
                # drops them from the earlier files, so the curve never doubles back.
                tb = TensorBoardLogger(self.run_dir, purge_step=self.step + 1 if self.state is not None else None)
            self.handlers = [h for h in (self.writer.on_event, tb.on_event if tb else None, self.user_on_event if main else None) if h]
            result = self._loop(t)
            self.dist.barrier()  # no rank leaves before rank 0 has written the final checkpoint
            return result
        except KeyboardInterrupt:
            self.writer.close(state="stopped", message=f"interrupted at step {self.step}, after the last checkpoint")
            raise
        except torch.OutOfMemoryError:
            error = GPT2Error(
                f"out of memory on {self.device} at batch size {t.batch_size}; lower --batch-size "
                "(and raise --grad-accum to keep the effective batch) or --context-length"
            )
            self._fail(str(error))
            raise error from None
        except Exception as exc:
            self._fail(str(exc) if isinstance(exc, GPT2Error) else f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self.writer.close()
            if tb is not None:
                tb.close()
            self.dist.close()

    def _fail(self, message: str) -> None:
        try:
            self.emit(FailedEvent(step=self.step, error=message))
        finally:
            self.writer.close(state="failed", message=message)

    def _run_record(self) -> dict:
        return {
            **self.config.to_dict(),
            "run_name": self.run_name,
            "device": str(self.device),
            "precision": self.precision.name,
            "data_info": self.data.info(),
            "resumed_from": str(self.resume_dir) if self.resume_dir else None,
            INIT_FROM_KEY: self.init_record,  # where the weights came from (--init-from), None from scratch
            "backend": self.dist.backend,  # nccl / gloo, None for one process
            "batch": batch_layout(self.config.train.batch_size, self.config.train.grad_accum, self.config.model.context_length, self.dist.world_size),
        }

    def _loop(self, t) -> TrainResult:
        self._start_segment(t)
        loss = norm = math.nan
        # The loop, one line per phase (nanoGPT's shape): stop on a limit, a request or a failed
        # run file; one optimizer step (its lr, micro-batches, update); the bad-step check; the
        # speed that fits a budget's horizon; the log line; evaluation and checkpoints on schedule.
        while (reason := self._end_reason()) is None:
            loss, norm = self.train_step()
            if self._check_step(loss, norm):
                reason = "diverged"
                break
            self._track_speed()
            if self.step % t.log_interval == 0:
                self._emit_step(loss, norm)
            busy_start = time.monotonic()
            self._evaluate_on_schedule(t)
            self.speed.add_busy(time.monotonic() - busy_start)
        return self._finish(reason, loss, norm, t)

    def _start_segment(self, t) -> None:
        """What this process's part of the run starts with: its clocks, the run_started event,
        and the first evaluation (a new run's untrained loss, or one a stop cut short)."""
        self.segment_start = time.monotonic()
        self.eval_seconds = self.save_seconds = 0.0
        self.best_path = self.store.best()
        self.last_path = self.store.latest() if self.state is not None else None
        self.lr = self.plan.schedule.lr(self.step)
        self.emit(
            RunStarted(
                run_name=self.run_name,
                config=self._run_record(),
                device=device_description(self.device),
                num_params=self.model.num_params(),
                max_steps=self.plan.step_limit or 0,
                max_training_hours=t.max_training_hours,
                start_step=self.step,
                world_size=self.dist.world_size,
                threads=self._threads_label(),
                ends_by=self._limits_label(),
            )
        )
        if self.state is None:
            if self.plan.step_limit is not None:
                self._fit_warmup(self.plan.step_limit)
            self.evaluate()  # the untrained loss: where the curve starts
        elif self.eval_owed:  # stopped in the middle of this step's evaluation: do it, as the straight run did
            self._evaluate_on_schedule(t)
        self.speed = SpeedMeter(time.monotonic())

    def _finish(self, reason: str, loss: float, norm: float, t) -> TrainResult:
        """The end of the run, by its reason: a diverged run fails without a checkpoint; a failed
        run file raises after a last checkpoint attempt; otherwise the last log line, the final
        evaluation and checkpoint (or the stop checkpoint), and the finished event."""
        message = self._divergence_message(t) if reason == "diverged" else None
        if reason == "diverged":
            self.emit(FailedEvent(step=self.step, error=message))
            self.writer.close(state="failed", message=message, reason=reason)
            return self._result(reason, message)
        if reason == "write_error":
            self._end_on_write_failure()
        if self.speed.interval_tokens:
            self._emit_step(loss, norm)
        if reason != "stopped" and self.last_eval_step != self.step:
            self.save("final", is_best=self.evaluate())
        else:
            self.save("stop" if reason == "stopped" else "final")
        self.emit(
            FinishedEvent(
                step=self.step,
                reason=reason,
                best_val_loss=self.best_val_loss,
                best_checkpoint=str(self.best_path) if self.best_path else None,
                last_checkpoint=str(self.last_path) if self.last_path else None,
                elapsed_s=self.train_time(),
                threads=self._threads_label(),
            )
        )
        return self._result(reason, None)

    def _end_reason(self) -> str | None:
        """Why the run ends before the next step: a limit, a stop request, a run file that
        could not be written (--on-save-error stop); None to go on."""
        reason = self.plan.end_reason(self.step, self.train_time())
        if reason is None and self.should_stop():
            reason = "stopped"
        if reason is None and self._run_file_failed():
            reason = "write_error"
        return reason

    def _check_step(self, loss: float, norm: float) -> bool:
        """The bad-step check: count the step, warn about a skipped update; True once the run
        has diverged. A good step's loss goes into the train loss the next evaluation reports."""
        fp16_overflow = self.scaler.is_enabled() and self.scaler.get_scale() >= 1.0
        warning = self.bad_steps.record(loss, norm, fp16_overflow=fp16_overflow)
        if math.isfinite(loss) and math.isfinite(norm):
            self.loss_since_eval += loss
            self.steps_since_eval += 1
        if warning is not None:
            self.emit(WarningEvent(step=self.step, message=warning))
        return self.bad_steps.diverged

    def _divergence_message(self, t) -> str:
        return (
            f"training diverged: the loss or gradients were NaN/Inf {self.bad_steps.in_a_row} steps in a row "
            f"(step {self.step}); no checkpoint was written over the good ones ({self.last_path or 'none yet'}); "
            f"try a lower --learning-rate (now {t.learning_rate:g}) or --gradient-clip 1.0"
        )

    def _track_speed(self) -> None:
        """Seconds per step: the thread tuner's choice, and (once a budget governs) the schedule's
        horizon; the budget taking over is said as it happens."""
        if self.thread_tuner is not None:
            self.thread_tuner.step_done(self.last_step_s, time.monotonic())
        sec_per_step = self.speed.step_done(self._speed_clock(), self.step, self.tokens_per_step)
        if sec_per_step is None:
            return
        notice = self.plan.observe(self.step, self.train_time(), sec_per_step, self._reserve_s())
        if notice is not None:  # the budget now shapes the schedule: the user must know
            self.emit(WarningEvent(step=self.step, message=notice))
        if not self.warmup_checked_against_budget:
            self._fit_warmup(self.plan.schedule.horizon)
            self.warmup_checked_against_budget = True

    def _evaluate_on_schedule(self, t) -> None:
        """Evaluate (and checkpoint the best, or every evaluation) every eval_interval steps;
        checkpoint every checkpoint_interval steps besides."""
        if self.step % t.eval_interval == 0:
            is_best = self.evaluate()
            if is_best or t.checkpoint_interval is None:
                self.save("eval", is_best=is_best)
        if t.checkpoint_interval is not None and self.step % t.checkpoint_interval == 0:
            self.save("interval")

    def _run_file_failed(self) -> bool:
        """True once a write to the run directory failed under --on-save-error stop (the
        heartbeat's failures are collected here too)."""
        error = self.writer.take_write_error()
        if error is not None:
            self._write_failed(error)
        return self.write_failure is not None

    def _end_on_write_failure(self) -> None:
        """A run file could not be written: a final checkpoint attempt (it may live on another
        disk), then a one-line error naming the file; the run's status ends 'failed'."""
        error = self.write_failure
        try:
            saved = self.save("stop")
            kept = f"the checkpoint of step {self.step} was saved ({saved})" if saved else f"the last good checkpoint ({self.last_path or 'none yet'}) is kept"
        except CheckpointError as exc:
            kept = f"the final checkpoint could not be written either ({exc})"
        raise GPT2Error(
            f"{error}; {kept}; free some space and continue with --resume-from {self.run_name} "
            "(or train with --on-save-error continue to keep training when a run file cannot be written)"
        ) from None

    def _threads_label(self) -> int | str | None:
        """The CPU threads of this run: the fixed count, "auto" for the tuner, None off the CPU."""
        if self.device.type != "cpu":
            return None
        return "auto" if self.thread_tuner is not None else torch.get_num_threads()

    def _limits_label(self) -> str:
        """Which limits can end the run, for the first log line: 'max_steps 150', 'time budget 0:04:30'..."""
        parts = []
        if self.plan.step_limit is not None:
            parts.append(f"{self.plan.step_reason} (step {self.plan.step_limit})")
        if self.plan.budget_s is not None:
            parts.append(f"time_budget ({self.plan.budget_s:.0f} s)")
        return " or ".join(parts)

    def _emit_step(self, loss: float, norm: float) -> None:
        tps = self.speed.tokens_per_sec(time.monotonic())
        self.emit(
            StepEvent(
                step=self.step,
                epoch=self.epoch(),
                loss=loss,
                lr=self.lr,
                grad_norm=norm,
                tokens_per_sec=tps,
                mfu=(tps * self.flops_per_token / (self.peak * self.dist.world_size)) if self.peak else None,
                elapsed_s=self.train_time(),
                eta_s=self.plan.eta_s(self.step, self.train_time()),
                tokens_seen=self.tokens_seen,
                memory_mb=torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else None,
                skipped_steps=self.bad_steps.skipped,
                world_size=self.dist.world_size,
                rank_tokens_per_sec=self.dist.rank_tokens_per_sec(self.tokens_per_step),
                threads=torch.get_num_threads() if self.device.type == "cpu" else None,
            )
        )
        self.speed.restart_interval(time.monotonic())

    def _result(self, reason: str, message: str | None) -> TrainResult:
        return TrainResult(
            run_name=self.run_name,
            reason=reason,
            step=self.step,
            best_val_loss=self.best_val_loss,
            last_val_loss=self.last_val_loss,
            best_checkpoint=self.best_path,
            last_checkpoint=self.last_path,
            run_dir=self.run_dir,
            checkpoint_dir=self.checkpoint_dir,
            elapsed_s=self.train_time(),
            unigram_loss=self.data.unigram_loss,
            message=message,
            threads=self._threads_label(),
        )


def train(
    config: RunConfig | None = None,
    *,
    run_name: str | None = None,
    runs_dir: str | Path = "runs",
    checkpoints_dir: str | Path = "checkpoints",
    resume_from: str | Path | None = None,
    on_event: Callable[[Event], None] | None = None,
    stop: threading.Event | None = None,
    tensorboard: bool = True,
    init_from: "str | Path | StartPoint | None" = None,
) -> TrainResult:
    """Train a model as ``config`` says, writing ``runs/<run_name>/`` and ``checkpoints/<run_name>/``.

    ``resume_from`` (a checkpoint directory, a run's checkpoint folder or a run name) continues
    a run exactly where it stopped; ``config`` may then be None (the checkpoint's is used) or a
    config with changed training options. ``init_from`` (a hub name, a Hugging Face GPT-2
    directory or one of our checkpoints, see gpt2core.init_from) starts a new run from those
    weights and that tokenizer. ``on_event`` receives every event; setting ``stop``
    (or creating the run's stop_request file) ends the run after the current step, with a
    checkpoint. Returns a TrainResult; raises GPT2Error subclasses for bad input.
    """
    trainer = Trainer(
        config,
        run_name=run_name,
        runs_dir=runs_dir,
        checkpoints_dir=checkpoints_dir,
        resume_from=resume_from,
        on_event=on_event,
        stop=stop,
        tensorboard=tensorboard,
        init_from=init_from,
    )
    return trainer.run()
