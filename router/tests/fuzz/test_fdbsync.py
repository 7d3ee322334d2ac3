"""Fuzz the static-FDB advert decoder and the claims table: only AdvertError escapes decode; whatever
peers advertise, the table stays within its caps, consistent, and never installs a forbidden MAC."""

import json

from hypothesis import given
from hypothesis import strategies as st

from weavenet.datapath import fdbsync
from weavenet.datapath.fdbsync import Advert, AdvertError, RemoteMacs

MACS = [f"02:00:00:00:00:{i:02x}" for i in range(12)]
mac_like = st.one_of(st.sampled_from(MACS), st.text(max_size=20), st.integers(), st.none(),
                     st.sampled_from(["01:00:5e:00:00:01", "00:00:00:00:00:00", "02:00:00:00:00:0A"]))
fdb_obj = st.fixed_dictionaries({}, optional={
    "full": st.one_of(st.booleans(), st.integers(), st.text(max_size=3)),
    "add": st.one_of(st.lists(mac_like, max_size=8), st.text(max_size=5), st.integers()),
    "del": st.one_of(st.lists(mac_like, max_size=8), st.none()),
})


@given(st.one_of(st.binary(max_size=200), fdb_obj.map(lambda o: json.dumps({"fdb": o}).encode()),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                              lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
                              max_leaves=12).map(lambda o: json.dumps({"fdb": o}).encode())))
def test_decode_raises_only_advert_error(body):
    try:
        adv = fdbsync.decode(body)
    except AdvertError as e:
        assert e.reason.startswith("fdb_")
        return
    if adv is not None:
        assert all(fdbsync.unicast_mac(m) for m in adv.add | adv.remove)
        assert not (adv.full and adv.remove) and not adv.add & adv.remove


some_macs = st.sets(st.sampled_from(MACS), max_size=8)
advert = st.builds(lambda full, add, rem: Advert(full, frozenset(add), frozenset() if full else frozenset(rem - add)),
                   st.booleans(), some_macs, some_macs)
step = st.tuples(st.sampled_from(["b", "c", "d"]), st.one_of(advert, st.none()))


@given(st.lists(step, max_size=30), st.sets(st.sampled_from(MACS), max_size=3),
       st.dictionaries(st.sampled_from(["b", "c", "d"]), st.sampled_from(["192.0.2.2", "192.0.2.3"])))
def test_claims_stay_bounded_and_consistent(steps, forbidden, eligible):
    r = RemoteMacs(per_peer=5, total=9)
    for peer, adv in steps:
        if adv is None:
            r.drop_peer(peer)
        else:
            r.apply(peer, adv, forbidden)
        assert r.total == sum(len(c) for c in r.claims.values()) <= 9
        assert all(len(c) <= 5 and not c & forbidden for c in r.claims.values())
        assert {m for c in r.claims.values() for m in c} == set(r.owners)
        replace, delete = r.changes(eligible, forbidden)
        assert not {m for m, _ in replace} & forbidden
        # Each MAC points at its earliest eligible claimant; every claimed, allowed MAC with one is installed.
        want = {}
        for m, owners in r.owners.items():
            first = next((p for p in owners if p in eligible), None)
            if first is not None and m not in forbidden:
                want[m] = eligible[first]
        assert r.installed == want
    # Everything withdrawn: nothing stays installed.
    for p in list(r.claims):
        r.drop_peer(p)
    r.changes(eligible, forbidden)
    assert r.installed == {} and r.owners == {} and r.total == 0
