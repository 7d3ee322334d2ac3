"""The encrypted sleeve's AEAD: AEGIS-256 between routers that both offer it (hello feature sleeve_aead),
ChaCha20-Poly1305 with any other (a router of the previous version: rolling upgrades), and never a mix on
one connection: a datagram sealed the other way is refused as "auth", whatever it carries."""

import os

import pytest

from weavenet.datapath import sleeve
from weavenet.mesh.errors import ProtocolError
from weavenet.mesh.events import ConnectionUp
from weavenet.mesh.features import validate_features
from weavenet.weaver.dataplane import Dataplane, DataplaneConfig

from .test_datapath_engine import KEY, LOCAL_MAC, REMOTE_MAC, A, B, Rig, frame, wait

pytestmark = pytest.mark.skipif(not sleeve.AEGIS_AVAILABLE, reason="PyNaCl without AEGIS-256")
KEY2 = bytes(range(32, 64))


def test_aegis_round_trip_and_its_key_is_not_the_connections():
    k = sleeve.aegis_key(KEY)
    assert len(k) == 32 and k != KEY and k == sleeve.aegis_key(KEY) and k != sleeve.aegis_key(KEY2)
    frames = [os.urandom(n) for n in (60, 9000, 0)]
    dg = sleeve.encode(sleeve.name_bytes(A), 9, sleeve.name_bytes(A), sleeve.BROADCAST, frames, k, aegis=True)
    assert dg[1] == sleeve.F_ENCRYPTED | sleeve.F_AEGIS
    assert len(dg) == sleeve.HEADER.size + sleeve.BODY_HEAD.size + sum(4 + len(f) for f in frames) + sleeve.AEGIS_TAG
    assert sleeve.decode_body(dg, 9, k)[3] == frames
    for bad_key, bad_seq in ((KEY, 9), (k, 10)):                      # the wrong key or nonce: "auth"
        with pytest.raises(sleeve.SleeveError) as e:
            sleeve.decode_body(dg, bad_seq, bad_key)
        assert e.value.reason == "auth"
    flipped = bytearray(dg)
    flipped[1] &= ~sleeve.F_AEGIS                                     # the flag is authenticated (header = AD)
    with pytest.raises(sleeve.SleeveError):
        sleeve.decode_body(bytes(flipped), 9, k)
    short = dg[:sleeve.HEADER.size + sleeve.BODY_HEAD.size + 20]      # shorter than AEGIS's 32-byte tag
    with pytest.raises(sleeve.SleeveError) as e:
        sleeve.decode_body(short, 9, k)
    assert e.value.reason == "malformed"


def test_aegis_survives_fragments_and_trains():
    k = sleeve.aegis_key(KEY)
    dg = sleeve.encode(sleeve.name_bytes(A), 3, sleeve.name_bytes(A), sleeve.BROADCAST, [os.urandom(20000)], k,
                       aegis=True)
    buf, count = sleeve.fragments_joined(dg, 1472)
    assert sleeve.split_train(buf, 1472) == [dg]


@pytest.mark.parametrize("ours, theirs", [(True, False), (False, True)])
def test_a_connection_refuses_datagrams_sealed_the_other_way(ours, theirs):
    r = Rig(KEY, aegis=ours)
    try:
        f = frame(LOCAL_MAC, REMOTE_MAC, os.urandom(46))
        r.seq += 1
        key = sleeve.aegis_key(KEY) if theirs else KEY
        r.send(sleeve.encode(sleeve.name_bytes(B), r.seq, sleeve.name_bytes(B), sleeve.name_bytes(A), [f], key,
                             aegis=theirs))
        assert wait(lambda: r.eng.drops["auth"] == 1), dict(r.eng.drops)
        assert r.delivered() is None
        r.assert_alive_and_delivering()          # sealed the agreed way: delivered
    finally:
        r.close()


def test_the_engine_seals_with_what_the_connection_agreed():
    for aegis in (True, False):
        r = Rig(KEY, aegis=aegis)
        try:
            f = frame(REMOTE_MAC, LOCAL_MAC, os.urandom(100))
            r.assert_alive_and_delivering()      # learns REMOTE_MAC is B's
            r.tap.send(f)
            dg = r.recv_data()
            assert bool(dg[1] & sleeve.F_AEGIS) == aegis
            _, seq, _ = sleeve.peek(dg)
            assert sleeve.decode_body(dg, seq, r.seal_key)[3] == [f]
        finally:
            r.close()


def conn(features: dict, keys=(KEY, KEY2)) -> ConnectionUp:
    return ConnectionUp(B, 1, "192.0.2.2", 6783, True, features, keys)


def test_aegis_is_offered_and_used_only_when_the_peer_offers_it_too():
    dp = Dataplane(DataplaneConfig(fastdp=False, encrypted=True), A)
    try:
        assert dp.features()["sleeve_aead"] == sleeve.AEGIS
        new = dp._new_link(conn({"sleeve_aead": "aegis256"}))
        assert new.aegis and new.tx_key == sleeve.aegis_key(KEY) and new.rx_key == sleeve.aegis_key(KEY2)
        for features in ({}, {"sleeve_aead": "aegis128l"}):      # the previous version, or one we do not know
            old = dp._new_link(conn(features))
            assert not old.aegis and (old.tx_key, old.rx_key) == (KEY, KEY2)
        assert not dp._new_link(conn({"sleeve_aead": "aegis256"}, keys=None)).aegis   # no password: no AEAD
    finally:
        dp._netlink.shutdown(wait=False)


@pytest.mark.parametrize("value", ["aegis256", "chacha20-poly1305", "x"])
def test_sleeve_aead_feature_accepts_tokens(value):
    assert validate_features({"sleeve_aead": value}) == {"sleeve_aead": value}


@pytest.mark.parametrize("value", [1, None, "", "AEGIS", "a" * 33, "aegis 256", ["aegis256"]])
def test_sleeve_aead_feature_refuses_anything_else(value):
    with pytest.raises(ProtocolError):
        validate_features({"sleeve_aead": value})
