"""Dial targets and jittered exponential backoff."""

import random

import pytest

from weavenet.mesh.connmaker import (
    BACKOFF_AFTER_REFUSAL,
    BACKOFF_INITIAL,
    BACKOFF_MAX,
    RECONNECT_INTERVAL,
    RECONNECT_QUICK,
    ConnectionMaker,
)


class FixedRng(random.Random):
    """uniform() returns a chosen point of the jitter range: 0 = low end, 1 = high end."""

    def __init__(self, at: float) -> None:
        super().__init__(0)
        self.at = at

    def uniform(self, a, b):
        return a + (b - a) * self.at


def fail_n(cm: ConnectionMaker, n: int, refused: bool = False, addr: str = "a:1") -> list[float]:
    """Dial and fail n times, each at time 0; return the waits."""
    waits = []
    for i in range(n):
        t = cm.targets[addr]
        cm.dialing(t, i)
        cm.failed(addr, "boom", 0.0, refused=refused)
        waits.append(t.next_try)
    return waits


def test_add_is_due_now():
    cm = ConnectionMaker()
    cm.add("a:1", explicit=True, now=5.0)
    t = cm.targets["a:1"]
    assert (t.state, t.attempts, t.next_try) == ("idle", 0, 5.0)
    assert cm.due(4.9) == [] and cm.due(5.0) == [t]
    assert cm.next_deadline() == 5.0


def test_backoff_doubles_without_jitter_at_midpoint():
    cm = ConnectionMaker(FixedRng(0.5))
    cm.add("a:1", False, 0.0)
    waits = fail_n(cm, 10)
    assert waits == [min(BACKOFF_MAX, BACKOFF_INITIAL * 2**i) for i in range(10)]
    assert waits[-1] == BACKOFF_MAX


@pytest.mark.parametrize("seed", range(5))
def test_backoff_jitter_bounds_and_cap(seed):
    cm = ConnectionMaker(random.Random(seed))
    cm.add("a:1", False, 0.0)
    waits = fail_n(cm, 12)
    for i, w in enumerate(waits):
        base = min(BACKOFF_MAX, BACKOFF_INITIAL * 2**i)
        assert 0.75 * base <= w <= 1.25 * base
    assert max(waits) <= BACKOFF_MAX * 1.25
    assert len(set(waits)) == len(waits)  # jittered, not all equal


def test_jitter_extremes():
    for at, factor in ((0.0, 0.75), (1.0, 1.25)):
        cm = ConnectionMaker(FixedRng(at))
        cm.add("a:1", False, 0.0)
        assert fail_n(cm, 3) == [BACKOFF_INITIAL * factor, 2 * BACKOFF_INITIAL * factor, 4 * BACKOFF_INITIAL * factor]


def test_failure_is_relative_to_now_and_sets_state():
    cm = ConnectionMaker(FixedRng(0.5))
    cm.add("a:1", False, 0.0)
    t = cm.targets["a:1"]
    cm.dialing(t, 7)
    assert (t.state, t.conn_id, t.attempts) == ("connecting", 7, 1)
    assert cm.due(100.0) == [] and cm.next_deadline() is None  # connecting: not due
    cm.failed("a:1", "connection refused", 100.0)
    assert (t.state, t.conn_id, t.info, t.next_try) == ("retrying", None, "connection refused", 100.0 + BACKOFF_INITIAL)


@pytest.mark.parametrize("seed", range(5))
def test_refused_waits_long(seed):
    cm = ConnectionMaker(random.Random(seed))
    cm.add("a:1", False, 0.0)
    waits = fail_n(cm, 8, refused=True)
    assert cm.targets["a:1"].state == "failed"
    for i, w in enumerate(waits):
        assert w >= BACKOFF_AFTER_REFUSAL * 0.75
        assert w <= max(BACKOFF_AFTER_REFUSAL, min(BACKOFF_MAX, BACKOFF_INITIAL * 2**i)) * 1.25
    assert waits[-1] >= BACKOFF_MAX * 0.75  # grows past the refusal floor


def test_backoff_after_very_many_attempts():
    cm = ConnectionMaker(FixedRng(0.5))
    cm.add("a:1", True, 0.0)
    cm.targets["a:1"].attempts = 1100  # ~9 hours of 30 s retries against a dead peer
    cm.failed("a:1", "timeout", 0.0)
    assert cm.targets["a:1"].next_try == BACKOFF_MAX


def test_connected_resets_backoff():
    cm = ConnectionMaker(FixedRng(0.5))
    cm.add("a:1", False, 0.0)
    fail_n(cm, 5)
    cm.dialing(cm.targets["a:1"], 1)
    cm.connected("a:1")
    t = cm.targets["a:1"]
    assert (t.state, t.attempts, t.info) == ("connected", 0, "")
    assert cm.due(1e9) == [] and cm.next_deadline() is None
    assert fail_n(cm, 1) == [RECONNECT_INTERVAL]  # a lost connection: quick redials first (below)


def test_due_and_next_deadline_over_several_targets():
    cm = ConnectionMaker(FixedRng(0.5))
    for addr, now in (("a:1", 3.0), ("b:1", 1.0), ("c:1", 2.0)):
        cm.add(addr, False, now)
    cm.dialing(cm.targets["b:1"], 1)
    assert cm.next_deadline() == 2.0
    assert [t.address for t in cm.due(2.5)] == ["c:1"]
    assert {t.address for t in cm.due(3.0)} == {"a:1", "c:1"}
    assert ConnectionMaker().next_deadline() is None


@pytest.mark.parametrize("refused", [False, True])
def test_add_existing_failed_target_makes_it_due_now(refused):
    cm = ConnectionMaker(FixedRng(0.5))
    cm.add("a:1", False, 0.0)
    fail_n(cm, 4, refused=refused)
    assert cm.due(1.0) == []
    cm.add("a:1", True, 1.0)
    t = cm.targets["a:1"]
    assert t.explicit and t.next_try == 1.0 and cm.due(1.0) == [t]
    assert t.attempts == 4  # the backoff history is kept


def test_add_existing_connected_or_connecting_target_is_untouched():
    cm = ConnectionMaker()
    cm.add("a:1", False, 0.0)
    cm.add("b:1", False, 0.0)
    cm.dialing(cm.targets["a:1"], 1)
    cm.dialing(cm.targets["b:1"], 2)
    cm.connected("b:1")
    cm.add("a:1", False, 50.0)
    cm.add("b:1", False, 50.0)
    assert cm.targets["a:1"].state == "connecting" and cm.targets["b:1"].state == "connected"
    assert cm.targets["a:1"].next_try == 0.0 and cm.due(100.0) == []


def test_explicit_flag_is_sticky():
    cm = ConnectionMaker()
    cm.add("z:1", True, 0.0)
    cm.add("d:1", False, 0.0)
    cm.add("b:1", False, 0.0)
    cm.add("b:1", True, 0.0)  # discovered, then asked for explicitly
    cm.add("z:1", False, 0.0)  # explicit, then discovered again: stays explicit
    assert cm.explicit() == ["b:1", "z:1"]


def test_remove_and_unknown_addresses():
    cm = ConnectionMaker()
    cm.add("a:1", True, 0.0)
    t = cm.targets["a:1"]
    assert cm.remove("a:1") is t
    assert cm.remove("a:1") is None
    cm.failed("a:1", "x", 0.0)  # unknown: ignored
    cm.connected("a:1")
    assert cm.targets == {} and cm.explicit() == []


def test_a_lost_connection_is_redialled_quickly_then_backs_off():
    cm = ConnectionMaker(FixedRng(0.5))
    cm.add("a:1", False, 0.0)
    cm.dialing(cm.targets["a:1"], 1)
    cm.connected("a:1")
    waits = fail_n(cm, RECONNECT_QUICK + 3)
    assert waits == [RECONNECT_INTERVAL] * RECONNECT_QUICK + [BACKOFF_INITIAL, 2 * BACKOFF_INITIAL, 4 * BACKOFF_INITIAL]
    # a refusal (password, version) ends the quick redials at once
    cm.dialing(cm.targets["a:1"], 2)
    cm.connected("a:1")
    assert fail_n(cm, 1, refused=True)[0] >= BACKOFF_AFTER_REFUSAL * 0.75
    assert fail_n(cm, 1)[0] > BACKOFF_INITIAL
