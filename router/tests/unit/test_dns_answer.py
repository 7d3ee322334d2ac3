"""DNS answers built from real dnspython queries: A, PTR, NXDOMAIN, NODATA, forwarding, errors, size."""

import random

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest

from weavenet.nameserver import RecordStore, answer

US = "02:00:00:00:00:01"


@pytest.fixture
def store() -> RecordStore:
    s = RecordStore(US, 1)
    for i in range(1, 5):
        s.add("web", f"10.32.0.{i}", f"c{i}", 0)
    s.add("db", "10.32.1.1", "c9", 0)
    return s


def ask(store, name, rdtype="A", seed=0, **kw):
    q = dns.message.make_query(name, rdtype, **kw)
    out = answer(q.to_wire(), store, 0.0, ttl=1, rng=random.Random(seed))
    return q, (dns.message.from_wire(out) if out else out)


def addrs(resp) -> list[str]:
    return [r.address for rrset in resp.answer for r in rrset]


def test_a_with_several_addresses_returns_all_in_varying_order(store):
    orders = set()
    for seed in range(10):
        q, r = ask(store, "web.weave.local.", seed=seed)
        assert r.id == q.id and r.rcode() == dns.rcode.NOERROR
        assert r.flags & dns.flags.AA and r.flags & dns.flags.QR and r.flags & dns.flags.RA
        assert sorted(addrs(r)) == ["10.32.0.1", "10.32.0.2", "10.32.0.3", "10.32.0.4"]
        assert r.answer[0].ttl == 1
        orders.add(tuple(addrs(r)))
    assert len(orders) > 3
    assert ask(store, "web.weave.local.", seed=3)[1].answer == ask(store, "web.weave.local.", seed=3)[1].answer


def test_names_are_case_insensitive(store):
    _, r = ask(store, "DB.Weave.Local.")
    assert addrs(r) == ["10.32.1.1"]


def test_unknown_name_in_domain_is_nxdomain_with_soa(store):
    _, r = ask(store, "nope.weave.local.")
    assert r.rcode() == dns.rcode.NXDOMAIN and not r.answer
    assert r.authority[0].rdtype == dns.rdatatype.SOA and r.authority[0][0].minimum == 1


def test_aaaa_for_a_weave_name_is_nodata(store):
    _, r = ask(store, "web.weave.local.", "AAAA")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    _, r = ask(store, "nope.weave.local.", "AAAA")
    assert r.rcode() == dns.rcode.NXDOMAIN


def test_ptr_for_weave_addresses_and_forwarding_for_others(store):
    _, r = ask(store, "3.0.32.10.in-addr.arpa.", "PTR")
    assert r.rcode() == dns.rcode.NOERROR and [x.target.to_text() for x in r.answer[0]] == ["web.weave.local."]
    assert ask(store, "9.9.32.10.in-addr.arpa.", "PTR")[1] is None  # no record: upstream decides
    assert ask(store, "0.32.10.in-addr.arpa.", "PTR")[1] is None


def test_other_domains_are_forwarded(store):
    assert ask(store, "example.com.")[1] is None
    assert ask(store, "weave.local.example.com.")[1] is None


def test_removed_names_disappear(store):
    store.remove_container("c9", 1)
    assert ask(store, "db.weave.local.")[1].rcode() == dns.rcode.NXDOMAIN


def test_garbage_gets_formerr_and_responses_are_dropped(store):
    out = answer(b"\x12\x34garbage", store, 0)
    assert out[:2] == b"\x12\x34" and out[3] & 0x0F == dns.rcode.FORMERR
    assert answer(b"", store, 0)[3] & 0x0F == dns.rcode.FORMERR
    q = dns.message.make_query("web.weave.local.", "A")
    resp = dns.message.make_response(q)
    assert answer(resp.to_wire(), store, 0) == b""


def test_two_questions_formerr_and_other_opcodes_notimp(store):
    q = dns.message.make_query("web.weave.local.", "A")
    q.question.append(dns.message.make_query("db.weave.local.", "A").question[0])
    r = dns.message.from_wire(answer(q.to_wire(), store, 0))
    assert r.rcode() == dns.rcode.FORMERR
    q = dns.message.make_query("web.weave.local.", "A")
    q.set_opcode(dns.opcode.NOTIFY)
    assert dns.message.from_wire(answer(q.to_wire(), store, 0)).rcode() == dns.rcode.NOTIMP


def test_many_addresses_are_trimmed_to_fit_udp():
    s = RecordStore(US, 1)
    for i in range(100):
        s.add("big", f"10.32.{i // 250}.{i % 250 + 1}", f"c{i}", 0)
    q = dns.message.make_query("big.weave.local.", "A")
    out = answer(q.to_wire(), s, 0, rng=random.Random(1))
    assert len(out) <= 512
    n = len(addrs(dns.message.from_wire(out)))
    assert 10 < n < 100 and dns.message.from_wire(out).flags & dns.flags.TC
    q = dns.message.make_query("big.weave.local.", "A", use_edns=0, payload=4096)
    assert len(addrs(dns.message.from_wire(answer(q.to_wire(), s, 0)))) == 100


def fifty() -> RecordStore:
    s = RecordStore(US, 1)
    for i in range(50):
        s.add("many", f"10.32.0.{i + 1}", f"c{i}", 0)
    return s


@pytest.mark.parametrize("kw, tcp, limit", [({}, False, 512), ({"use_edns": 0, "payload": 700}, False, 700),
                                            ({"use_edns": 0, "payload": 100}, False, 512)])
def test_trimmed_answers_have_tc_and_as_many_records_as_fit(kw, tcp, limit):
    s = fifty()
    q = dns.message.make_query("many.weave.local.", "A", **kw)
    out = answer(q.to_wire(), s, 0, rng=random.Random(2), tcp=tcp)
    r = dns.message.from_wire(out)
    n = len(addrs(r))
    assert r.flags & dns.flags.TC and len(out) <= limit and 20 < n < 50
    assert len(out) + 16 > limit   # one more A record (16 bytes compressed) would not have fit
    assert len(set(addrs(r))) == n and set(addrs(r)) <= {f"10.32.0.{i + 1}" for i in range(50)}


@pytest.mark.parametrize("kw, tcp", [({}, True), ({"use_edns": 0, "payload": 1232}, False),
                                     ({"use_edns": 0, "payload": 65535}, False)])
def test_whole_answers_have_no_tc(kw, tcp):
    q = dns.message.make_query("many.weave.local.", "A", **kw)
    r = dns.message.from_wire(answer(q.to_wire(), fifty(), 0, tcp=tcp))
    assert not r.flags & dns.flags.TC and len(addrs(r)) == 50


def test_more_than_tcp_can_carry_is_trimmed_with_tc_and_bounded():
    s = RecordStore(US, 1)
    for i in range(5000):
        s.add("huge", f"10.32.{i // 250}.{i % 250 + 1}", f"c{i}", 0)
    q = dns.message.make_query("huge.weave.local.", "A")
    out = answer(q.to_wire(), s, 0, tcp=True)
    r = dns.message.from_wire(out)
    assert r.flags & dns.flags.TC and len(out) <= 65535 and len(addrs(r)) == (65535 - len(q.to_wire())) // 16


def test_ptr_answers_of_varied_lengths_are_trimmed_with_tc():
    s = RecordStore(US, 1)
    for i in range(60):
        s.add(f"n{'x' * (i % 40)}{i}", "10.32.9.9", f"c{i}", 0)
    q = dns.message.make_query("9.9.32.10.in-addr.arpa.", "PTR")
    out = answer(q.to_wire(), s, 0)
    r = dns.message.from_wire(out)
    assert r.flags & dns.flags.TC and len(out) <= 512 and len(r.answer[0]) > 5
    r = dns.message.from_wire(answer(q.to_wire(), s, 0, tcp=True))
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == 60


def test_other_domain_setting(store):
    s = RecordStore(US, 1, domain="corp.internal")
    s.add("x", "10.32.0.7", "c", 0)
    q = dns.message.make_query("x.corp.internal.", "A")
    r = dns.message.from_wire(answer(q.to_wire(), s, 0, domain="corp.internal"))
    assert addrs(r) == ["10.32.0.7"]
    assert answer(dns.message.make_query("x.weave.local.", "A").to_wire(), s, 0, domain="corp.internal") is None
