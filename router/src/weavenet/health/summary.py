"""The "health" gossip channel: every router's compact summary of its own links, so any router can show every
link of the mesh. Plugs into the one gossip layer (mesh/gossip.py) like IPAM and DNS.

Wire (JSON, version 2): ``{"v": 2, "s": [entry, ...]}``. A full entry ``{"o": origin, "e": epoch, "n": seq,
"r": rev, "k": nickname, "c": containers, "l": [[peer, state, datapath, encrypted, rtt_ms, loss_permille,
healthy], ...]}``; a delta entry has the same keys plus ``"b": base seq`` and ``"x": [removed peer, ...]``,
and "l" holds only the links that changed since seq b. epoch is the origin's start time (ms), seq counts its
significant changes (state, datapath, encryption, health, nickname, containers), rev every change, RTT
figures included: (epoch, seq, rev) orders an origin's entries. A version-1 message (full entries, rev 0) of
an older router is still read.

Cost: a router sends only deltas of its OWN significant changes to its neighbours (O(changed links) bytes
per neighbour, not its whole N-link summary); relays forward deltas they could apply. A delta whose base a
router does not hold is a gap (counted, dropped): the channel's anti-entropy repairs it. An anti-entropy
round sends a random neighbour a DIGEST first, ``{"v": 3, "q": [[origin, epoch, seq, rev], ...]}`` (O(N)
bytes), and the neighbour answers (to the asker only) with the whole entries the asker is behind on: every
one whose (epoch, seq) is behind, and at most FIGURES_PER_ANSWER of those only behind in rev (fresher RTT
figures, which no delta carries: they are refreshed every service.FIGURES_INTERVAL and reach everyone this
way, a few entries per round). A new neighbour still gets the full state once (an older router, which
ignores digests as a newer wire version, gets everything it needs that way and from deltas).

Hostile input: the payload, entry and link counts and every field are bounded and type-checked; a bad message
is counted (``refused``) and dropped whole — the connection stays, as for DNS (the data path needs it). An
entry merge would not use (one we hold already, or older) has only its header checked, not its links: a full
state of N entries we hold costs N headers, not N x N links. Only
peers in the mesh's topology are stored (bounded by its peer cap); an origin's own message always replaces
what others relayed for it (a relayed entry claiming a far-future epoch cannot freeze an origin out).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from ..mesh.names import parse_peer_name

CHANNEL = "health"
WIRE_VERSION = 2
READS = (1, 2)              # wire versions decoded (1: an older router's full entries)
DIGEST_VERSION = 3          # an anti-entropy digest (versions only): an older router ignores it
FIGURES_PER_ANSWER = 16     # entries behind only in their figures (rev) that one digest answer carries
MAX_PAYLOAD = 1024 * 1024   # bytes of one message (a full state of a few hundred routers fits)
MAX_LINKS = 1024            # links in one origin's summary (the mesh's connection limit is below)
MAX_NICK = 64
MAX_CONTAINERS = 1_000_000
MAX_RTT_MS = 60_000
MAX_COUNTER = 2**53
STATES = ("connected", "broken")   # broken: was connected (or tried), is not now
DATAPATHS = ("fastdp", "sleeve", "none")
_FULL_KEYS = frozenset({"o", "e", "n", "r", "k", "c", "l"})
_V1_KEYS = frozenset({"o", "e", "n", "k", "c", "l"})
_DELTA_KEYS = _FULL_KEYS | {"b", "x"}


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
    rev: int = 0

    @property
    def order(self) -> tuple[int, int, int]:
        return (self.epoch, self.seq, self.rev)

    def wire(self) -> dict:
        return {"o": self.origin, "e": self.epoch, "n": self.seq, "r": self.rev, "k": self.nickname,
                "c": self.containers, "l": [lk.wire() for lk in self.links]}

    def significant(self) -> tuple:
        return (self.nickname, self.containers, tuple(lk.significant() for lk in self.links))


@dataclass(frozen=True)
class Delta:
    """An origin's change from seq `base` to `seq`: the links added or changed, the peers removed."""
    origin: str
    epoch: int
    seq: int
    rev: int
    base: int
    nickname: str
    containers: int
    links: tuple[Link, ...]
    removed: tuple[str, ...]

    def wire(self) -> dict:
        return {"o": self.origin, "e": self.epoch, "n": self.seq, "r": self.rev, "b": self.base,
                "k": self.nickname, "c": self.containers, "l": [lk.wire() for lk in self.links],
                "x": list(self.removed)}

    def apply(self, old: Summary, now: float) -> Summary:
        """`old` (at seq `base`) with this change. Its rev stays `old`'s: the other links' figures are as
        old as that (a full entry of the same seq with fresher figures still replaces it)."""
        links = {lk.peer: lk for lk in old.links}
        for p in self.removed:
            links.pop(p, None)
        links.update((lk.peer, lk) for lk in self.links)
        if len(links) > MAX_LINKS:
            raise BadSummary(f"a delta leaves over {MAX_LINKS} links")
        return Summary(old.origin, old.epoch, self.seq, self.nickname, self.containers,
                       tuple(sorted(links.values(), key=lambda lk: lk.peer)), now, old.rev)


def diff(old: Summary, new: Summary) -> Delta:
    """The delta from `old` to `new` (same origin and epoch)."""
    before = {lk.peer: lk for lk in old.links}
    after = {lk.peer for lk in new.links}
    return Delta(new.origin, new.epoch, new.seq, new.rev, old.seq, new.nickname, new.containers,
                 tuple(lk for lk in new.links if before.get(lk.peer) != lk),
                 tuple(sorted(before.keys() - after)))


class BadSummary(ValueError):
    pass


def _int(v: object, lo: int, hi: int, what: str, nullable: bool = False) -> int | None:
    if v is None and nullable:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise BadSummary(f"{what} must be an integer in {lo}..{hi}")
    return v


def _count(v: object, what: str) -> int:
    return _int(v, 0, MAX_COUNTER, what)  # type: ignore[return-value]


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


def _entry(e: object, version: int) -> Summary | Delta:
    _keys(e, version)
    assert isinstance(e, dict)
    nick, links = e["k"], e["l"]
    if not isinstance(nick, str) or len(nick) > MAX_NICK or not nick.isprintable():
        raise BadSummary("bad nickname")
    if not isinstance(links, list) or len(links) > MAX_LINKS:
        raise BadSummary(f"'l' must be a list of at most {MAX_LINKS} links")
    origin, epoch, seq = _name(e["o"], "origin"), _count(e["e"], "epoch"), _count(e["n"], "seq")
    rev = _count(e["r"], "rev") if version > 1 else 0
    containers: int = _int(e["c"], 0, MAX_CONTAINERS, "containers")  # type: ignore[assignment]
    lks = tuple(_link(x) for x in links)
    if len({lk.peer for lk in lks}) != len(lks):
        raise BadSummary("a peer's link twice")
    if "b" not in e:
        return Summary(origin, epoch, seq, nick, containers, lks, 0.0, rev)
    base, removed = _count(e["b"], "base"), e["x"]
    if base >= seq:
        raise BadSummary("a delta's base must be before its seq")
    if not isinstance(removed, list) or len(removed) > MAX_LINKS:
        raise BadSummary(f"'x' must be a list of at most {MAX_LINKS} peers")
    return Delta(origin, epoch, seq, rev, base, nick, containers, lks,
                 tuple(_name(x, "removed peer") for x in removed))


def _parse(payload: bytes) -> dict:
    if len(payload) > MAX_PAYLOAD:
        raise BadSummary(f"message of {len(payload)} bytes over {MAX_PAYLOAD}")
    try:
        msg = json.loads(payload)
    except (ValueError, RecursionError):
        raise BadSummary("not JSON") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("v"), int) or isinstance(msg["v"], bool):
        raise BadSummary("not a health summary")
    return msg


def decode(payload: bytes, max_entries: int) -> list[Summary | Delta]:
    """Checked entries of a message (a message of a newer wire version, or a digest: none). Raises BadSummary."""
    return _entries(_parse(payload), max_entries)


def _entries(msg: dict, max_entries: int,
             need: Callable[[str, int, int, int, int | None], bool] | None = None) -> list[Summary | Delta]:
    """Every entry checked whole; with `need`, only those whose header (checked) it wants."""
    if msg["v"] not in READS:
        if msg["v"] > WIRE_VERSION:
            return []   # a newer router's format: not ours to judge
        raise BadSummary(f"wire version {msg['v']} unknown")
    entries = msg.get("s")
    if not isinstance(entries, list) or len(entries) > max_entries:
        raise BadSummary(f"'s' must be a list of at most {max_entries} entries")
    if need is None:
        return [_entry(e, msg["v"]) for e in entries]
    return [_entry(e, msg["v"]) for e in entries if need(*_header(e, msg["v"]))]


def _header(e: object, version: int) -> tuple[str, int, int, int, int | None]:
    """(origin, epoch, seq, rev, base or None) of an entry, checked with its keys; its links not looked at."""
    _keys(e, version)
    assert isinstance(e, dict)
    rev = _count(e["r"], "rev") if version > 1 else 0
    return (_name(e["o"], "origin"), _count(e["e"], "epoch"), _count(e["n"], "seq"), rev,
            _count(e["b"], "base") if "b" in e else None)


def _keys(e: object, version: int) -> None:
    keys = set(e) if isinstance(e, dict) else None
    if version == 1 and keys != _V1_KEYS:
        raise BadSummary("an entry must have exactly o, e, n, k, c, l")
    if version > 1 and keys not in (_FULL_KEYS, _DELTA_KEYS):
        raise BadSummary("an entry must have exactly o, e, n, r, k, c, l (and b, x for a delta)")


def decode_digest(payload: bytes, max_entries: int) -> dict[str, tuple[int, int, int]] | None:
    """origin -> (epoch, seq, rev) of a digest message; None for any other message. Raises BadSummary."""
    return _digest(_parse(payload), max_entries)


def _digest(msg: dict, max_entries: int) -> dict[str, tuple[int, int, int]] | None:
    if msg["v"] != DIGEST_VERSION:
        return None
    if set(msg) != {"v", "q"} or not isinstance(msg["q"], list) or len(msg["q"]) > max_entries:
        raise BadSummary(f"a digest is {{v, q}} with at most {max_entries} versions")
    out: dict[str, tuple[int, int, int]] = {}
    for item in msg["q"]:
        if not isinstance(item, list) or len(item) != 4:
            raise BadSummary("a digest item is [origin, epoch, seq, rev]")
        origin = _name(item[0], "digest origin")
        if origin in out:
            raise BadSummary("an origin twice in a digest")
        out[origin] = (_count(item[1], "epoch"), _count(item[2], "seq"), _count(item[3], "rev"))
    return out


def encode_digest(entries: list[Summary]) -> bytes:
    return json.dumps({"v": DIGEST_VERSION, "q": [[s.origin, s.epoch, s.seq, s.rev] for s in entries]},
                      separators=(",", ":")).encode()


def wire_bytes(entry: Summary | Delta) -> bytes:
    return json.dumps(entry.wire(), separators=(",", ":")).encode()


def encode(entries: list[Summary] | list[Delta] | list[Summary | Delta], max_bytes: int = MAX_PAYLOAD,
           wire: Callable[[Summary | Delta], bytes] = wire_bytes) -> bytes | None:
    """The message for `entries`, in order, leaving out whatever would push it over `max_bytes`."""
    parts: list[bytes] = []
    size = 20
    for s in entries:
        b = wire(s)
        if size + len(b) + 1 > max_bytes:
            continue
        parts.append(b)
        size += len(b) + 1
    if not parts:
        return None
    return b'{"v":2,"s":[' + b",".join(parts) + b"]}"


class SummaryStore:
    """Every origin's latest summary (ours included). A gossip channel (mesh/gossip.py GossipChannel)."""

    def __init__(self, ourname: str, epoch: int, max_peers: int) -> None:
        self.ourname = ourname
        self.epoch = epoch
        self.max_peers = max_peers
        self.seq = 0
        self.rev = 0
        self.entries: dict[str, Summary] = {}
        self.known: frozenset[str] | None = None   # the topology's peers (None: not told yet)
        self.refused: Counter = Counter()          # reason -> messages or entries dropped
        self.gaps = 0                              # deltas whose base we did not hold (anti-entropy repairs)
        self.last_refusal = ""
        # The gossip layer's send handle (answers to one router's digest); None: digests are not answered.
        self.send: Callable[[bytes, str | None], None] | None = None
        self.digests_answered = 0
        # origin -> (entry, its encoding): a full state goes to every new neighbour, an entry is encoded once
        self._wire: dict[str, tuple[Summary, bytes]] = {}

    # --- ours ---------------------------------------------------------------------------------
    def publish(self, nickname: str, containers: int, links: list[Link], now: float) -> Delta | Summary | None:
        """Our new summary. Returns what to send to every neighbour now when something significant changed:
        the delta from our previous summary (the first one whole), else None (stored with fresh figures
        under a new rev; anti-entropy carries it)."""
        old = self.entries.get(self.ourname)
        links_t = tuple(sorted(links, key=lambda lk: lk.peer))[:MAX_LINKS]
        nickname, containers = nickname[:MAX_NICK], min(containers, MAX_CONTAINERS)
        if old is not None and old.links == links_t and old.nickname == nickname and old.containers == containers:
            return None
        self.rev += 1
        candidate = Summary(self.ourname, self.epoch, self.seq + 1, nickname, containers, links_t, now, self.rev)
        if old is not None and old.significant() == candidate.significant():
            self.entries[self.ourname] = Summary(self.ourname, self.epoch, self.seq, nickname, containers,
                                                 links_t, now, self.rev)
            return None
        self.seq += 1
        self.entries[self.ourname] = candidate
        return candidate if old is None else diff(old, candidate)

    # --- the gossip channel -------------------------------------------------------------------
    def full_state(self) -> bytes | None:
        ours = self.entries.get(self.ourname)
        others = sorted((s for n, s in self.entries.items() if n != self.ourname), key=lambda s: -s.received)
        return encode(([ours] if ours else []) + others, wire=self._wire_of)

    def _wire_of(self, s: Summary | Delta) -> bytes:
        if not isinstance(s, Summary):
            return wire_bytes(s)
        hit = self._wire.get(s.origin)
        if hit is not None and hit[0] is s:
            return hit[1]
        b = wire_bytes(s)
        self._wire[s.origin] = (s, b)
        return b

    def digest(self) -> bytes | None:
        """An anti-entropy round's message: the versions we hold (a neighbour answers what we lack)."""
        return encode_digest(list(self.entries.values())) if self.entries else None

    def answer(self, theirs: dict[str, tuple[int, int, int]]) -> bytes | None:
        """Whole entries a digest's sender is behind on: all those behind in (epoch, seq), and the
        FIGURES_PER_ANSWER oldest-known of those behind only in rev (figures)."""
        behind, figures = [], []
        for n, s in self.entries.items():
            t = theirs.get(n)
            if t is None or t[:2] < s.order[:2]:
                behind.append(s)
            elif t < s.order:
                figures.append(s)
        figures.sort(key=lambda s: s.received)
        out = behind + figures[:FIGURES_PER_ANSWER]
        return encode(out, wire=self._wire_of) if out else None

    def merge(self, src: str, payload: bytes, now: float) -> bytes | None:
        try:
            msg = _parse(payload)
            theirs = _digest(msg, self.max_peers)
            if theirs is not None:
                reply = self.answer(theirs)
                if reply is not None and self.send is not None:
                    self.digests_answered += 1
                    self.send(reply, src)
                return None
            entries = _entries(msg, self.max_peers, lambda *h: self._needed(src, *h))
        except BadSummary as e:
            self.refused["malformed"] += 1
            self.last_refusal = f"from {src}: {e}"[:200]
            return None
        forward: list[Summary | Delta] = []
        for s in entries:
            if s.origin == self.ourname:
                continue   # ours is authoritative here
            if self.known is not None and s.origin not in self.known:
                self.refused["unknown_origin"] += 1
                continue
            old = self.entries.get(s.origin)
            if isinstance(s, Delta):
                out = self._merge_delta(s, old, now)
                if out is not None:
                    forward.append(out)
                continue
            authoritative = s.origin == src   # the origin itself (authenticated by the mesh) always wins
            if old is not None and not (s.order > old.order or (authoritative and s.order != old.order)):
                continue
            if old is None and len(self.entries) >= self.max_peers:
                self.refused["full"] += 1
                continue
            new = Summary(s.origin, s.epoch, s.seq, s.nickname, s.containers, s.links, now, s.rev)
            self.entries[s.origin] = new
            if old is None or old.significant() != new.significant():
                # Passed on as a delta where the neighbours can hold its base (O(changed links) bytes).
                forward.append(new if old is None or old.epoch != new.epoch or old.seq >= new.seq
                               else diff(old, new))
        return encode(forward) if forward else None

    def _needed(self, src: str, origin: str, epoch: int, seq: int, rev: int, base: int | None) -> bool:
        """Whether merge would look at an entry with this header: only those are parsed link by link. A new
        neighbour's full state and the copies of a change relayed by several neighbours are mostly entries
        we hold already (parsing each one's N links made a join cost O(N^3) across a full mesh)."""
        if origin == self.ourname:
            return False
        old = self.entries.get(origin)
        if old is None:
            return True
        if base is not None:
            return not (old.epoch == epoch and old.seq >= seq)
        order = (epoch, seq, rev)
        return order > old.order or (origin == src and order != old.order)

    def _merge_delta(self, d: Delta, old: Summary | None, now: float) -> Delta | None:
        if old is not None and old.epoch == d.epoch and old.seq >= d.seq:
            return None   # already have it (or newer)
        if old is None or old.epoch != d.epoch or old.seq != d.base:
            self.gaps += 1   # we missed a change: anti-entropy's full state repairs it
            return None
        try:
            self.entries[d.origin] = d.apply(old, now)
        except BadSummary as e:
            self.refused["malformed"] += 1
            self.last_refusal = f"delta of {d.origin}: {e}"[:200]
            return None
        return d

    def peers_changed(self, known: frozenset[str]) -> None:
        """The topology's peers: summaries of peers it forgot (gone long enough) are dropped."""
        self.known = known
        for n in [n for n in self.entries if n != self.ourname and n not in known]:
            del self.entries[n]
            self._wire.pop(n, None)
