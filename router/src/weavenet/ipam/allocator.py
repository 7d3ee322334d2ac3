"""One router's allocator: allocates from the space it owns, asks for more, donates, gossips the ring.

Sans I/O: methods take `now` and return actions for the adapter (see `weavenet.ipam` for the rules
and for what the adapter must do with each action).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import random
from dataclasses import dataclass

from ..mesh.channel import encode_json
from ..mesh.errors import ProtocolError
from ..mesh.names import parse_peer_name
from .init import ALONE, MAX_INIT_PEERS, IpamInit
from .paxos import Paxos, claims_from_wire, claims_to_wire
from .ring import MAX_RING_ENTRIES, Ring, ip
from .spec import DEFAULT_RANGE
from .wire import decode_message, peer_name, text, uint

REQUEST_RETRY = 2.0     # ask again (another donor if there is one) when a request got no space in this time
NOSPACE_HOLD = 10.0     # don't ask a peer that said it has no space again for this long
GOSSIP_INTERVAL = 10.0  # anti-entropy: the gossip layer sends the whole ring to a random neighbour this often
MAX_PEERS = 4096        # bound on per-peer tables between two topology updates
DONATE_EVERY = 2.0      # one donation (half our largest free run) per requester this often: a flood of requests
                        # cannot drain our space; an honest router asks at most once per REQUEST_RETRY per subnet
CLAIM_BURST = 16        # one-address donations (explicit claims) a requester may get at once, then as above
PROPOSE_RETRY = 3.0     # no agreement this long after our proposal: propose again (times 1..2, random: no duel)
CLAIMS_RESEND = 2.0     # while there is no ring, our consensus claims go to every reachable router this often

Net = ipaddress.IPv4Network


@dataclass(frozen=True)
class SendTo:
    """Send `data` to `peer`, routed over the mesh by name (it may not be a direct neighbour)."""
    peer: str
    data: bytes


@dataclass(frozen=True)
class GossipChanged:
    """The ring changed: send `encode_gossip()` to every neighbour (coalesce; only the latest matters)."""


@dataclass(frozen=True)
class Allocated:
    """A pending `allocate` completed."""
    container_id: str
    subnet: Net
    address: ipaddress.IPv4Interface


@dataclass(frozen=True)
class AllocFailed:
    """A pending `allocate` cannot complete: every address of the subnet is owned and used."""
    container_id: str
    subnet: Net
    reason: str


@dataclass(frozen=True)
class ClaimRefused:
    """An explicitly given address that another router owns is in use there: the container must not keep it."""
    container_id: str
    address: ipaddress.IPv4Address
    reason: str


IpamAction = SendTo | GossipChanged | Allocated | AllocFailed | ClaimRefused
GOSSIP = GossipChanged()


def _once(actions: list[IpamAction]) -> list[IpamAction]:
    """Each distinct action once (internal steps each say "gossip" when they change the ring)."""
    return list(dict.fromkeys(actions))


def usable(net: Net) -> tuple[int, int]:
    """[lo, hi) of the addresses a container may get in `net`: not its network or broadcast address."""
    lo, hi = int(net.network_address), int(net.broadcast_address) + 1
    return (lo + 1, hi - 1) if net.prefixlen <= 30 else (lo, hi)


class Allocator:
    def __init__(self, us: str, network: Net = DEFAULT_RANGE, default_subnet: Net | None = None, *,
                 init: IpamInit = ALONE, rng: random.Random | None = None) -> None:
        """`init`: how the ring is created (`--ipalloc-init`; see weavenet.ipam.init)."""
        self.us = parse_peer_name(us)
        self.network = network
        self.default_subnet = default_subnet or network
        if not self.default_subnet.subnet_of(network):
            raise ValueError(f"default subnet {self.default_subnet} is not inside the allocation range {network}")
        self.init = init
        self._rng = rng or random.Random()
        self.ring = Ring(network)
        self.paxos = Paxos(self.us, init.count, self._rng) if init.mode == "consensus" else None
        self._next_propose = 0.0
        self._claims_sent = -1e18
        self._ring_told: dict[str, float] = {}      # routers still agreeing that we sent our ring to -> when
        if init.mode == "seed":  # everyone given the same list builds this same ring, without a word
            self.ring.create(init.seeds, "seed/" + hashlib.sha256(",".join(init.seeds).encode()).hexdigest()[:16])
        self._addrs: dict[str, list[int]] = {}       # container -> its addresses (allocated or claimed)
        self._used: dict[int, str] = {}              # address -> container
        self._prefix: dict[int, int] = {}            # address -> prefix length it was given with
        self._pending: dict[tuple[str, Net], float] = {}
        self._connected: set[str] = set()
        self._reachable: set[str] = set()
        self._heard: dict[str, bool] = {}            # neighbour -> its `seed` flag, once we got its gossip
        self._asked: dict[Net, tuple[str | None, float]] = {}
        self._nospace: dict[str, tuple[float, tuple]] = {}  # peer -> when it said so, its entries then
        self._askers: set[str] = set()              # asked us for space before any ring existed
        self._wanted: dict[int, str] = {}           # claimed addresses that another router owns -> container
        self._wanted_asked: dict[int, float] = {}
        self._donated: dict[tuple[str, bool], tuple[float, float]] = {}  # (requester, claim?) -> (left, as of)
        self.refused: dict[str, int] = {}           # messages or entries refused, per reason

    # --- operations -------------------------------------------------------------------------------
    def allocate(self, container_id: str, subnet: Net | None, now: float
                 ) -> tuple[ipaddress.IPv4Interface | None, list[IpamAction]]:
        """The container's address in `subnet` (None: the default subnet); the same one if it has one.

        Returns (address, actions), or (None, actions) when space must come from another router first:
        an `Allocated` action follows later. Raises ValueError for a subnet outside the range or full."""
        net = self._subnet(subnet)
        have = self._find(container_id, net)
        if have is not None:
            return have, []
        actions: list[IpamAction] = self._agree(now, demand=True)  # (a router alone decides at once)
        got = self._take(container_id, net)
        if got is not None:
            return got, _once(actions + self._refresh_free())
        if self._full(net, now):
            raise ValueError(f"no free address in {net}: every address is in use")
        self._pending.setdefault((container_id, net), now)
        return None, _once(actions + self._request(net, now))

    def claim(self, container_id: str, address: ipaddress.IPv4Interface, now: float) -> tuple[str, list[IpamAction]]:
        """Record an explicitly given address. Returns "owned" (in our space: reserved), "outside" (not in
        the range: not IPAM's business) or "foreign": recorded, and we ask its owner to hand that one
        address over (so it cannot allocate it too); if the owner has it in use, `ClaimRefused` follows."""
        a = int(address.ip)
        if not self.ring.start <= a < self.ring.end:
            return "outside", []
        holder = self._used.get(a)
        if holder is not None and holder != container_id:
            raise ValueError(f"address {address.ip} is already in use by container {holder[:12]}")
        status = "owned" if self.ring.owner_at(a) == self.us else "foreign"
        if holder is None:
            self._record(container_id, a, address.network.prefixlen)
        if status == "foreign":
            self._wanted[a] = container_id
        return status, _once(self._refresh_free() + self._chase_claims(now))

    def release(self, container_id: str, address: ipaddress.IPv4Address | None = None, now: float = 0.0
                ) -> tuple[list[ipaddress.IPv4Address], list[IpamAction]]:
        """Free one address of the container, or all of them (and cancel its pending allocations)."""
        if address is None:
            for key in [k for k in self._pending if k[0] == container_id]:
                del self._pending[key]
        mine = self._addrs.get(container_id, [])
        gone = [a for a in mine if address is None or a == int(address)]
        for a in gone:
            mine.remove(a)
            del self._used[a], self._prefix[a]
        if not mine:
            self._addrs.pop(container_id, None)
        if not gone:
            return [], []
        return [ipaddress.IPv4Address(a) for a in gone], _once(self._refresh_free() + self._retry(now))

    def cancel(self, container_id: str, subnet: Net | None = None) -> None:
        """Give up waiting for a pending allocation (the caller's own timeout)."""
        for key in [k for k in self._pending if k[0] == container_id and subnet in (None, k[1])]:
            del self._pending[key]

    def rmpeer(self, peer: str, live: set[str], now: float) -> tuple[int, list[IpamAction]]:
        """Take over the space of a router gone for good; returns how many addresses we got."""
        peer = parse_peer_name(peer)
        if peer == self.us:
            raise ValueError("cannot rmpeer ourselves")
        if peer in live or peer in self._reachable:
            raise ValueError(f"peer {peer} is connected: stop it before removing it")
        if self.ring.empty:
            raise ValueError("no IPAM ring yet: nothing to take over")
        if not self.ring.owned_by(peer) and peer in self.ring.removed:
            raise ValueError(f"peer {peer} was already removed (by {self.ring.removed[peer]})")
        taken = self.ring.take_over(peer, self.us)
        return sum(hi - lo for lo, hi in taken), _once([GOSSIP, *self._refresh_free(), *self._retry(now)])

    # --- mesh events ------------------------------------------------------------------------------
    def peers_changed(self, connected: set[str], reachable: set[str], now: float) -> list[IpamAction]:
        """Call when the neighbours or reachable peers change. (New neighbours get our ring from the gossip
        layer, with `encode_gossip()`, which also sends it to a random neighbour now and then.)"""
        before = self._reachable
        self._connected, self._reachable = set(connected), set(reachable) | set(connected)
        self._reachable.discard(self.us)
        self._heard = {p: s for p, s in self._heard.items() if p in self._connected}
        # Per-peer tables keep only peers we can reach (they are re-learnt if a peer comes back).
        self._nospace = {p: v for p, v in self._nospace.items() if p in self._reachable}
        self._askers &= self._reachable
        self._donated = {k: v for k, v in self._donated.items() if k[0] in self._reachable}
        self._ring_told = {p: t for p, t in self._ring_told.items() if p in self._reachable}
        actions: list[IpamAction] = []
        if self.paxos is not None:
            self.paxos.prune(self._reachable)
            if self.ring.empty and self.paxos.ours.promise[0] and self._reachable - before:
                actions += self._send_claims(now)  # routers that just joined hear where the agreement is
        return _once(actions + self._retry(now))

    def receive(self, data: bytes, now: float, src: str | None = None) -> list[IpamAction]:
        """A message from another router's allocator (gossip or unicast alike). `src`: the sender the mesh
        authenticated (the adapter always passes it); a message claiming to be from anyone else is
        refused and counted in `refused`. Raises ProtocolError for malformed input, and its subclass
        RingConflict for a ring that must not be merged; nothing else escapes."""
        msg = decode_message(data, "IPAM")
        try:
            kind, sender = msg.get("t"), peer_name(msg["from"], "from")
            net = ipaddress.IPv4Network(text(msg["subnet"], "subnet", 18)) if kind in ("req", "nospace") else None
            flag = {"ring": "seed", "req": "ring"}.get(kind)  # type: ignore[arg-type]
            if flag is not None and not isinstance(msg.get(flag, False), bool):
                raise TypeError(f"{flag} must be a boolean")
            count = uint(msg["n"], "n", MAX_INIT_PEERS) if kind == "paxos" else 0
            if kind == "paxos" and count == 0:
                raise ValueError("n must be at least 1")
        except (KeyError, ValueError, TypeError) as e:
            raise ProtocolError(f"bad IPAM message: {e}") from None
        claims = claims_from_wire(msg.get("claims")) if kind == "paxos" else None
        if src is not None and sender != src:
            return self._refuse("forged_sender")  # one router speaking for another
        if sender == self.us:
            return self._refuse("our_name")
        if kind == "ring":
            return _once(self._on_ring(sender, msg, now))
        if claims is not None:
            return _once(self._on_claims(sender, claims, count, now))
        if kind == "req" and net is not None:
            return _once(self._on_request(sender, net, bool(msg.get("ring")), now))
        if kind == "nospace" and net is not None:
            # Its ring comes along: our hints about who has space may be older than its own.
            actions = self._merge(sender, msg)
            a = int(net.network_address)
            if net.prefixlen == 32 and a in self._wanted and self.ring.owner_at(a) == sender:
                cid = self._wanted.pop(a)
                reason = f"address {net.network_address} is in use on router {sender}"
                return _once(actions + [ClaimRefused(cid, net.network_address, reason)])
            if sender in self._reachable:  # (a table per peer: only peers that exist)
                self._nospace[sender] = (now, self._stamp(sender))
            if self._asked.get(net, (None,))[0] == sender:
                del self._asked[net]  # ask someone else now
            return _once(actions + self._retry(now))
        return []  # unknown kinds: a newer peer's, ignored

    def tick(self, now: float) -> list[IpamAction]:
        """Call about once a second: retries requests, and our consensus claims while there is no ring."""
        actions = self._retry(now)
        if self.paxos is not None and self.ring.empty and self.paxos.ours.promise[0] \
                and now - self._claims_sent >= CLAIMS_RESEND:
            actions += self._send_claims(now)  # (lost messages, routers that joined since)
        return _once(actions)

    @property
    def alone(self) -> bool:
        """May create the ring by itself (consensus=1): the gossip's `seed` flag, for the lower-name rule."""
        return self.paxos is not None and self.paxos.quorum == 1

    def encode_gossip(self) -> bytes:
        return encode_json({"t": "ring", "from": self.us, "seed": self.alone, "ring": self.ring.to_wire()})

    # --- reading ----------------------------------------------------------------------------------
    def lookup(self, container_id: str) -> list[ipaddress.IPv4Interface]:
        return [self._iface(a) for a in self._addrs.get(container_id, [])]

    def allocations(self) -> dict[str, list[str]]:
        return {c: [str(self._iface(a)) for a in addrs] for c, addrs in sorted(self._addrs.items())}

    @property
    def pending(self) -> list[tuple[str, Net]]:
        return sorted(self._pending, key=lambda k: self._pending[k])

    def owned_and_used(self) -> list[dict]:
        """Each peer's share of the range and how much of it is used (ours exact, others' from hints)."""
        total = self.network.num_addresses
        ulo, uhi = usable(self.network)
        share: dict[str, list[int]] = {}  # peer -> [owned, usable, free]
        for lo, hi, peer in self.ring.ranges():
            s = share.setdefault(peer, [0, 0, 0])
            s[0] += hi - lo
            s[1] += max(0, min(hi, uhi) - max(lo, ulo))
            s[2] += self.ring.entries[lo].free
        out = []
        for peer, (owned, n_usable, free) in sorted(share.items()):
            if peer == self.us:
                used = sum(1 for a in self._used if self.ring.owner_at(a) == peer)
            else:
                used = max(0, n_usable - free)
            out.append({"peer": peer, "addresses": owned, "percent": round(100 * owned / total, 1), "used": used})
        return out

    def status(self) -> dict:
        return {"range": str(self.network), "default_subnet": str(self.default_subnet),
                "ring": self.ring.ring_id, "init": str(self.init), "consensus": self.consensus_status(),
                "pending": len(self._pending), "allocated": len(self._used), "peers": self.owned_and_used()}

    def consensus_status(self) -> dict:
        """How far the creation of the ring got: achieved (there is a ring), waiting (asked for, the
        routers not agreed yet), deferred (nobody asked for an address yet) or observer."""
        if not self.ring.empty:
            state = "achieved"
        elif self.paxos is None:
            state = "observer" if self.init.mode == "observer" else "deferred"
        else:
            state = "waiting" if self.paxos.ours.promise[0] or self._demand() else "deferred"
        out: dict = {"state": state}
        if self.paxos is not None and state != "achieved":
            out.update(self.paxos.status())
        return out

    # --- persistence ------------------------------------------------------------------------------
    def to_json(self) -> str:
        d = {"format": 1, "name": self.us, "range": str(self.network), "ring": self.ring.to_wire(),
             "allocations": self.allocations()}
        if self.paxos is not None and self.ring.empty and self.paxos.ours.promise[0]:
            d["paxos"] = claims_to_wire(self.paxos.ours)  # an acceptor must not forget its promise
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str, us: str, network: Net = DEFAULT_RANGE, default_subnet: Net | None = None, *,
                  init: IpamInit = ALONE, rng: random.Random | None = None) -> Allocator:
        """Restore a router's space and allocations; ValueError if they belong to another name or range."""
        try:
            d = json.loads(text)
            name, rng_s = d["name"], d["range"]
            allocs = d["allocations"]
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(f"unreadable IPAM state: {e}") from None
        if parse_peer_name(name) != parse_peer_name(us):
            raise ValueError(f"IPAM state belongs to peer {name}, not {us}")
        if rng_s != str(network):
            raise ValueError(f"IPAM state is for range {rng_s}, not {network}: run weave reset to change the range")
        alloc = cls(us, network, default_subnet, init=init, rng=rng)
        try:
            ring = Ring.from_wire(d["ring"], network)
            if not ring.empty or init.mode != "seed":
                alloc.ring = ring
            if alloc.paxos is not None and ring.empty and d.get("paxos") is not None:
                alloc.paxos.restore(claims_from_wire(d["paxos"]))
        except ProtocolError as e:
            raise ValueError(f"unreadable IPAM state: {e}") from None
        for cid, addrs in allocs.items():
            for s in addrs:
                iface = ipaddress.IPv4Interface(s)
                a = int(iface.ip)
                alloc._record(cid, a, iface.network.prefixlen)
                if alloc.ring.start <= a < alloc.ring.end and alloc.ring.owner_at(a) != alloc.us:
                    alloc._wanted[a] = cid  # a foreign claim not handed over yet: keep asking its owner
        return alloc

    # --- internals --------------------------------------------------------------------------------
    def _subnet(self, subnet: Net | None) -> Net:
        net = subnet or self.default_subnet
        if not net.subnet_of(self.network):
            raise ValueError(f"subnet {net} is not inside the allocation range {self.network}")
        return net

    def _iface(self, a: int) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface((a, self._prefix[a]))

    def _find(self, container_id: str, net: Net) -> ipaddress.IPv4Interface | None:
        lo, hi = usable(net)
        for a in self._addrs.get(container_id, []):
            if lo <= a < hi:
                return self._iface(a)
        return None

    def _record(self, container_id: str, a: int, prefix: int) -> None:
        self._addrs.setdefault(container_id, []).append(a)
        self._used[a] = container_id
        self._prefix[a] = prefix

    def _owned_in(self, net: Net) -> list[tuple[int, int]]:
        """Our ranges clipped to the usable part of `net`, in address order."""
        ulo, uhi = usable(net)
        return [(max(lo, ulo), min(hi, uhi)) for lo, hi, o in self.ring.ranges()
                if o == self.us and max(lo, ulo) < min(hi, uhi)]

    def _take(self, container_id: str, net: Net) -> ipaddress.IPv4Interface | None:
        """The lowest free address we own in `net`, recorded for the container."""
        for lo, hi in self._owned_in(net):
            a = lo
            while a < hi and a in self._used:
                a += 1
            if a < hi:
                self._record(container_id, a, net.prefixlen)
                return self._iface(a)
        return None

    def _free_runs(self, lo: int, hi: int) -> list[tuple[int, int]]:
        runs, cur = [], lo
        for u in sorted(a for a in self._used if lo <= a < hi):
            if u > cur:
                runs.append((cur, u))
            cur = u + 1
        if cur < hi:
            runs.append((cur, hi))
        return runs

    def _full(self, net: Net, now: float) -> bool:
        """True when no address of `net` is free anywhere: ours exactly, others by their hints, or because
        they told us so (a hint counts the whole range, not one subnet)."""
        if self.ring.empty:
            return False
        ulo, uhi = usable(net)
        for lo, hi, owner in self.ring.ranges():
            a, b = max(lo, ulo), min(hi, uhi)
            if a >= b:
                continue
            if owner == self.us:
                if self._free_runs(a, b):
                    return False
            elif self.ring.entries[lo].free > 0 and not (owner in self._reachable and self._said_full(owner, now)):
                return False
        return True

    def _refresh_free(self) -> list[IpamAction]:
        """Owners publish their free counts in the ring, so others know whom to ask for space."""
        changed = False
        ulo, uhi = usable(self.network)
        for lo, hi in self.ring.owned_by(self.us):
            used = sum(1 for a in self._used if lo <= a < hi)
            changed |= self.ring.set_free(lo, max(0, min(hi, uhi) - max(lo, ulo)) - used)
        return [GOSSIP] if changed else []

    def _demand(self) -> bool:
        """Someone needs the ring: an allocation waits, a router asked us for space, or a claim waits."""
        return bool(self._pending or self._askers or self._wanted)

    def _may_propose(self) -> bool:
        """Propose only having heard every neighbour (none has a ring, or we would have adopted it); a
        router that may decide alone (consensus=1) leaves it to a neighbour alone too with a lower name."""
        if self.paxos is None or not self.ring.empty:
            return False
        if any(p not in self._heard for p in self._connected):
            return False
        return not (self.alone and any(s and p < self.us for p, s in self._heard.items()))

    def _agree(self, now: float, demand: bool) -> list[IpamAction]:
        """The consensus step (see weavenet.ipam.paxos): propose when the ring is needed (again after
        PROPOSE_RETRY without agreement), tell every reachable router our claims when they change, and
        create the ring once agreed."""
        px = self.paxos
        if px is None or not self.ring.empty:
            return []
        changed = px.think()
        if demand and now >= self._next_propose and self._may_propose():
            px.propose()
            changed = True
            self._next_propose = now + PROPOSE_RETRY * (1 + self._rng.random())
        actions = self._send_claims(now) if changed else []
        got = px.decided()
        if got is not None:
            actions += self._create(*got)
        return actions

    def _send_claims(self, now: float) -> list[IpamAction]:
        assert self.paxos is not None
        self._claims_sent = now
        body = encode_json({"t": "paxos", "from": self.us, "n": self.paxos.count,
                            "claims": claims_to_wire(self.paxos.ours)})
        return [SendTo(p, body) for p in sorted(self._reachable)]

    def _create(self, ballot: tuple[int, str], value) -> list[IpamAction]:
        """The agreed ring: the range split evenly among the routers the proposer had heard from."""
        self.ring.create(value.peers, value.ring_id(ballot))
        actions: list[IpamAction] = [GOSSIP, *self._refresh_free()]
        # Those who asked before there was a ring learn of it now rather than on their next retry.
        actions += [SendTo(p, self.encode_gossip()) for p in sorted(self._askers)]
        self._askers.clear()
        return actions

    def _request(self, net: Net, now: float) -> list[IpamAction]:
        last = self._asked.get(net)
        if last is not None and now - last[1] < REQUEST_RETRY:
            return []
        body = encode_json({"t": "req", "from": self.us, "subnet": str(net), "ring": not self.ring.empty})
        if self.ring.empty:  # we don't know who owns what: anyone with a ring answers with it
            self._asked[net] = (None, now)
            return [SendTo(p, body) for p in sorted(self._reachable)]
        donor = self._pick_donor(net, now, last[0] if last else None)
        if donor is None:
            return []  # no reachable owner of free space (a partition): wait, retried on tick and changes
        self._asked[net] = (donor, now)
        return [SendTo(donor, body)]

    def _owned_total(self) -> int:
        return sum(hi - lo for lo, hi in self.ring.owned_by(self.us))

    def _stamp(self, peer: str) -> tuple:
        return tuple((t, e.version) for t, e in self.ring.entries.items() if e.owner == peer)

    def _said_full(self, peer: str, now: float) -> bool:
        """It told us it had no space, recently, and its entries have not changed since."""
        said = self._nospace.get(peer)
        return said is not None and now - said[0] < NOSPACE_HOLD and said[1] == self._stamp(peer)

    def _pick_donor(self, net: Net, now: float, last: str | None) -> str | None:
        ulo, uhi = usable(net)
        score: dict[str, int] = {}
        for lo, hi, owner in self.ring.ranges():
            inter = min(hi, uhi) - max(lo, ulo)
            if inter > 0 and owner in self._reachable and not self._said_full(owner, now):
                score[owner] = score.get(owner, 0) + min(inter, self.ring.entries[lo].free)
        ranked = sorted((p for p, s in score.items() if s > 0), key=lambda p: (-score[p], p))
        if len(ranked) > 1 and ranked[0] == last:  # it did not answer in time: try the next one
            return ranked[1]
        return ranked[0] if ranked else None

    def _retry(self, now: float) -> list[IpamAction]:
        """Serve pending allocations from our space; ask for more where that is not enough."""
        actions: list[IpamAction] = []
        actions += self._agree(now, self._demand())
        actions += self._chase_claims(now)
        if len(self._asked) > len(self._pending):  # (a subnet nobody waits for any more: forget whom we asked)
            waiting = {net for _, net in self._pending}
            self._asked = {n: v for n, v in self._asked.items() if n in waiting}
        if not self._pending:
            return actions
        short: set[Net] = set()
        for cid, net in self.pending:
            got = self._take(cid, net)
            if got is not None:
                del self._pending[(cid, net)]
                actions.append(Allocated(cid, net, got))
            elif self._full(net, now):
                del self._pending[(cid, net)]
                actions.append(AllocFailed(cid, net, f"no free address in {net}: every address is in use"))
            else:
                short.add(net)
        actions += self._refresh_free()
        for net in sorted(short):
            actions += self._request(net, now)
        return actions

    def _chase_claims(self, now: float) -> list[IpamAction]:
        """Ask the owner of each foreign claim for that one address (a donation of a /32)."""
        actions: list[IpamAction] = []
        for a, cid in list(self._wanted.items()):
            owner = self.ring.owner_at(a)
            if self._used.get(a) != cid or owner == self.us:
                del self._wanted[a]  # released meanwhile, or ours now
                self._wanted_asked.pop(a, None)
            elif owner in self._reachable and now - self._wanted_asked.get(a, -1e18) >= REQUEST_RETRY:
                self._wanted_asked[a] = now
                actions.append(SendTo(owner, encode_json({"t": "req", "from": self.us, "subnet": f"{ip(a)}/32",
                                                          "ring": True})))
        return actions

    def _refuse(self, reason: str) -> list[IpamAction]:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        return []

    def _may_donate(self, to: str, net: Net, now: float) -> bool:
        """A token bucket per requester and kind: one donation of space (CLAIM_BURST one-address claims)
        at once, then one per DONATE_EVERY seconds."""
        claim = net.prefixlen == 32
        burst = CLAIM_BURST if claim else 1
        left, when = self._donated.get((to, claim), (burst, now))
        left = min(burst, left + max(0.0, now - when) / DONATE_EVERY)
        ok = left >= 1
        self._donated[(to, claim)] = (left - 1 if ok else left, now)
        return ok

    def _on_claims(self, sender: str, claims, count: int, now: float) -> list[IpamAction]:
        if sender not in self._reachable:  # (a table per peer: only peers that exist)
            return self._refuse("unknown_sender")
        if not self.ring.empty:  # it is still agreeing on what we already have: our ring ends that
            if now - self._ring_told.get(sender, -1e18) < REQUEST_RETRY:
                return []
            self._ring_told[sender] = now
            return [SendTo(sender, self.encode_gossip())]
        if self.paxos is None:
            return []  # an observer takes no part
        reason = self.paxos.update(sender, claims, count)
        if reason is not None:
            return self._refuse(reason)
        return self._retry(now)

    def _on_ring(self, sender: str, msg: dict, now: float) -> list[IpamAction]:
        if sender in self._heard or len(self._heard) < MAX_PEERS:  # pruned to neighbours on peers_changed
            self._heard[sender] = bool(msg.get("seed"))
        return self._merge(sender, msg) + self._retry(now)  # retry: a new neighbour may allow seeding

    def _merge(self, sender: str, msg: dict) -> list[IpamAction]:
        other = Ring.from_wire(msg.get("ring"), self.network)
        had_ring, owned = not self.ring.empty, self._owned_total()
        if not self.ring.merge(other, self.us, self.refused):
            return []
        # The first ring we hear of, or a donation from the owner we asked: if still short, ask at once
        # (not on every gossip from that owner, or we would ask again before its answer arrives).
        if not had_ring or self._owned_total() > owned:
            self._asked = {n: a for n, a in self._asked.items() if a[0] is not None and a[0] != sender}
        return [GOSSIP, *self._refresh_free()]

    def _on_request(self, sender: str, net: Net, they_have_ring: bool, now: float) -> list[IpamAction]:
        if not net.subnet_of(self.network):
            return self._refuse("foreign_subnet")
        if sender not in self._reachable:  # space goes only to routers the topology says exist
            return self._refuse("unknown_requester")
        if self.ring.empty:  # it gets the ring as soon as there is one (or asks again)
            self._askers.add(sender)
            return self._retry(now)
        if not they_have_ring:  # first they learn who owns what, then they ask the best donor
            return [SendTo(sender, self.encode_gossip())]
        if len(self.ring.entries) >= MAX_RING_ENTRIES - 2:  # a donation adds up to two tokens
            return self._refuse("ring_full")
        if not self._may_donate(sender, net, now):
            return self._refuse("donation_rate")  # no answer: it asks again (or another owner) later
        if not self._donate(sender, net):
            return [SendTo(sender, encode_json({"t": "nospace", "from": self.us, "subnet": str(net),
                                                "ring": self.ring.to_wire()}))]
        return [GOSSIP, *self._refresh_free(), SendTo(sender, self.encode_gossip())]

    def _donate(self, to: str, net: Net) -> bool:
        """Give `to` the upper half of our largest free run in `net` (all of it if it is one address)."""
        best: tuple[int, int] | None = None
        for lo, hi in self._owned_in(net):
            for s, e in self._free_runs(lo, hi):
                if best is None or e - s > best[1] - best[0]:
                    best = (s, e)
        if best is None:
            return False
        s, e = best
        self.ring.transfer(s + (e - s) // 2, e, to, self.us)
        return True
