"""The "health" gossip channel: every router's compact summary of its own links, so any router can show every
link of the mesh. Plugs into the one gossip layer (mesh/gossip.py) like IPAM and DNS.

Wire (JSON, version 1): ``{"v": 1, "s": [entry, ...]}``, an entry ``{"o": origin, "e": epoch, "n": seq,
"k": nickname, "c": containers, "l": [[peer, state, datapath, encrypted, rtt_ms, loss_permille, healthy], ...]}``.
(epoch, seq) orders an origin's entries: epoch is the origin's start time (ms), seq counts its changes.

Hostile input: the payload, entry and link counts and every field are bounded and type-checked; a bad message
is counted (``refused``) and dropped whole — the connection stays, as for DNS (the data path needs it). Only
peers in the mesh's topology are stored (bounded by its peer cap); an origin's own message always replaces
what others relayed for it (a relayed entry claiming a far-future epoch cannot freeze an origin out).
Routers forward only what changed a link's state (not RTT figures): those spread by anti-entropy alone.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from ..mesh.names import parse_peer_name

CHANNEL = "health"
WIRE_VERSION = 1
MAX_PAYLOAD = 1024 * 1024   # bytes of one message (a full state of a few hundred routers fits)
MAX_LINKS = 1024            # links in one origin's summary (the mesh's connection limit is below)
MAX_NICK = 64
MAX_CONTAINERS = 1_000_000
MAX_RTT_MS = 60_000
STATES = ("connected", "broken")   # broken: was connected (or tried), is not now
DATAPATHS = ("fastdp", "sleeve", "none")


@dataclass(frozen=True)
class Link:
    peer: str
    state: str
    datapath: str
    encrypted: bool
    rtt_ms: int | None
    loss_permille: int | None
    healthy: bool

    def wire(self) -> list:
        return [self.peer, self.state, self.datapath, self.encrypted, self.rtt_ms, self.loss_permille, self.healthy]

    def significant(self) -> tuple:
        return (self.peer, self.state, self.datapath, self.encrypted, self.healthy)


@dataclass(frozen=True)
class Summary:
    origin: str
    epoch: int
    seq: int
    nickname: str
    containers: int
    links: tuple[Link, ...]
    received: float = 0.0   # when it reached us (local monotonic time, not on the wire)

    @property
    def order(self) -> tuple[int, int]:
        return (self.epoch, self.seq)

    def wire(self) -> dict:
        return {"o": self.origin, "e": self.epoch, "n": self.seq, "k": self.nickname, "c": self.containers,
                "l": [lk.wire() for lk in self.links]}

    def significant(self) -> tuple:
        return (self.nickname, self.containers, tuple(lk.significant() for lk in self.links))


class BadSummary(ValueError):
    pass


def _int(v: object, lo: int, hi: int, what: str, nullable: bool = False) -> int | None:
    if v is None and nullable:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise BadSummary(f"{what} must be an integer in {lo}..{hi}")
    return v


def _name(v: object, what: str) -> str:
    if not isinstance(v, str):
        raise BadSummary(f"{what} must be a peer name")
    try:
        return parse_peer_name(v)
    except ValueError:
        raise BadSummary(f"{what} {v[:40]!r} is not a peer name") from None


def _link(v: object) -> Link:
    if not isinstance(v, list) or len(v) != 7:
        raise BadSummary("a link must be a list of 7 fields")
    peer, state, dp, enc, rtt, loss, healthy = v
    if state not in STATES or dp not in DATAPATHS or not isinstance(enc, bool) or not isinstance(healthy, bool):
        raise BadSummary("bad link state, datapath or flag")
    return Link(_name(peer, "link peer"), state, dp, enc, _int(rtt, 0, MAX_RTT_MS, "rtt_ms", True),
                _int(loss, 0, 1000, "loss", True), healthy)


def decode(payload: bytes, max_entries: int) -> list[Summary]:
    """Checked entries of a message (a message of a newer wire version: none). Raises BadSummary."""
    if len(payload) > MAX_PAYLOAD:
        raise BadSummary(f"message of {len(payload)} bytes over {MAX_PAYLOAD}")
    try:
        msg = json.loads(payload)
    except (ValueError, RecursionError):
        raise BadSummary("not JSON") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("v"), int):
        raise BadSummary("not a health summary")
    if msg["v"] != WIRE_VERSION:
        return []   # a newer router's format: not ours to judge
    entries = msg.get("s")
    if not isinstance(entries, list) or len(entries) > max_entries:
        raise BadSummary(f"'s' must be a list of at most {max_entries} entries")
    out = []
    for e in entries:
        if not isinstance(e, dict) or set(e) != {"o", "e", "n", "k", "c", "l"}:
            raise BadSummary("an entry must have exactly o, e, n, k, c, l")
        nick, links = e["k"], e["l"]
        if not isinstance(nick, str) or len(nick) > MAX_NICK or not nick.isprintable():
            raise BadSummary("bad nickname")
        if not isinstance(links, list) or len(links) > MAX_LINKS:
            raise BadSummary(f"'l' must be a list of at most {MAX_LINKS} links")
        out.append(Summary(_name(e["o"], "origin"), _int(e["e"], 0, 2**53, "epoch"),  # type: ignore[arg-type]
                           _int(e["n"], 0, 2**53, "seq"), nick,  # type: ignore[arg-type]
                           _int(e["c"], 0, MAX_CONTAINERS, "containers"),  # type: ignore[arg-type]
                           tuple(_link(x) for x in links)))
    return out


def encode(entries: list[Summary], max_bytes: int = MAX_PAYLOAD) -> bytes | None:
    """The message for `entries`, in order, leaving out whatever would push it over `max_bytes`."""
    parts: list[bytes] = []
    size = 20
    for s in entries:
        b = json.dumps(s.wire(), separators=(",", ":")).encode()
        if size + len(b) + 1 > max_bytes:
            continue
        parts.append(b)
        size += len(b) + 1
    if not parts:
        return None
    return b'{"v":1,"s":[' + b",".join(parts) + b"]}"


class SummaryStore:
    """Every origin's latest summary (ours included). A gossip channel (mesh/gossip.py GossipChannel)."""

    def __init__(self, ourname: str, epoch: int, max_peers: int) -> None:
        self.ourname = ourname
        self.epoch = epoch
        self.max_peers = max_peers
        self.seq = 0
        self.entries: dict[str, Summary] = {}
        self.known: frozenset[str] | None = None   # the topology's peers (None: not told yet)
        self.refused: Counter = Counter()          # reason -> messages or entries dropped
        self.last_refusal = ""

    # --- ours ---------------------------------------------------------------------------------
    def publish(self, nickname: str, containers: int, links: list[Link], now: float) -> Summary | None:
        """Our new summary. Returns it when something significant changed (to send to every neighbour
        now), else None (stored with fresh figures; anti-entropy carries it)."""
        old = self.entries.get(self.ourname)
        links_t = tuple(sorted(links, key=lambda lk: lk.peer))[:MAX_LINKS]
        if old is not None and old.links == links_t and old.nickname == nickname and old.containers == containers:
            return None
        self.seq += 1
        new = Summary(self.ourname, self.epoch, self.seq, nickname[:MAX_NICK], min(containers, MAX_CONTAINERS),
                      links_t, now)
        self.entries[self.ourname] = new
        return new if old is None or old.significant() != new.significant() else None

    # --- the gossip channel -------------------------------------------------------------------
    def full_state(self) -> bytes | None:
        ours = self.entries.get(self.ourname)
        others = sorted((s for n, s in self.entries.items() if n != self.ourname), key=lambda s: -s.received)
        return encode(([ours] if ours else []) + others)

    def merge(self, src: str, payload: bytes, now: float) -> bytes | None:
        try:
            entries = decode(payload, self.max_peers)
        except BadSummary as e:
            self.refused["malformed"] += 1
            self.last_refusal = f"from {src}: {e}"[:200]
            return None
        forward = []
        for s in entries:
            if s.origin == self.ourname:
                continue   # ours is authoritative here
            if self.known is not None and s.origin not in self.known:
                self.refused["unknown_origin"] += 1
                continue
            old = self.entries.get(s.origin)
            authoritative = s.origin == src   # the origin itself (authenticated by the mesh) always wins
            if old is not None and not (s.order > old.order or (authoritative and s.order != old.order)):
                continue
            if old is None and len(self.entries) >= self.max_peers:
                self.refused["full"] += 1
                continue
            new = Summary(s.origin, s.epoch, s.seq, s.nickname, s.containers, s.links, now)
            self.entries[s.origin] = new
            if old is None or old.significant() != new.significant():
                forward.append(new)
        return encode(forward) if forward else None

    def peers_changed(self, known: frozenset[str]) -> None:
        """The topology's peers: summaries of peers it forgot (gone long enough) are dropped."""
        self.known = known
        for n in [n for n in self.entries if n != self.ourname and n not in known]:
            del self.entries[n]
