"""A distill sweep under torchrun: rank 0 alone works the Optuna study and broadcasts its orders over the run's
process group; every rank trains each trial together (DistributedDataParallel), and stops it when rank 0 does.

Orders, in the order rank 0 sends them: `trial` (number, settings, seed), then after each epoch `go` or `prune`
(the pruner's decision), `wait` while the study's last trials run on other workers, `done` when the study has
its trials. `abort` carries rank 0's error to ranks waiting for an order, so none is left in a collective.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from edgekd import distributed
from edgekd.errors import EdgekdError
from edgekd.ondevice.text import one_line

LISTENING = ("prune", "wait", "done")  # after these the other ranks wait for rank 0's next broadcast


@dataclass(frozen=True)
class Order:
    kind: str  # trial, go, prune, wait, done, abort
    number: int = -1
    settings: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    retry_of: int | None = None
    reason: str = ""


class Stopped(Exception):
    """Rank 0 pruned the trial this rank is training."""


class Lead:
    """Rank 0's side. Used as a context manager around its work on the study: an exception raised while the other
    ranks wait for a broadcast is sent to them as `abort` first, then raised here as usual."""

    def __init__(self) -> None:
        self.listening = True  # the other ranks are (or will be) waiting for rank 0's next broadcast

    def send(self, value: Any) -> None:
        distributed.broadcast(value)
        self.listening = isinstance(value, Order) and value.kind in LISTENING

    def epoch(self, report: Callable[[int, float], None], epoch: int, score: float, pruned: type, last: bool) -> None:
        """Feed the pruner (`report` raises `pruned` to stop the trial) and send every rank its decision; after the
        `last` epoch the other ranks finish the trial on their own and wait for the next order."""
        try:
            report(epoch, score)
        except BaseException as e:
            self.send(Order("prune" if isinstance(e, pruned) else "abort", reason=one_line(e)))
            raise
        self.send(Order("go"))
        self.listening = last

    def __enter__(self) -> Lead:
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is not None and self.listening and distributed.world_size() > 1:
            self.send(Order("abort", reason=one_line(exc)))


def receive() -> Any:
    """Rank 0's next broadcast, on a rank that follows; rank 0's error, raised here, when it sent `abort`."""
    got = distributed.broadcast(None)
    if isinstance(got, Order) and got.kind == "abort":
        raise EdgekdError(f"sweep: rank 0 stopped the sweep ({got.reason}); its log says why")
    return got


def heed(epoch: int, entry: dict) -> None:
    """A following rank's end of epoch: rank 0's decision; `Stopped` when it pruned the trial."""
    if receive().kind == "prune":
        raise Stopped(f"pruned after epoch {epoch}")


def follow(train: Callable[[Order], None]) -> None:
    """A following rank's part of the study: train each trial rank 0 sends, until it sends `done`."""
    while (order := receive()).kind != "done":
        if order.kind == "trial":
            with contextlib.suppress(Stopped):
                train(order)
