"""Answering DNS queries from the record store: a pure function from query bytes to response bytes.

The adapter receives a datagram (or a TCP message), calls `answer`, and sends back what it returns;
`None` means "not ours": forward the query to the upstream resolvers (from `parse_resolv_conf`) and relay
their answer; `b""` means drop it (it was itself a response). An answer that does not fit the client's
size (512 bytes over UDP, or its EDNS size; 65535 over TCP) carries as many records as fit and the TC bit,
so the client asks again over TCP (RFC 1035 4.2.1, RFC 7766).
"""

from __future__ import annotations

import random
import struct

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.PTR
import dns.rdtypes.IN.A
import dns.rrset

from .store import DEFAULT_DOMAIN, RecordStore, normalise_domain

_REVERSE = dns.name.from_text("in-addr.arpa.")
_A, _PTR, _ANY = dns.rdatatype.A, dns.rdatatype.PTR, dns.rdatatype.ANY
_IN = dns.rdataclass.IN
_RNG = random.Random()
UDP_MIN_SIZE = 512        # what every client takes over UDP (RFC 1035), and the floor of an EDNS size
TCP_MAX_MESSAGE = 65535   # the most a 2-byte TCP length prefix can frame (RFC 1035 4.2.2)
_MIN_RR = 12              # the smallest answer record: a compressed name (2), type, class, TTL, length (10)


def formerr(query: bytes) -> bytes:
    """A bare FORMERR for input dnspython cannot parse: the query's id (if it has one), no sections."""
    qid = struct.unpack(">H", query[:2])[0] if len(query) >= 2 else 0
    return struct.pack(">HHHHHH", qid, dns.flags.QR | dns.rcode.FORMERR, 0, 0, 0, 0)


def servfail(query: bytes) -> bytes:
    """SERVFAIL for a query we could not get answered (upstream down, or too many forwards at once): the
    query's id and question echoed when it parses, a bare header otherwise."""
    try:
        resp = dns.message.make_response(dns.message.from_wire(query), recursion_available=True)
        resp.set_rcode(dns.rcode.SERVFAIL)
        return resp.to_wire()
    except Exception:  # noqa: BLE001 - dnspython may raise more than DNSException on hostile bytes
        qid = struct.unpack(">H", query[:2])[0] if len(query) >= 2 else 0
        return struct.pack(">HHHHHH", qid, dns.flags.QR | dns.flags.RA | dns.rcode.SERVFAIL, 0, 0, 0, 0)


def answer(query: bytes, store: RecordStore, now: float, ttl: int = 1, domain: str = DEFAULT_DOMAIN,
           rng: random.Random | None = None, max_size: int | None = None, tcp: bool = False) -> bytes | None:
    """The response to `query`, or None to forward it upstream (a name outside our domain, or the PTR of
    an address we have no record for). The size limit: `max_size` if given, else TCP_MAX_MESSAGE over TCP,
    else the query's EDNS payload size (512 without EDNS); a record set that does not fit is trimmed to a
    random subset and TC set. `now` is unused today: lookups do not depend on time (kept so answering
    can grow caching)."""
    try:
        q = dns.message.from_wire(query)
    except Exception:  # noqa: BLE001 - DNSException mostly, but hostile bytes reach other types too
        return formerr(query)
    if q.flags & dns.flags.QR:
        return b""  # a response sent to us: answering it could loop
    resp = dns.message.make_response(q, recursion_available=True)
    if q.opcode() != dns.opcode.QUERY:
        resp.set_rcode(dns.rcode.NOTIMP)
        return resp.to_wire()
    if len(q.question) != 1:
        resp.set_rcode(dns.rcode.FORMERR)
        return resp.to_wire()
    question = q.question[0]
    qname, qtype = question.name, question.rdtype
    zone = dns.name.from_text(normalise_domain(domain))
    if question.rdclass != _IN:
        return None
    rng = rng or _RNG
    if qname.is_subdomain(zone):
        resp.flags |= dns.flags.AA
        addrs = store.lookup(qname.to_text().lower())
        if addrs and qtype in (_A, _ANY):
            rng.shuffle(addrs)
            return _fit(resp, qname, _A, addrs, ttl, _limit(q, max_size, tcp))
        if not addrs and qname != zone:
            resp.set_rcode(dns.rcode.NXDOMAIN)
        resp.authority.append(_soa(zone, ttl))  # lets resolvers cache the negative answer for `ttl`
        return resp.to_wire()
    if qname.is_subdomain(_REVERSE) and qtype in (_PTR, _ANY):
        try:
            addr = _reverse_address(qname)
        except ValueError:
            return None
        names = store.reverse(addr)
        if not names:
            return None
        resp.flags |= dns.flags.AA
        return _fit(resp, qname, _PTR, names, ttl, _limit(q, max_size, tcp))
    return None


def _reverse_address(qname: dns.name.Name) -> str:
    labels = [x.decode() for x in qname.relativize(_REVERSE).labels]
    if len(labels) != 4 or not all(x.isdigit() and int(x) < 256 and str(int(x)) == x for x in labels):
        raise ValueError("not the reverse name of one IPv4 address")
    return ".".join(reversed(labels))


def _limit(q: dns.message.Message, max_size: int | None, tcp: bool) -> int:
    if max_size is not None:
        return max_size
    if tcp:
        return TCP_MAX_MESSAGE
    return min(max(UDP_MIN_SIZE, q.payload), TCP_MAX_MESSAGE) if q.edns >= 0 else UDP_MIN_SIZE


def _soa(zone: dns.name.Name, ttl: int) -> dns.rrset.RRset:
    z = zone.to_text()
    return dns.rrset.from_text(zone, ttl, _IN, dns.rdatatype.SOA, f"ns.{z} hostmaster.{z} 1 3600 600 86400 {ttl}")


def _rdata(rdtype: dns.rdatatype.RdataType, value: str) -> dns.rdata.Rdata:
    if rdtype == _A:
        return dns.rdtypes.IN.A.A(_IN, _A, value)   # built, not parsed from text: thousands may be asked for
    return dns.rdtypes.ANY.PTR.PTR(_IN, _PTR, dns.name.from_text(value))


def _wire(resp: dns.message.Message, qname: dns.name.Name, ttl: int, rdatas: list[dns.rdata.Rdata],
          limit: int) -> bytes | None:
    resp.answer = [dns.rrset.from_rdata_list(qname, ttl, rdatas)] if rdatas else []
    try:
        return resp.to_wire(max_size=limit)
    except dns.exception.TooBig:
        return None


def _fit(resp: dns.message.Message, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType, values: list[str],
         ttl: int, limit: int) -> bytes:
    """The answer with all `values` (already in their random order) if they fit in `limit` bytes; else as
    many as fit (the most a client can get over this transport) with TC set."""
    empty = _wire(resp, qname, ttl, [], TCP_MAX_MESSAGE)
    assert empty is not None  # a header and one question always fit (names are at most 255 bytes)
    room = max(0, limit - len(empty))
    # More records than the smallest possible ones could fill never fit: bounds the work for a name a
    # hostile peer gave thousands of addresses (each try below builds and encodes that many records).
    cap = min(len(values), room // _MIN_RR)
    rdatas = [_rdata(rdtype, v) for v in values[:cap + 1]]
    if cap == len(values):
        whole = _wire(resp, qname, ttl, rdatas, limit)
        if whole is not None:
            return whole
    resp.flags |= dns.flags.TC
    best = _wire(resp, qname, ttl, [], max(limit, UDP_MIN_SIZE))
    lo, hi = 0, min(cap, len(values) - 1)   # `lo` records fit (none always does); more than `hi` do not
    one = _wire(resp, qname, ttl, rdatas[:1], TCP_MAX_MESSAGE)
    guess = min(hi, room // max(_MIN_RR, len(one) - len(empty))) if one is not None else 0
    if guess:   # exact for A records (all the same size once the name is compressed): one encoding settles it
        out = _wire(resp, qname, ttl, rdatas[:guess], limit)
        if out is None:
            hi = guess - 1
        else:
            lo, best = guess, out
            if rdtype == _A or (guess < hi and _wire(resp, qname, ttl, rdatas[:guess + 1], limit) is None):
                hi = guess
    while lo < hi:   # a binary search for the rest (PTR names of different lengths)
        mid = (lo + hi + 1) // 2
        out = _wire(resp, qname, ttl, rdatas[:mid], limit)
        if out is None:
            hi = mid - 1
        else:
            lo, best = mid, out
    assert best is not None
    return best
