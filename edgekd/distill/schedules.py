"""Per-epoch values of the distillation temperature and loss weights.

Boundaries, for `num_epochs` epochs numbered 0 .. num_epochs - 1:

- ``linear`` / ``cosine``: progress ``p = epoch / (num_epochs - 1)``, so epoch 0 gives `start` and the
  last epoch gives `end` exactly (a single epoch gives `start`). Cosine is the half cosine
  ``end + (start - end) * (1 + cos(pi * p)) / 2``.
- ``phases``: phase i covers the epochs ``[round(E * c_i), round(E * c_{i+1}))`` where c are the
  cumulative fractions (halves round up), so with E = 10 and fractions 0.5 / 0.3 / 0.2 the phases are
  epochs 0-4, 5-7 and 8-9. A ramp phase (`start`, `end`) is linear over its own epochs with the same
  rule: its first epoch gives `start`, its last gives `end`. A phase that rounds to no epochs is skipped.
- ``adaptive``: stateful; its value comes from an :class:`AdaptiveRule` fed with validation accuracy.

:class:`DistillSchedules` resolves all three values of a DistillConfig per epoch and carries the
adaptive rules' state through checkpoints.
"""

from __future__ import annotations

import math
from typing import Any

from edgekd.config import (
    AdaptiveSchedule,
    ConstantSchedule,
    CosineSchedule,
    DistillConfig,
    LinearSchedule,
    Phase,
    PhasedSchedule,
)

SCHEDULED_FIELDS = ("temperature", "soft_weight", "hard_weight")


def _progress(epoch: int, num_epochs: int) -> float:
    if not 0 <= epoch < max(num_epochs, 1):
        raise ValueError(f"epoch {epoch} is outside 0..{num_epochs - 1}")
    return epoch / (num_epochs - 1) if num_epochs > 1 else 0.0


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5 + 1e-9)  # 1e-9: cumulative fractions like 0.5 + 0.3 are not exact


def phase_bounds(phases: list[Phase], num_epochs: int) -> list[tuple[int, int]]:
    """[first, end) epochs of each phase."""
    bounds, cum = [], 0.0
    for phase in phases:
        first = _round_half_up(cum * num_epochs)
        cum += phase.fraction
        bounds.append((first, _round_half_up(cum * num_epochs)))
    bounds[-1] = (bounds[-1][0], num_epochs)  # the last phase always reaches the end
    return bounds


def _phase_value(phase: Phase, epoch: int, first: int, end: int) -> float:
    if phase.value is not None:
        return float(phase.value)
    p = _progress(epoch - first, end - first)
    return phase.start + (phase.end - phase.start) * p


def value_at(schedule: float | int | Any, epoch: int, num_epochs: int) -> float:
    """The value of a number or a non-adaptive schedule at `epoch` (0-based) of `num_epochs`."""
    if isinstance(schedule, (int, float)):
        return float(schedule)
    if isinstance(schedule, ConstantSchedule):
        return float(schedule.value)
    if isinstance(schedule, LinearSchedule):
        return schedule.start + (schedule.end - schedule.start) * _progress(epoch, num_epochs)
    if isinstance(schedule, CosineSchedule):
        p = _progress(epoch, num_epochs)
        return schedule.end + (schedule.start - schedule.end) * (1 + math.cos(math.pi * p)) / 2
    if isinstance(schedule, PhasedSchedule):
        _progress(epoch, num_epochs)
        for phase, (first, end) in zip(schedule.phases, phase_bounds(schedule.phases, num_epochs)):
            if first <= epoch < end:
                return _phase_value(phase, epoch, first, end)
        raise AssertionError("phase bounds cover every epoch")
    if isinstance(schedule, AdaptiveSchedule):
        raise TypeError("an adaptive schedule is stateful: read AdaptiveRule.value (or DistillSchedules)")
    raise TypeError(f"not a schedule: {schedule!r}")


class AdaptiveRule:
    """Raises a value by `step` (up to `cap`) when the validation accuracy stalls.

    After each evaluation, :meth:`observe` counts it as an improvement when the accuracy beats the best
    so far by more than `min_delta` (same units as the accuracy); otherwise it counts a stalled
    evaluation. After `patience` stalled evaluations in a row the value rises by `step`, the count
    restarts, and the next `cooldown` evaluations are not counted (the change needs time to act).
    """

    def __init__(self, cfg: AdaptiveSchedule) -> None:
        self.cfg = cfg
        self.value = float(cfg.start)
        self.best: float | None = None
        self.stalled = 0
        self.cooldown_left = 0

    def observe(self, accuracy: float) -> bool:
        """Feed one validation accuracy; True when the value was raised."""
        if self.best is None or accuracy > self.best + self.cfg.min_delta:
            self.best = accuracy
            self.stalled = 0
            return False
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            return False
        self.stalled += 1
        if self.stalled < self.cfg.patience or self.value >= self.cfg.cap:
            return False
        self.value = min(self.value + self.cfg.step, self.cfg.cap)
        self.stalled = 0
        self.cooldown_left = self.cfg.cooldown
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "best": self.best, "stalled": self.stalled, "cooldown_left": self.cooldown_left}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])
        self.best = None if state["best"] is None else float(state["best"])
        self.stalled = int(state["stalled"])
        self.cooldown_left = int(state["cooldown_left"])


class DistillSchedules:
    """Temperature, soft_weight and hard_weight of a DistillConfig, per epoch."""

    def __init__(self, cfg: DistillConfig, num_epochs: int | None = None) -> None:
        self.num_epochs = cfg.epochs if num_epochs is None else num_epochs
        self.schedules = {name: getattr(cfg, name) for name in SCHEDULED_FIELDS}
        self.rules = {name: AdaptiveRule(s) for name, s in self.schedules.items() if isinstance(s, AdaptiveSchedule)}

    def values(self, epoch: int) -> dict[str, float]:
        """{"temperature": ..., "soft_weight": ..., "hard_weight": ...} for `epoch`."""
        return {
            name: self.rules[name].value if name in self.rules else value_at(s, epoch, self.num_epochs)
            for name, s in self.schedules.items()
        }

    def observe(self, accuracy: float) -> list[str]:
        """Feed a validation accuracy to the adaptive rules; the names of the values that changed."""
        return [name for name, rule in self.rules.items() if rule.observe(accuracy)]

    def state_dict(self) -> dict[str, Any]:
        return {name: rule.state_dict() for name, rule in self.rules.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, rule in self.rules.items():
            if name in state:
                rule.load_state_dict(state[name])
