"""`weave stop --restart` (an upgrade): the router stops, but the fast path's kernel state keeps forwarding
for the next router; a plain stop closes the source filter (fail closed while no router runs)."""

from __future__ import annotations

import asyncio
import os
import signal
from types import SimpleNamespace

from weavenet.weaver.dataplane import Dataplane, DataplaneConfig
from weavenet.weaver.signals import RESTART_SIGNAL

from .test_datapath_fdbsync import Recorder
from .test_router_wiring import free_port, running, until


def _stopped_dataplane(keep: bool) -> list[tuple[str, tuple]]:
    dp = Dataplane(DataplaneConfig(), "02:00:00:00:0a:01")
    dp._nl = nl = Recorder()
    dp.engine = SimpleNamespace(stop=lambda: None)
    dp.tap = SimpleNamespace(close=lambda: None)
    dp.stop(None, keep_datapath=keep)
    return nl.take()


def test_plain_stop_empties_the_source_filter():
    assert ("set_peers", (set(),)) in _stopped_dataplane(keep=False)


def test_restart_stop_leaves_the_source_filter_and_fdb_alone():
    assert _stopped_dataplane(keep=True) == [("release_iproute", ())]   # (the netlink thread's socket only)


def test_restart_signal_stops_the_router_keeping_its_datapath(tmp_path):
    assert RESTART_SIGNAL not in (signal.SIGTERM, signal.SIGINT)

    async def main() -> None:
        async with running(tmp_path, "a", free_port()) as (a, _):
            os.kill(os.getpid(), RESTART_SIGNAL)   # what `weave stop --restart` sends
            await until(lambda: a._stop.is_set())
        assert a.dataplane.stopped == "kept"
        async with running(tmp_path, "b", free_port()) as (b, _):
            pass   # request_stop, as SIGTERM does
        assert b.dataplane.stopped == "closed"

    asyncio.run(main())
