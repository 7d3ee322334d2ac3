"""The router's tick grid. Periodic work that may run a little early (expiry passes, anti-entropy rounds,
health checks, the ticker's own minimum wake-up) is scheduled on whole GRID steps of the router's clock,
so an idle router wakes once per step for all of it instead of once for each at its own phase."""

from __future__ import annotations

import math

GRID = 1.0


def next_step(now: float, step: float = GRID) -> float:
    """The first grid point strictly after `now`."""
    return (math.floor(now / step) + 1) * step


def due_after(now: float, period: float) -> float:
    """A periodic deadline on the grid: never later than `period` from `now` (unless shorter than a step),
    at most one step earlier, always after `now`."""
    return next_step(now + max(0.0, period - GRID))
