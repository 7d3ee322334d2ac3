"""The sleeve's C lane under random datagrams, on its fast path: valid datagrams and fragments of B's, cut,
flipped, spliced and relabelled, sent to a real engine whose lane already carries B's frames. Properties:
under encryption nothing forged is ever delivered (only the marker that follows each example), and in both
modes the lane's thread lives on and still delivers. (The engine's own Python path has test_sleeve*.py.)"""

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weavenet.datapath import lane as clane
from weavenet.datapath import sleeve

from ..unit.test_datapath_engine import KEY, LOCAL_MAC, REMOTE_MAC, frame
from ..unit.test_lane import primed

pytestmark = pytest.mark.skipif(not clane.AVAILABLE, reason="the C lane is not built (WEAVENET_PURE)")

mutation = st.tuples(st.sampled_from(["flip", "cut", "insert", "set", "flags", "count"]), st.integers(0, 70_000),
                     st.binary(min_size=1, max_size=40))


def mutate(dg: bytearray, how: str, at: int, data: bytes) -> None:
    if not dg and how != "insert":
        return
    at %= max(len(dg), 1)
    match how:
        case "flip":
            dg[at] ^= data[0] or 1
        case "cut":
            del dg[at:]
        case "insert":
            dg[at:at] = data
        case "set":
            dg[at:at + len(data)] = data
        case "flags" if len(dg) > 1:
            dg[1] = data[0]
        case "count" if len(dg) > sleeve.HEADER.size + 1:
            dg[sleeve.HEADER.size + data[0] % 2] = data[-1]


@pytest.fixture(scope="module", params=[KEY, None], ids=["encrypted", "plain"])
def rig(request):
    r = primed(request.param)
    r.tap.settimeout(0.3)
    yield r
    r.close()


@given(st.integers(0, 3), st.integers(0, 2000), st.lists(mutation, min_size=1, max_size=4))
def test_random_datagrams_on_the_fast_path(rig, kind, size, mutations):
    f = frame(LOCAL_MAC, REMOTE_MAC, os.urandom(size))
    dg = rig.valid([f] * (1 + kind % 2))
    if kind >= 2:                                    # a fragment of one, at a path MTU of 600
        parts = sleeve.fragment(dg, 600)
        dg = parts[size % len(parts)]
    original, dg = dg, bytearray(dg)
    for how, at, data in mutations:
        mutate(dg, how, at, data)
    rig.send(bytes(dg))
    genuine = bytes(dg) == original                  # a mutation can leave it as it was ("set" the same bytes)
    marker = frame(LOCAL_MAC, REMOTE_MAC, b"marker" + os.urandom(40))
    rig.send(rig.valid([marker]))
    while True:
        got = rig.delivered()
        assert got is not None, f"nothing delivered after a mutated datagram: {dict(rig.eng.drops)}"
        if got == marker:
            break
        assert rig.key is None or (genuine and got == f), "a forged datagram was delivered under encryption"
    assert all(t.is_alive() for t in rig.eng._threads.values())
