"""The training loop: it reads top to bottom, reports through events and honours a stop flag.

One optimizer step: the lr for this step; ``grad_accum`` micro-batches forward and backward
(under autocast, scaled when fp16); unscale, clip, and one read of (loss, grad norm) from the
device to decide whether the update is safe; the update, or a skip if either is NaN/Inf; then
logging, evaluation (val loss, a text sample), checkpoints and the stop check on their schedules.

The Trainer holds few things, each made once: what the run trains with (``parts``, built by
gpt2core.train_setup as it starts), the counters a checkpoint carries (``state``, see
gpt2core.train_state: with the optimizer, scaler, sampler, schedule and RNG states they are
everything a resume needs to continue exactly) and this process's clocks and checkpoints
(``segment``). Claiming the run is gpt2core.run_claim's; results, records and events are built
by gpt2core.train_report. No global state: ``train`` can be called again and again in one
process (the search does); signals are the CLI's business, the library only looks at ``stop``
and the run's stop_request.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Callable

import torch

from gpt2core import train_report as report
from gpt2core.config import RunConfig
from gpt2core.data import PreparedData
from gpt2core.defaults import resolve_tokenizer
from gpt2core.distributed import Distributed, RankWriter
from gpt2core.errors import CheckpointError, ConfigError, GPT2Error
from gpt2core.evaluate import EvaluationStopped
from gpt2core.events import CheckpointEvent, Event, FailedEvent, SampleEvent, WarningEvent
from gpt2core.init_from import StartPoint, start_point_for
from gpt2core.run_claim import claim_run, fresh_run_name
from gpt2core.rundir import RunLock, RunWriteError, RunWriter, check_run_name
from gpt2core.train_meters import BadSteps, RunFileErrors, SpeedMeter
from gpt2core.train_report import TrainResult
from gpt2core.train_resume import Resume, read_resume
from gpt2core.train_setup import RunParts, build_run
from gpt2core.train_state import Segment, TrainState, checkpoint_blocked, restore_trainer_state, trainer_state


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
        self.start: StartPoint | None = None  # the weights a new run starts from (--init-from)
        if init_from is not None:  # refused with resume_from, read and checked before anything is written
            self.start, config = start_point_for(init_from, config, resume_from=resume_from, checkpoints_dir=self.checkpoints_root)
        self.init_record = self.start.record() if self.start else None  # where the weights came from, for the records
        self.resume: Resume | None = None  # the checkpoint a resumed run continues from
        if resume_from is not None:
            self.resume = read_resume(resume_from, self.checkpoints_root, config, allow_data_change=allow_data_change)
            config, self.init_record = self.resume.config, self.resume.init_record  # a fine-tuned run still says where it started
            run_name = run_name or self.resume.run_name
        if config is None:
            raise ConfigError("train() needs a RunConfig (or resume_from)")
        self.config = resolve_tokenizer(config)
        if run_name is not None:
            check_run_name(run_name)  # also a resumed checkpoint's recorded name: it becomes a path
        base = f"{self.config.preset or ('finetune' if self.start else 'run')}-{time.strftime('%Y%m%d-%H%M%S')}"
        self.run_name = run_name or fresh_run_name(base, self.runs_dir, self.checkpoints_root)
        self.run_dir = self.runs_dir / self.run_name
        self.checkpoint_dir = self.checkpoints_root / self.run_name
        # Rank 0 claims the run (a new name must be free; a resume must not have moved on).
        continued = self.resume if self.resume is not None and self.run_name == self.resume.run_name else None
        self.claim: RunLock | None = claim_run(self.run_name, self.run_dir, self.checkpoint_dir, continued) if self.dist.is_main else None
        self.parts: RunParts | None = None  # what the run trains with: built when it starts (_setup)
        self.state = TrainState(bad_steps=BadSteps(limit=self.config.train.max_bad_steps))  # a resume restores it
        self.segment = Segment()  # this process's clocks and checkpoints
        self.file_errors = RunFileErrors(self.config.train.on_save_error, self._warn_caller)  # run files a full disk refused
        self.writer: RunWriter | RankWriter | None = None  # run.json, metrics, status: rank 0's; the others' do nothing
        self.handlers: list[Callable[[Event], None]] = []  # where events go: the writer, TensorBoard, the caller

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def model(self) -> torch.nn.Module:
        return self.parts.model

    @property
    def data(self) -> PreparedData:
        return self.parts.data

    @property
    def data_changes(self) -> list[str]:
        """How the corpus differs from a resumed checkpoint's (allowed by the caller, who shows them)."""
        return self.resume.data_changes if self.resume is not None else []

    def release_run(self, *, discard: bool = False) -> None:
        """Give up the claim on the run without training (a launcher hands the run to its
        worker processes); ``discard`` also removes a run directory this start created."""
        if self.claim is not None:
            self.claim.release(discard=discard)

    # -- the run, top to bottom -------------------------------------------------------------------

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
                tb = TensorBoardLogger(self.run_dir, purge_step=self.step + 1 if self.resume is not None else None)
            self.handlers = [h for h in (self.writer.on_event, tb.on_event if tb else None, self.user_on_event if main else None) if h]
            result = self._loop(t)
            self.dist.barrier()  # no rank leaves before rank 0 has written the final checkpoint
            return result
        except KeyboardInterrupt:
            self.writer.close(state="stopped", message=f"interrupted at step {self.step}, after the last checkpoint")
            raise
        except torch.OutOfMemoryError:
            error = GPT2Error(report.out_of_memory_message(self.parts.device, t))
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
            self.segment.speed.add_busy(time.monotonic() - busy_start)
        return self._finish(reason, loss, norm, t)

    def _start_segment(self, t) -> None:
        """What this process's part of the run starts with: its clocks, the run_started event,
        and the first evaluation (a new run's untrained loss, or one a stop cut short)."""
        p, seg = self.parts, self.segment
        seg.started = time.monotonic()
        seg.best_path = p.store.best()
        seg.last_path = p.store.latest() if self.resume is not None else None
        seg.lr = p.plan.schedule.lr(self.step)
        self.emit(report.run_started(self.run_name, self._run_record(), p, self.state, self.dist, t))
        if self.resume is None:
            if p.plan.step_limit is not None:
                self._fit_warmup(p.plan.step_limit)
            self.evaluate()  # the untrained loss: where the curve starts
        elif self.state.eval_owed:  # stopped in the middle of this step's evaluation: do it, as the straight run did
            self._evaluate_on_schedule(t)
        seg.speed = SpeedMeter(time.monotonic())

    def train_step(self) -> tuple[float, float]:
        """One optimizer step; returns (loss, grad norm) as floats (NaN/Inf possible)."""
        p, t = self.parts, self.config.train
        step_started = time.monotonic()
        lr = p.plan.schedule.lr(self.step)
        for group in p.optimizer.param_groups:
            group["lr"] = lr
        self.segment.lr = lr
        loss_sum = torch.zeros((), device=p.device)
        for micro in range(t.grad_accum):
            x, y = p.sampler.next_batch()
            with self.dist.sync_gradients(p.forward, sync=micro == t.grad_accum - 1):  # all-reduce once per step
                with p.precision.autocast():
                    _, loss = p.forward(x, y)
                loss = loss / t.grad_accum
                p.scaler.scale(loss).backward()
            loss_sum += loss.detach()
        p.scaler.unscale_(p.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(p.model.parameters(), t.gradient_clip if t.gradient_clip > 0 else math.inf)
        if self.dist.enabled:  # the step's one sync is the ranks' agreement: mean loss, stop, clock
            loss_value, norm_value = self.dist.agree(
                loss_sum,
                norm,
                stop=self._stop_asked_here(),
                elapsed=time.monotonic() - self.segment.started,
                reserve=self.segment.eval_seconds + self.segment.save_seconds,
                step_started=step_started,
            )
        else:
            loss_value, norm_value = torch.stack([loss_sum.float(), norm.float()]).tolist()  # the step's one sync
        bad = not math.isfinite(loss_value) or (not p.scaler.is_enabled() and not math.isfinite(norm_value))
        if bad:
            p.scaler.update()  # with fp16 this also lowers the loss scale
        else:
            p.scaler.step(p.optimizer)  # skips by itself when fp16 gradients overflowed
            p.scaler.update()
        p.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        self.state.tokens_seen += p.tokens_per_step
        self.segment.last_step_s = time.monotonic() - step_started  # what the thread tuner compares
        return loss_value, norm_value

    def _check_step(self, loss: float, norm: float) -> bool:
        """The bad-step check: count the step, warn about a skipped update; True once the run
        has diverged. A good step's loss goes into the train loss the next evaluation reports."""
        scaler, state = self.parts.scaler, self.state
        fp16_overflow = scaler.is_enabled() and scaler.get_scale() >= 1.0
        warning = state.bad_steps.record(loss, norm, fp16_overflow=fp16_overflow)
        if math.isfinite(loss) and math.isfinite(norm):
            state.loss_since_eval += loss
            state.steps_since_eval += 1
        if warning is not None:
            self.emit(WarningEvent(step=self.step, message=warning))
        return state.bad_steps.diverged

    def _track_speed(self) -> None:
        """Seconds per step: the thread tuner's choice, and (once a budget governs) the schedule's
        horizon; the budget taking over is said as it happens."""
        p, seg = self.parts, self.segment
        if p.thread_tuner is not None:
            p.thread_tuner.step_done(seg.last_step_s, time.monotonic())
        sec_per_step = seg.speed.step_done(self._speed_clock(), self.step, p.tokens_per_step)
        if sec_per_step is None:
            return
        notice = p.plan.observe(self.step, self.train_time(), sec_per_step, self._reserve_s())
        if notice is not None:  # the budget now shapes the schedule: the user must know
            self.emit(WarningEvent(step=self.step, message=notice))
        if not seg.warmup_fitted:
            self._fit_warmup(p.plan.schedule.horizon)
            seg.warmup_fitted = True

    def _emit_step(self, loss: float, norm: float) -> None:
        seg = self.segment
        tps = seg.speed.tokens_per_sec(time.monotonic())
        self.emit(report.step_event(self.parts, self.state, self.dist, loss=loss, norm=norm, lr=seg.lr, tokens_per_sec=tps, elapsed_s=self.train_time()))
        seg.speed.restart_interval(time.monotonic())

    def _evaluate_on_schedule(self, t) -> None:
        """Evaluate (and checkpoint the best, or every evaluation) every eval_interval steps;
        checkpoint every checkpoint_interval steps besides."""
        if self.step % t.eval_interval == 0:
            is_best = self.evaluate()
            if is_best or t.checkpoint_interval is None:
                self.save("eval", is_best=is_best)
        if t.checkpoint_interval is not None and self.step % t.checkpoint_interval == 0:
            self.save("interval")

    def _end_reason(self) -> str | None:
        """Why the run ends before the next step: a limit, a stop request, a run file that
        could not be written (--on-save-error stop); None to go on."""
        reason = self.parts.plan.end_reason(self.step, self.train_time())
        if reason is None and self.should_stop():
            reason = "stopped"
        if reason is None and self.file_errors.ends_run(self.writer):
            reason = "write_error"
        return reason

    def _finish(self, reason: str, loss: float, norm: float, t) -> TrainResult:
        """The end of the run, by its reason: a diverged run fails without a checkpoint; a failed
        run file raises after a last checkpoint attempt; otherwise the last log line, the final
        evaluation and checkpoint (or the stop checkpoint), and the finished event."""
        seg = self.segment
        message = report.divergence_message(self.state, self.step, self.segment.last_path, t) if reason == "diverged" else None
        if reason == "diverged":
            self.emit(FailedEvent(step=self.step, error=message))
            self.writer.close(state="failed", message=message, reason=reason)
            return self._result(reason, message)
        if reason == "write_error":
            self._end_on_write_failure()
        if seg.speed.interval_tokens:
            self._emit_step(loss, norm)
        if reason != "stopped" and self.state.last_eval_step != self.step:
            self.save("final", is_best=self.evaluate())
        else:
            self.save("stop" if reason == "stopped" else "final")
        self.emit(report.finished_event(reason, self.parts, self.state, seg, elapsed_s=self.train_time()))
        return self._result(reason, None)

    def _result(self, reason: str, message: str | None) -> TrainResult:
        dirs = (self.run_dir, self.checkpoint_dir)
        return report.train_result(reason, message, self.run_name, dirs, self.parts, self.state, self.segment, elapsed_s=self.train_time())

    # -- evaluation, samples, checkpoints ---------------------------------------------------------

    def evaluate(self) -> bool:
        """Val loss on the fixed windows (and a sample); True when it is the best so far."""
        p, state = self.parts, self.state
        started = time.monotonic()
        try:
            loss = self.dist.window_loss(
                p.model, p.val_tokens, p.eval_windows, batch_size=p.eval_batch, autocast=p.precision.autocast(),
                should_stop=self._stop_asked_here,
            )
        except EvaluationStopped:  # a stop signal mid-evaluation: save and end now, without this val loss
            state.eval_owed = True  # the resumed run evaluates this step first, as the straight run did
            return False
        is_best, train_loss = state.record_eval(loss)
        self.emit(report.eval_event(state, loss, is_best, train_loss))
        if state.step > 0 and self.config.train.sample_tokens > 0 and self.dist.is_main:
            self.sample()
        self.segment.eval_seconds = time.monotonic() - started
        return is_best

    def sample(self) -> None:
        t = self.config.train
        self.emit(SampleEvent(step=self.step, prompt=t.sample_prompt, text=report.sample_text(self.parts, t)))

    def save(self, reason: str, is_best: bool = False) -> Path | None:
        p, state, seg = self.parts, self.state, self.segment
        if state.step == state.last_saved_step and not is_best:
            latest = p.store.latest()
            if reason == "stop" and latest is not None:  # already on disk: say that the run stopped on it
                self.emit(CheckpointEvent(step=state.step, path=str(latest), is_best=False, reason=reason))
            return latest
        blocked = checkpoint_blocked(p, state)
        if blocked is not None:
            self.emit(WarningEvent(step=state.step, message=f"{blocked}; checkpoint not written (the last good one is kept)"))
            return None
        rank_rng = self.dist.gather_rng()  # every rank takes part; rank 0 writes them all
        if not self.dist.is_main:
            state.last_saved_step = state.step
            return None
        started = time.monotonic()
        meta = report.checkpoint_meta(self.config, self.run_name, p, state, self.dist, train_time_s=self.train_time(), init_record=self.init_record)
        saved = {**trainer_state(p, state, train_time_s=self.train_time()), **rank_rng}
        try:
            path = p.store.save(state.step, p.model, p.data.tokenizer, meta=meta, trainer_state=saved, is_best=is_best)
        except CheckpointError as exc:
            return self._save_failed(exc)
        state.last_saved_step = state.step
        seg.save_seconds = time.monotonic() - started
        if is_best:  # best/ first, so that watchers end with last_checkpoint = the step directory
            seg.best_path = p.store.best()
            self.emit(CheckpointEvent(step=state.step, path=str(seg.best_path), is_best=True, reason=reason))
        seg.last_path = path
        self.emit(CheckpointEvent(step=state.step, path=str(path), is_best=False, reason=reason))
        return path

    def _save_failed(self, error: CheckpointError) -> None:
        """A save that failed (disk full, no permission) left every earlier checkpoint as it was
        (see save_checkpoint). Say so, then go on or stop as ``on_save_error`` asks."""
        going_on = self.config.train.on_save_error == "continue"
        message = report.save_failed_message(error, self.segment.last_path, self.run_name, going_on=going_on)
        if not going_on:
            raise CheckpointError(message) from None
        self.emit(WarningEvent(step=self.step, message=message))

    # -- events, run files, stop requests ---------------------------------------------------------

    def emit(self, event: Event) -> None:
        for handler in self.handlers:  # each its own: a full disk under the run files still reaches the display
            try:
                handler(event)
            except RunWriteError as error:
                self.file_errors.record(error)

    def _warn_caller(self, message: str) -> None:
        """A warning to the caller only: the run files are what failed to take it."""
        if self.user_on_event is not None:
            self.user_on_event(WarningEvent(step=self.step, message=message))

    def _end_on_write_failure(self) -> None:
        """A run file could not be written: a final checkpoint attempt (it may live on another
        disk), then a one-line error naming the file; the run's status ends 'failed'."""
        error = self.file_errors.failure
        try:
            saved = self.save("stop")
            kept = f"the checkpoint of step {self.step} was saved ({saved})" if saved else f"the last good checkpoint ({self.segment.last_path or 'none yet'}) is kept"
        except CheckpointError as exc:
            kept = f"the final checkpoint could not be written either ({exc})"
        raise GPT2Error(
            f"{error}; {kept}; free some space and continue with --resume-from {self.run_name} "
            "(or train with --on-save-error continue to keep training when a run file cannot be written)"
        ) from None

    def _fail(self, message: str) -> None:
        try:
            self.emit(FailedEvent(step=self.step, error=message))
        finally:
            self.writer.close(state="failed", message=message)

    def should_stop(self) -> bool:
        if self.dist.enabled:  # any rank's stop, as the last step agreement heard it
            return self.dist.agreed_stop
        return self._stop_asked_here()

    def _stop_asked_here(self) -> bool:
        return self.stop.is_set() or self.writer.stop_requested()

    # -- clocks -----------------------------------------------------------------------------------

    def train_time(self) -> float:
        if self.dist.enabled:  # the clock of the last step agreement: every rank decides by the same one
            return self.state.time_before + self.dist.agreed_elapsed
        return self.state.time_before + (time.monotonic() - self.segment.started)

    def _speed_clock(self) -> float:
        """The clock seconds per step are measured on (which moves the schedule's horizon)."""
        return self.train_time() if self.dist.enabled else time.monotonic()

    def _reserve_s(self) -> float:
        """Seconds kept for the final evaluation and checkpoint (the slowest rank's, when several)."""
        return self.dist.agreed_reserve if self.dist.enabled else self.segment.eval_seconds + self.segment.save_seconds

    # -- set-up and the checkpointed state --------------------------------------------------------

    def _setup(self) -> None:
        from gpt2core.loading import resolve_device

        device = self.dist.start(resolve_device(self.config.train.device))  # cuda:LOCAL_RANK under torchrun
        if self.dist.enabled:  # rank 0 named the run: its directories are everyone's
            self.run_name = self.dist.broadcast_object(self.run_name)
            self.run_dir, self.checkpoint_dir = self.runs_dir / self.run_name, self.checkpoints_root / self.run_name
        self.config, self.parts = build_run(self.config, self.dist, device, self.checkpoint_dir, resume=self.resume, start=self.start)
        self.segment.warmup_fitted = self.parts.plan.budget_s is None  # no budget: no horizon to fit to
        if self.resume is not None:
            self.resume.corpus = None  # the text is in the token cache now; not held for the run's length
            restore_trainer_state(self.parts, self.state, self.resume.saved, self.config.train, self.dist)
            self.segment.warmup_fitted = True  # the saved schedule was fitted already

    def _fit_warmup(self, horizon: int) -> None:
        notice = self.parts.plan.schedule.fit_warmup(horizon, self.step)
        if notice is not None:
            self.emit(WarningEvent(step=self.step, message=notice))

    def _run_record(self) -> dict:
        resumed_from = self.resume.directory if self.resume is not None else None
        return report.run_record(self.config, self.run_name, self.parts, self.dist, resume_dir=resumed_from, init_record=self.init_record)


def train(config: RunConfig | None = None, **options) -> TrainResult:
    """Train a model as ``config`` says, writing ``runs/<run_name>/`` and ``checkpoints/<run_name>/``;
    ``options`` are Trainer's keywords (one list, there).

    ``resume_from`` (a checkpoint directory, a run's checkpoint folder or a run name) continues
    a run exactly where it stopped; ``config`` may then be None (the checkpoint's is used) or a
    config with changed training options. ``init_from`` (a hub name, a Hugging Face GPT-2
    directory or one of our checkpoints, see gpt2core.init_from) starts a new run from those
    weights and that tokenizer. ``on_event`` receives every event; setting ``stop``
    (or creating the run's stop_request file) ends the run after the current step, with a
    checkpoint. Returns a TrainResult; raises GPT2Error subclasses for bad input.
    """
    return Trainer(config, **options).run()
