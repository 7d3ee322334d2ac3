"""Health through real routers (build_router, the dispatcher, the gossip layer) talking TCP on localhost:
each router measures the other, and each has the other's link summary, via the `health` channel."""

from __future__ import annotations

import asyncio

from weavenet.api.metrics import make_registry, render
from weavenet.health.view import build

from .test_router_wiring import NAMES, established, free_port, running, until


def test_two_routers_measure_each_other_and_share_their_link_summaries(tmp_path):
    async def main() -> None:
        pa, pb = free_port(), free_port()
        async with running(tmp_path, "a", pa) as (a, _), running(tmp_path, "b", pb, (f"127.0.0.1:{pa}",)) as (b, _):
            await until(lambda: established(a, "b") and established(b, "a"))

            def b_seen_by_a() -> dict | None:
                rows = a.report()["router"]["health"]["peers"]
                return rows[0] if rows and rows[0]["rtt_ms"] is not None else None
            await until(b_seen_by_a)
            row = b_seen_by_a()
            assert (row["name"], row["nickname"], row["state"], row["encrypted"]) == (NAMES["b"], "b", "connected",
                                                                                     False)
            # b's own summary reached a (and a's reached b): both ends of the one link.
            # (each summary is checked for changes once a second: the first ones may predate the link)
            await until(lambda: [sorted(e.reported_by) for e in build(a.report()).edges]
                        == [sorted(NAMES[k] for k in "ab")])
            (edge,) = build(a.report()).edges
            assert edge.state == "ok" and sorted(edge.reported_by) == sorted(NAMES.values())
            text = render(make_registry(a)).decode()
            assert f'weave_peer_connected{{nickname="b",peer="{NAMES["b"]}"}} 1.0' in text
    asyncio.run(main())
