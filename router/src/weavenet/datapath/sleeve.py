"""Sleeve datagrams: Ethernet frames carried in UDP between peers, several per datagram.

    clear header (16 B): magic, flags, hop sender's peer name (6 B), sequence number (8 B)
    body: origin peer (6 B), destination peer (6 B, all-ones = broadcast), body flags (1 B),
          then frames, each a 4-byte length and the frame (with its virtio-net header, if any)

With a password the body is sealed with ChaCha20-Poly1305 under the per-connection, per-direction
key of the hop that sent it; the clear header is the associated data and the sequence number the
nonce, so the receiver can drop forged datagrams and replays (see ``replay``). Relays re-seal per hop.
Between routers that both have it (the hello feature sleeve_aead = "aegis256"), AEGIS-256 instead
(F_AEGIS; about twice as fast with AES-NI), under a key derived from the connection's (``aegis_key``).

Datagrams never rely on IP fragmentation (they go out with DF): one larger than the connection's path
MTU allows is cut here into fragments, each a datagram of its own (F_FRAG: the clear header, then index
and count, then a slice of what follows the header; sealed datagrams are cut after sealing), and put
together by the receiver (``reassembly``) before it authenticates. F_PROBE datagrams are path-MTU probes
and their echoes (``pmtu``): the header's sequence number is the probe's nonce, then a kind byte (0 probe,
1 echo) and, in an echo, the size of the probe received.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from typing import NamedTuple

import nacl.bindings
from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_decrypt,
    crypto_aead_chacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError

# AEGIS-256 came with PyNaCl 1.6 (libsodium 1.0.19): a router without it does not offer it.
_aegis_seal = getattr(nacl.bindings, "crypto_aead_aegis256_encrypt", None)
_aegis_open = getattr(nacl.bindings, "crypto_aead_aegis256_decrypt", None)
AEGIS = "aegis256"                        # the hello feature sleeve_aead's value
AEGIS_AVAILABLE = _aegis_seal is not None and _aegis_open is not None

MAGIC = 0x57
F_ENCRYPTED = 0x01
F_FRAG = 0x02
F_PROBE = 0x04
F_AEGIS = 0x08        # with F_ENCRYPTED: sealed with AEGIS-256, not ChaCha20-Poly1305
KNOWN_FLAGS = F_ENCRYPTED | F_FRAG | F_PROBE | F_AEGIS
B_RELAY_ONLY = 0x01   # the next hop already has the frame (fast path); only forward it on
HEADER = struct.Struct(">BB6sQ")
BODY_HEAD = struct.Struct(">6s6sB")
FRAME_LEN = struct.Struct(">I")
BROADCAST = b"\xff" * 6
TAG = 16                                                  # Poly1305 tag
AEGIS_TAG = 32                                            # AEGIS-256's
OVERHEAD = HEADER.size + BODY_HEAD.size + FRAME_LEN.size + AEGIS_TAG
MAX_DATAGRAM = 65507
FRAG_HEAD = struct.Struct(">BB")                          # index, count
MAX_FRAGS = 255
PROBE, ECHO = 0, 1
ECHO_BODY = struct.Struct(">BH")                          # kind, size of the probe received


class SleeveError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # metric label: "malformed", "auth"


def name_bytes(name: str) -> bytes:
    return bytes.fromhex(name.replace(":", ""))


def name_str(b: bytes) -> str:
    return b.hex(":")


def _nonce(seq: int) -> bytes:
    return b"\x00\x00\x00\x00" + seq.to_bytes(8, "big")


def aegis_key(key: bytes) -> bytes:
    """The AEGIS-256 key of a connection direction: derived from its ChaCha20-Poly1305 key, so one key is
    never used with two ciphers."""
    return hashlib.blake2b(key, digest_size=32, person=b"weave-aegis256").digest()


def encode(sender: bytes, seq: int, origin: bytes, dest: bytes, frames: list[bytes], key: bytes | None,
           relay_only: bool = False, aegis: bool = False) -> bytes:
    """A datagram; with key sealed (aegis: AEGIS-256, key from ``aegis_key``; else ChaCha20-Poly1305).
    Built with one join of all the pieces: each extra concatenation would copy a 64 KiB segment again."""
    pieces = [BODY_HEAD.pack(origin, dest, B_RELAY_ONLY if relay_only else 0)]
    for f in frames:
        pieces += (FRAME_LEN.pack(len(f)), f)
    if key is None:
        return b"".join([HEADER.pack(MAGIC, 0, sender, seq), *pieces])
    body = b"".join(pieces)
    if aegis:
        header = HEADER.pack(MAGIC, F_ENCRYPTED | F_AEGIS, sender, seq)
        return header + _aegis_seal(body, header, seq.to_bytes(32, "big"), key)
    header = HEADER.pack(MAGIC, F_ENCRYPTED, sender, seq)
    return header + crypto_aead_chacha20poly1305_ietf_encrypt(body, header, _nonce(seq), key)


def peek(datagram: bytes) -> tuple[bytes, int, int]:
    """(hop sender, seq, flags) from the clear header, before any crypto."""
    if len(datagram) < HEADER.size + FRAG_HEAD.size:
        raise SleeveError("malformed")
    magic, flags, sender, seq = HEADER.unpack_from(datagram)
    if magic != MAGIC:
        raise SleeveError("malformed")
    return sender, seq, flags


def fragment(datagram: bytes, max_payload: int) -> list[bytes]:
    """Cut a datagram into fragments of at most max_payload bytes each (all but the last exactly that
    size, so they can go out as one UDP GSO send). The caller keeps max_payload sane (pmtu.FLOOR)."""
    head = bytearray(datagram[:HEADER.size])
    head[1] |= F_FRAG
    head = bytes(head)
    chunk = max_payload - HEADER.size - FRAG_HEAD.size
    body = memoryview(datagram)[HEADER.size:]
    count = -(-len(body) // chunk)
    if count > MAX_FRAGS:
        raise SleeveError("too_big")
    return [b"".join((head, FRAG_HEAD.pack(i, count), body[i * chunk:(i + 1) * chunk])) for i in range(count)]


def fragment_pieces(datagram: bytes, max_payload: int) -> tuple[list, int]:
    """The fragments of ``fragment`` as one list of pieces (each fragment's clear header, FRAG_HEAD and
    slice of the datagram, in order), and their count: a gather list for one UDP GSO ``sendmsg`` (the
    kernel lays them end to end, fragment i at i * max_payload), so no fragment is built in Python.
    Built from C callables over cached slices: no Python bytecode runs per fragment (46 fragments per
    64 KiB segment at a 1500-byte MTU)."""
    hs = HEADER.size
    chunk = max_payload - hs - FRAG_HEAD.size
    count = -(-(len(datagram) - hs) // chunk)
    if count > MAX_FRAGS:
        raise SleeveError("too_big")
    pieces: list = [bytes([datagram[0], datagram[1] | F_FRAG]) + datagram[2:hs]] * (3 * count)
    pieces[1::3] = _frag_heads(count)
    pieces[2::3] = map(memoryview(datagram).__getitem__, _cuts(hs, chunk, chunk, count))
    return pieces, count


def fragments_joined(datagram: bytes, max_payload: int) -> tuple[bytes, int]:
    """The fragments of ``fragment`` laid end to end in one buffer (fragment i at i * max_payload), and
    their count: the buffer the kernel builds from ``fragment_pieces`` (a receiver's GRO train; tests)."""
    pieces, count = fragment_pieces(datagram, max_payload)
    return b"".join(pieces), count


@functools.lru_cache(maxsize=1024)
def _cuts(first: int, stride: int, length: int, count: int) -> tuple[slice, ...]:
    """count slices of `length` bytes, `stride` apart from `first`: where fragments' payloads lie in a
    datagram or a GRO train. Cached: the same few sizes recur for every segment (one path MTU per link)."""
    return tuple(slice(first + j * stride, first + j * stride + length) for j in range(count))


_FRAG_HEADS: dict[int, tuple[bytes, ...]] = {}


def _frag_heads(count: int) -> tuple[bytes, ...]:
    """FRAG_HEAD of fragments 0..count-1 of count (at most MAX_FRAGS entries, built once each)."""
    heads = _FRAG_HEADS.get(count)
    if heads is None:
        heads = _FRAG_HEADS[count] = tuple(FRAG_HEAD.pack(i, count) for i in range(count))
    return heads


class Run(NamedTuple):
    """Consecutive fragments of one datagram found in a GRO train, as one fragment that stands for ``frags``
    of them: the first one's clear header and FRAG_HEAD, then their payloads end to end (``reassembly``)."""

    fragment: bytes
    frags: int


def split_train(train: bytes, seg: int) -> list[bytes | Run]:
    """A UDP GRO train (datagrams of one source, each `seg` bytes but the last) as datagrams, where every run
    of segments that is one whole fragmented datagram (fragments 0..count-1 in order, one header) comes out
    already put together, and a run that is only part of one (a datagram cut by the train's end: GRO
    carries at most 64 KiB, less than a 64 KiB segment's fragments) as one ``Run``. Anything else comes out
    segment by segment, for the caller to handle as any datagram. Nothing here is trusted: what comes out is
    checked (sender, source, authentication) like any other datagram.

    Why strided slices: train[o + j::seg] is byte j of every segment, so a run's headers are checked with
    HEADER.size + 2 slices in C instead of a Python loop over its fragments; the payloads are cut with map()."""
    hs, n = HEADER.size, len(train)
    out: list[bytes | Run] = []
    o = 0
    while o < n:
        m = _run_length(train, o, seg, n) if seg > hs + FRAG_HEAD.size else 0
        if m < 2:
            out.append(train[o:o + seg])
            o += seg
            continue
        index, count = train[o + hs], train[o + hs + 1]
        end = min(o + m * seg, n)
        # Slices of the train from o: the last may run past its end (a shorter last segment): cut short.
        fh = hs + FRAG_HEAD.size
        chunks = list(map(memoryview(train)[o:end].__getitem__, _cuts(fh, seg, seg - fh, m)))
        if index == 0 and m == count:
            out.append(b"".join([bytes([train[o], train[o + 1] & ~F_FRAG & 0xFF]), train[o + 2:o + hs], *chunks]))
        else:
            out.append(Run(b"".join([train[o:o + hs + FRAG_HEAD.size], *chunks]), m))
        o = end
    return out


def _run_length(train: bytes, o: int, seg: int, n: int) -> int:
    """How many segments from offset o are consecutive fragments of the datagram whose fragment starts at o
    (same clear header and count, indices counting up), if that is all the segments up to that datagram's
    last fragment or the train's end; else 0 (the caller goes segment by segment)."""
    hs = HEADER.size
    if o + hs + FRAG_HEAD.size > n or train[o] != MAGIC or not train[o + 1] & F_FRAG:
        return 0
    index, count = train[o + hs], train[o + hs + 1]
    if count < 2 or index >= count:
        return 0
    m = min(count - index, -(-(n - o) // seg))
    if o + (m - 1) * seg + hs + FRAG_HEAD.size > n:   # the train's last segment too short for a fragment head
        m -= 1
    if m < 2:
        return 0
    if _is_run(train, o, seg, m):
        return m
    lo, hi = 1, m - 1            # a lost fragment or another datagram in between: the longest run before it
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _is_run(train, o, seg, mid):
            lo = mid
        else:
            hi = mid - 1
    return lo if lo >= 2 else 0


def _is_run(train: bytes, o: int, seg: int, m: int) -> bool:
    hs = HEADER.size
    span = (m - 1) * seg + 1
    head = train[o:o + hs]
    for j in range(hs):
        if train[o + j:o + j + span:seg] != head[j:j + 1] * m:
            return False
    index, count = train[o + hs], train[o + hs + 1]
    return (train[o + hs:o + hs + span:seg] == bytes(range(index, index + m))
            and train[o + hs + 1:o + hs + 1 + span:seg] == bytes((count,)) * m)


def probe(sender: bytes, nonce: bytes, payload_size: int) -> bytes:
    """A path-MTU probe of exactly payload_size bytes of UDP payload."""
    dg = HEADER.pack(MAGIC, F_PROBE, sender, int.from_bytes(nonce, "big")) + bytes([PROBE])
    return dg + bytes(max(0, payload_size - len(dg)))


def echo(sender: bytes, nonce_seq: int, received: int) -> bytes:
    return HEADER.pack(MAGIC, F_PROBE, sender, nonce_seq) + ECHO_BODY.pack(ECHO, received)


def decode_body(datagram: bytes, seq: int, key: bytes | None) -> tuple[bytes, bytes, bool, list[memoryview]]:
    """(origin, dest, relay_only, frames: read-only views into the datagram or its plaintext). Raises
    SleeveError("auth") for a forged/garbled datagram, SleeveError("malformed") for one that cannot even be
    parsed; nothing else escapes."""
    return parse_body(open_body(datagram, seq, key))


def open_body(datagram: bytes, seq: int, key: bytes | None) -> memoryview:
    """The datagram's body, authenticated and opened if sealed (SleeveError "auth" or "malformed" if not)."""
    if key is None:
        return memoryview(datagram)[HEADER.size:]
    # Too short for body head + tag: libsodium's binding would raise ValueError, not CryptoError.
    if len(datagram) < HEADER.size + BODY_HEAD.size + (AEGIS_TAG if datagram[1] & F_AEGIS else TAG):
        raise SleeveError("malformed")
    try:
        if datagram[1] & F_AEGIS:   # the caller checked that this connection uses it (and key is its)
            if _aegis_open is None:
                raise SleeveError("auth")
            return memoryview(_aegis_open(bytes(datagram[HEADER.size:]), bytes(datagram[:HEADER.size]),
                                          seq.to_bytes(32, "big"), key))
        return memoryview(crypto_aead_chacha20poly1305_ietf_decrypt(
            bytes(datagram[HEADER.size:]), bytes(datagram[:HEADER.size]), _nonce(seq), key))
    except CryptoError:
        raise SleeveError("auth") from None
    except (ValueError, TypeError):  # any other complaint of the binding about its inputs
        raise SleeveError("malformed") from None


def parse_body(body: bytes | memoryview) -> tuple[bytes, bytes, bool, list[memoryview]]:
    """(origin, dest, relay_only, frames) of an opened body; SleeveError("malformed") if it does not parse."""
    body = memoryview(body)
    if len(body) < BODY_HEAD.size:
        raise SleeveError("malformed")
    origin, dest, bflags = BODY_HEAD.unpack_from(body)
    frames = []
    off, end = BODY_HEAD.size, len(body)
    while off < end:
        if off + 4 > end:
            raise SleeveError("malformed")
        (n,) = FRAME_LEN.unpack_from(body, off)
        off += 4
        if off + n > end:
            raise SleeveError("malformed")
        frames.append(body[off:off + n])   # a view, not a copy: the TAP write and a relay's join take it
        off += n
    return origin, dest, bool(bflags & B_RELAY_ONLY), frames
