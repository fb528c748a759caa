"""How many CPU threads torch should use for this run, decided by measurement.

On an idle 2-core machine two intra-op threads make a small model's step about 1.6x faster than
one. When other processes compete for the cores it turns around, and badly: every parallel
region waits at a barrier for a thread the scheduler has put aside, and steps were measured 6
to 12 times slower than with a single thread. ``ThreadTuner`` times a few steps with each
candidate count, keeps the fastest, and re-checks now and then (less often while the choice
holds), so a run adapts when the machine gets busy or quiet.

Thread counts change the order of floating-point reductions, so a run with ``threads="auto"``
is not bit-for-bit reproducible; fix the count (``--threads N``) when that matters.
"""

from __future__ import annotations

import statistics

import torch

PROBE_STEPS = 3  # steps timed per candidate; the first after a switch is dropped (thread start-up)
FIRST_RECHECK_S = 20.0
LONGEST_RECHECK_S = 160.0


class ThreadTuner:
    def __init__(self, cores: int):
        self.original = torch.get_num_threads()
        self.candidates = sorted({max(1, cores), 1}, reverse=True)  # e.g. [2, 1]
        self.chosen = self.candidates[0]
        self.recheck_every = FIRST_RECHECK_S
        self.next_check: float | None = None
        self._queue: list[int] = list(self.candidates)  # candidates still to time in this probe
        self._times: dict[int, list[float]] = {}
        self._set(self._queue[0])

    @property
    def current(self) -> int:
        return torch.get_num_threads()

    def _set(self, n: int) -> None:
        torch.set_num_threads(n)
        self._times[n] = []

    def step_done(self, seconds: float, now: float) -> None:
        """Record one training step's duration (evaluation and checkpoints excluded)."""
        if self._queue:
            times = self._times[self._queue[0]]
            times.append(seconds)
            if len(times) < PROBE_STEPS:
                return
            self._queue.pop(0)
            if self._queue:
                self._set(self._queue[0])
                return
            best = min(self._times, key=lambda n: statistics.median(self._times[n][1:]))
            self.recheck_every = min(LONGEST_RECHECK_S, self.recheck_every * 2) if best == self.chosen else FIRST_RECHECK_S
            self.chosen = best
            torch.set_num_threads(best)
            self.next_check = now + self.recheck_every
        elif self.next_check is not None and now >= self.next_check:
            # Time the alternatives first and the current choice last, right next to them.
            self._queue = [n for n in self.candidates if n != self.chosen] + [self.chosen]
            self._times = {}
            self._set(self._queue[0])

    def restore(self) -> None:
        torch.set_num_threads(self.original)
