"""The peer_cost simulator's savings keep the peers' behaviour: one decode shared by peers that get the
same bytes (a bad body still fails for each), routes recomputed at most once a second."""

from __future__ import annotations

import json

import pytest

from weavenet.lab.simpeers import RECOMPUTE_INTERVAL, SHARED_MIN, SharedDecode, SimMesh
from weavenet.mesh.channel import decode_json
from weavenet.mesh.errors import ProtocolError
from weavenet.mesh.handshake import LocalIdentity


def test_shared_decode_decodes_a_big_body_once_and_refuses_a_bad_one_every_time():
    shared = SharedDecode(decode_json, size=2)
    body = json.dumps({"deltas": [["x" * SHARED_MIN]]}).encode()
    first = shared(body)
    assert shared(body) is first and (shared.hits, shared.misses) == (1, 1)
    assert shared(b"{}") == {} and shared.misses == 1                  # small: not cached
    bad = b"[" * SHARED_MIN
    for _ in range(2):
        with pytest.raises(ProtocolError):
            shared(bad)
    for i in range(3):                                                  # bounded
        shared(json.dumps([i, "y" * SHARED_MIN]).encode())
    assert len(shared._cache) == 2


def test_sim_mesh_recomputes_its_routes_at_most_once_per_interval():
    m = SimMesh(LocalIdentity("5e:00:00:00:00:01", "sim1", 1, 6783), 1)
    m._topo_dirty = True
    m.tick(100.0)
    assert not m._topo_dirty
    m._topo_dirty = True
    m.tick(100.1)
    assert m._topo_dirty                       # within the interval: still to do
    m.tick(100.0 + RECOMPUTE_INTERVAL + 0.01)
    assert not m._topo_dirty
