"""What the router does with an IPv4 packet too big for the overlay MTU, as a kernel router would:
with DF, an ICMP "fragmentation needed" (type 3 code 4, RFC 1191) back to the sender, so its TCP
lowers its MSS; without DF, the packet cut into IP fragments. Pure functions on Ethernet frames (no
virtio-net header); a frame they cannot handle safely gives None (the caller drops and counts it).
"""

from __future__ import annotations

import struct

ETH = 14
ETH_IPV4 = b"\x08\x00"
DF, MF = 0x4000, 0x2000
IP_HEAD = struct.Struct(">BBHHHBBH4s4s")
ICMP_ERRORS = {3, 4, 5, 11, 12}     # never answer an ICMP error with one (RFC 1122 3.2.2)
QUOTE = 548                         # the reply stays within 576 bytes (IP 20 + ICMP 8 + quote)


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f">{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _ipv4(frame: bytes) -> tuple[int, int, int] | None:
    """(header length, total length, flags+offset) of a sane IPv4 frame, else None."""
    if len(frame) < ETH + 20 or frame[12:14] != ETH_IPV4 or frame[ETH] >> 4 != 4:
        return None
    ihl = (frame[ETH] & 0x0F) * 4
    total = int.from_bytes(frame[ETH + 2:ETH + 4], "big")
    if ihl < 20 or total < ihl or ETH + total > len(frame):
        return None
    return ihl, total, int.from_bytes(frame[ETH + 6:ETH + 8], "big")


def dont_fragment(frame: bytes) -> bool | None:
    """DF of an IPv4 frame; None if the frame is not (sane) IPv4."""
    ip = _ipv4(frame)
    return None if ip is None else bool(ip[2] & DF)


def frag_needed(frame: bytes, mtu: int) -> bytes | None:
    """The ICMP frame telling the sender of `frame` to send at most `mtu` bytes, or None when none
    may be sent (not IPv4, a non-first fragment, an ICMP error, a multicast/broadcast sender or destination)."""
    ip = _ipv4(frame)
    if ip is None or not 68 <= mtu <= 0xFFFF:
        return None
    ihl, total, frag = ip
    src, dst = frame[ETH + 12:ETH + 16], frame[ETH + 16:ETH + 20]
    proto = frame[ETH + 9]
    if frag & 0x1FFF or frame[0] & 1 or frame[6] & 1 or dst[0] >= 224 or src[0] >= 224 or src == b"\0\0\0\0":
        return None
    if proto == 1 and (len(frame) < ETH + ihl + 1 or frame[ETH + ihl] in ICMP_ERRORS):
        return None
    quote = frame[ETH:ETH + min(total, QUOTE)]
    icmp = bytearray(struct.pack(">BBHHH", 3, 4, 0, 0, mtu) + quote)
    icmp[2:4] = checksum(bytes(icmp)).to_bytes(2, "big")
    head = bytearray(IP_HEAD.pack(0x45, 0xC0, 20 + len(icmp), 0, 0, 64, 1, 0, dst, src))
    head[10:12] = checksum(bytes(head)).to_bytes(2, "big")
    return frame[6:12] + frame[0:6] + ETH_IPV4 + bytes(head) + bytes(icmp)


def fragment(frame: bytes, mtu: int) -> list[bytes] | None:
    """An IPv4 frame without DF cut into fragments of at most `mtu` IP bytes (offsets in 8-byte units,
    MF on all but the last unless the packet was itself a non-last fragment). None if it cannot be."""
    ip = _ipv4(frame)
    if ip is None or ip[2] & DF:
        return None
    ihl, total, frag = ip
    step = (mtu - ihl) // 8 * 8
    if step < 8:
        return None
    eth, head, payload = frame[:ETH], frame[ETH:ETH + ihl], frame[ETH + ihl:ETH + total]
    base, more = frag & 0x1FFF, frag & MF
    out = []
    for off in range(0, len(payload), step):
        part = payload[off:off + step]
        last = off + step >= len(payload)
        h = bytearray(head)
        h[2:4] = (ihl + len(part)).to_bytes(2, "big")
        h[6:8] = ((base + off // 8) | (more if last else MF)).to_bytes(2, "big")
        h[10:12] = b"\0\0"
        h[10:12] = checksum(bytes(h)).to_bytes(2, "big")
        out.append(eth + bytes(h) + part)
    return out


def gso_segment(frame: bytes, gso_size: int) -> int | None:
    """The IP size of each TCP segment a TSO super-frame (IPv4 or IPv6) will be cut into, or None."""
    if len(frame) < ETH + 40:
        return None
    etype = frame[12:14]
    if etype == ETH_IPV4 and frame[ETH] >> 4 == 4:
        ip_len = (frame[ETH] & 0x0F) * 4
    elif etype == b"\x86\xdd" and frame[ETH] >> 4 == 6 and frame[ETH + 6] == 6:
        ip_len = 40
    else:
        return None
    tcp = ETH + ip_len + 12
    if ip_len < 20 or len(frame) <= tcp:
        return None
    return ip_len + (frame[tcp] >> 4) * 4 + gso_size


def complete_checksum(frame: bytes, start: int, offset: int) -> bytes | None:
    """Fill in a transport checksum left partial (seeded with the pseudo-header sum) at start+offset
    of the frame, as the kernel's skb_checksum_help does; None if the offsets do not fit the frame."""
    at = start + offset
    if start < ETH or at + 2 > len(frame) or offset < 0:
        return None
    value = checksum(frame[start:]) or 0xFFFF
    return frame[:at] + value.to_bytes(2, "big") + frame[at + 2:]
