"""The tick grid: periodic deadlines land on whole steps, so an idle router's parts share its wake-ups."""

from __future__ import annotations

import random

from weavenet.mesh.grid import GRID, due_after, next_step

from .meshsim import SimNet, full_mesh


def test_next_step_is_strictly_after_now():
    assert next_step(10.0) == 11.0 and next_step(10.999) == 11.0 and next_step(10.0, 2.0) == 12.0
    assert next_step(11.0, 2.0) == 12.0


def test_due_after_is_on_the_grid_never_late_at_most_a_step_early_and_always_ahead():
    rng = random.Random(7)
    for _ in range(2000):
        now, period = rng.uniform(0, 1e5), rng.choice([0.3, 1.0, 2.5, 5.0, 30.0, 60.0])
        due = due_after(now, period)
        assert abs(due / GRID - round(due / GRID)) < 1e-6          # a whole step
        assert due > now
        if period >= GRID:
            assert now + period - GRID < due <= now + period + 1e-9
        else:
            assert due <= now + GRID


def test_an_idle_mesh_keeps_its_periodic_work_on_the_grid():
    net = SimNet()
    a, b, c = net.add(1), net.add(2), net.add(3)
    net.run(net.addr_of(a), a.connect([net.addr_of(b), net.addr_of(c)], net.now))
    net.until(lambda: full_mesh(net), 10)
    net.advance(10)
    for m in (a, b, c):
        for due in (m._next_summary, m._next_housekeeping):
            assert abs(due / GRID - round(due / GRID)) < 1e-6, due
