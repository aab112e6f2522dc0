"""Learning-rate schedules, and the horizon they decay towards.

``constant`` is the paper's recipe (2e-4 throughout, after an optional warm-up). ``cosine``
and ``linear`` warm up to the peak ``lr`` and decay to zero at the horizon: the run's
``max_steps``, or, under a time budget, the steps the budget buys (Li, Yumer & Ramanan,
"Budgeted training", ICLR 2020: a short run gains most from a rate that reaches zero
exactly when its budget ends). The horizon under a budget is estimated from the measured
step time and re-estimated as training goes; it is saved with the checkpoint, so a resumed
run continues the schedule it was on.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine", "linear")
MEASURE_AFTER = 10  # steps of an invocation before its step time is trusted (start-up costs)


def learning_rate(peak: float, schedule: str, warmup: int, step: int, horizon: int | None) -> float:
    """The rate of update ``step`` (0-based): linear warm-up over ``warmup`` steps to ``peak``,
    then constant, or a cosine or linear decay that reaches 0 at step ``horizon``."""
    rate = peak * min(1.0, (step + 1) / max(1, warmup))
    if schedule == "constant" or horizon is None:
        return rate
    progress = min(1.0, max(0.0, (step - warmup) / max(1, horizon - warmup)))
    if schedule == "cosine":
        return rate * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return rate * (1.0 - progress)
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")


class Horizon:
    """The step at which a run's schedule ends: ``max_steps``, or what the time left buys.

    Without a time budget the horizon is ``max_steps``, unless the run being resumed had
    its horizon estimated from a budget (``recorded``): then it finishes that schedule.
    With a budget, the horizon is re-estimated at every :meth:`update` from the step time
    measured in this invocation (after its first ``MEASURE_AFTER`` steps, which carry
    start-up costs); until then the recorded horizon, or ``max_steps``, stands.

    Args:
        max_steps: the run's total steps.
        deadline: ``time.monotonic()`` when this invocation's budget ends, or None.
        step: the step this invocation starts at.
        recorded: the budget-estimated horizon saved with the checkpoint, if any.
    """

    def __init__(self, max_steps: int, deadline: float | None, step: int, recorded: int | None = None) -> None:
        self.max_steps, self.deadline = max_steps, deadline
        self.steps = min(max_steps, recorded) if recorded is not None else max_steps
        self.estimated = recorded is not None  # from a time budget, so worth recording
        self._first, self._mark = step, None

    def update(self, step: int, now: float) -> int:
        """Re-estimate after ``step`` updates at time ``now``; returns the horizon."""
        if self.deadline is None:
            return self.steps
        if self._mark is None:
            if step - self._first >= MEASURE_AFTER:
                self._mark = (step, now)
            return self.steps
        done, since = step - self._mark[0], now - self._mark[1]
        if done > 0 and since > 0:
            left = max(0.0, self.deadline - now) * done / since  # steps the remaining time buys
            self.steps = min(self.max_steps, step + max(1, int(left)))
            self.estimated = True
        return self.steps

    @property
    def record(self) -> int | None:
        """What the checkpoint keeps: the horizon when a budget estimated it, else None."""
        return self.steps if self.estimated else None
