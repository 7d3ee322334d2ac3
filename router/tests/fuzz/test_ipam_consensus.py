"""Fuzz: the IPAM consensus messages. Only ProtocolError escapes the claims decoder and the allocator;
whatever arrives, a router's own claims keep Paxos's invariant (accepted <= promise), and it keeps claims
only of routers that exist, each sent by that router itself."""

from __future__ import annotations

import contextlib
import ipaddress
import json

from hypothesis import given
from hypothesis import strategies as st

from weavenet.ipam import Allocator
from weavenet.ipam.init import consensus
from weavenet.ipam.paxos import claims_from_wire
from weavenet.mesh.errors import ProtocolError

PEERS = [f"02:00:00:00:00:0{i}" for i in range(1, 5)]
US = PEERS[0]
NET = ipaddress.IPv4Network("10.32.0.0/24")

scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) \
    | st.sampled_from(PEERS + ["x", ""]) | st.text(max_size=12)
values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                                                          max_size=4), max_leaves=8)
ballots = st.none() | st.tuples(st.integers(-1, 2**54), st.sampled_from(PEERS)).map(list) | values
claim_values = st.none() | st.fixed_dictionaries({"peers": st.lists(st.sampled_from(PEERS), max_size=4).map(sorted),
                                                  "nonce": st.integers(-1, 2**33)}) | values
claims = st.fixed_dictionaries({}, optional={"promise": ballots, "accepted": ballots, "value": claim_values}) | values


@given(claims)
def test_claims_decoder_raises_only_protocol_errors(w):
    with contextlib.suppress(ProtocolError):
        c = claims_from_wire(w)
        assert c.accepted <= c.promise and (c.value is None) == (c.accepted[0] == 0)


@given(st.lists(st.tuples(st.sampled_from(PEERS[1:]), st.sampled_from(PEERS[1:]), claims,
                          st.integers(-1, 2000) | values), min_size=1, max_size=4))
def test_consensus_messages_raise_only_protocol_errors(messages):
    a = Allocator(US, NET, init=consensus(4))
    a.peers_changed(set(PEERS[1:3]), set(PEERS[1:3]), 0.0)
    a.allocate("c", None, 0.0)
    for i, (frm, src, c, n) in enumerate(messages):
        data = json.dumps({"t": "paxos", "from": frm, "n": n, "claims": c}).encode()
        with contextlib.suppress(ProtocolError):
            a.receive(data, 0.1 * i, src)
        ours = a.paxos.ours
        assert ours.accepted <= ours.promise
    assert set(a.paxos.knows) <= {US, *PEERS[1:3]}  # only routers that exist, each about itself
