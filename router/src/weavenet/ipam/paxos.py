"""Agreement on who creates the IPAM ring: single-decree Paxos over gossip, sans I/O (after Weave's ipam/paxos).

Every router of `consensus=N` is an acceptor, and a proposer when it needs the ring. Each router keeps the
*claims* it has heard from every other router (its promise, the proposal it accepted and that proposal's
value) and sends its own claims, whole, to every router it can reach whenever they change. A claim about a
router is only ever taken from that router itself (the mesh authenticates the sender), never relayed.

- Prepare: a proposer promises a new ballot (round above every round heard, ties broken by name).
- Promise: every acceptor copies the highest ballot it has heard into its own promise.
- Accept request: a proposer whose ballot a quorum (N//2+1) promised accepts it, with the value accepted at
  the highest ballot among those promises, or else its own pick (the routers it heard from, and a nonce).
- Accepted: an acceptor whose promise is a ballot its proposer has accepted (the proposer's own claim says
  so) accepts it too.
- Decided: a quorum of routers accepted the same ballot with the value its proposer accepted.

Two groups that cannot talk cannot both gather N//2+1, so they never decide two values; every router that
learns the decision builds the same ring from it. Acceptors must not forget a promise: the allocator
persists `ours` with its state.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from ..mesh.errors import ProtocolError
from .init import MAX_INIT_PEERS
from .wire import MAX_INT, peer_name, uint

Ballot = tuple[int, str]   # (round, proposer); round 0 = none
NO_BALLOT: Ballot = (0, "")
MAX_ROUND_JUMP = 1 << 20   # a ballot may be this far above every round we know: honest proposers add 1 (one
                           # proposal per 3-6 s: weeks without a quorum), a forged huge one would block every later one
MAX_NONCE = (1 << 32) - 1


@dataclass(frozen=True)
class Value:
    """What is agreed: the routers that share the range at first, and a nonce (two decisions taken apart,
    e.g. by a router reset and launched again alone, make two different rings, which then refuse to merge)."""
    peers: tuple[str, ...]
    nonce: int

    def ring_id(self, ballot: Ballot) -> str:
        return f"{ballot[1]}@{ballot[0]}/{self.nonce:08x}"


@dataclass(frozen=True)
class Claims:
    promise: Ballot = NO_BALLOT
    accepted: Ballot = NO_BALLOT
    value: Value | None = None   # the value of `accepted`


# --- wire ---------------------------------------------------------------------------------------------

def _ballot_to_wire(b: Ballot) -> list | None:
    return [b[0], b[1]] if b[0] else None


def _ballot(x: object, what: str) -> Ballot:
    if x is None:
        return NO_BALLOT
    if not isinstance(x, list) or len(x) != 2:
        raise TypeError(f"{what} must be [round, proposer] or null")
    rnd = uint(x[0], f"{what} round", MAX_INT)
    if rnd == 0:
        raise ValueError(f"{what} round must be at least 1")
    return rnd, peer_name(x[1], f"{what} proposer")


def claims_to_wire(c: Claims) -> dict:
    value = None if c.value is None else {"peers": list(c.value.peers), "nonce": c.value.nonce}
    return {"promise": _ballot_to_wire(c.promise), "accepted": _ballot_to_wire(c.accepted), "value": value}


def claims_from_wire(x: object) -> Claims:
    """One router's claims; ProtocolError for anything malformed (and nothing else escapes)."""
    try:
        if not isinstance(x, dict):
            raise TypeError("claims must be an object")
        promise, accepted = _ballot(x.get("promise"), "promise"), _ballot(x.get("accepted"), "accepted")
        if accepted > promise:
            raise ValueError("accepted a ballot above its promise")
        v = x.get("value")
        if (v is None) != (accepted == NO_BALLOT):
            raise ValueError("a value goes with an accepted ballot, and only with one")
        value = None
        if v is not None:
            if not isinstance(v, dict) or not isinstance(v.get("peers"), list):
                raise TypeError("value must be {peers: [...], nonce: n}")
            peers = v["peers"]
            if not 1 <= len(peers) <= MAX_INIT_PEERS:
                raise ValueError(f"value must name 1..{MAX_INIT_PEERS} peers")
            names = tuple(peer_name(p, "value peer") for p in peers)
            if any(a >= b for a, b in zip(names, names[1:], strict=False)):
                raise ValueError("value peers must be sorted and distinct")
            value = Value(names, uint(v.get("nonce"), "nonce", MAX_NONCE))
    except (ValueError, TypeError) as e:
        raise ProtocolError(f"bad IPAM consensus claims: {str(e)[:200]}") from None
    return Claims(promise, accepted, value)


# --- the node -----------------------------------------------------------------------------------------

class Paxos:
    def __init__(self, us: str, count: int, rng: random.Random | None = None) -> None:
        """`count`: the N of consensus=N (the quorum is N//2+1)."""
        self.us = us
        self.count = count
        self._rng = rng or random.Random()
        self.knows: dict[str, Claims] = {us: Claims()}
        self.counts: dict[str, int] = {}            # each router's consensus=N, as it said (shown on mismatch)
        self._proposed: dict[Ballot, Value] = {}    # the value each proposer itself accepted at its ballot

    @property
    def quorum(self) -> int:
        """N//2+1 of the largest N among ours and those of the routers we hear: launched without
        --ipalloc-init, routers of a chain each count only the peers they were given (the first one 1, alone),
        and a larger N makes every quorum overlap every other."""
        return max([self.count, *self.counts.values()]) // 2 + 1

    @property
    def ours(self) -> Claims:
        return self.knows[self.us]

    def restore(self, claims: Claims) -> None:
        """Our own claims from the persisted state (a promise must survive a restart)."""
        self.knows[self.us] = claims
        if claims.accepted[1] == self.us and claims.value is not None:
            self._proposed[claims.accepted] = claims.value

    def max_round(self) -> int:
        return max(max(c.promise[0], c.accepted[0]) for c in self.knows.values())

    def update(self, src: str, claims: Claims, count: int) -> str | None:
        """Merge the claims `src` sent about itself (validated, `src` authenticated). Returns the reason
        they were refused, or None. Claims only grow: an older message (reordered) changes nothing."""
        if src == self.us:
            return "our_name"
        if claims.promise[0] > self.max_round() + MAX_ROUND_JUMP:
            return "round_jump"  # would make every later ballot overflow or stall the agreement
        if claims.accepted[1] == src and claims.value is not None:
            known = self._proposed.get(claims.accepted)
            if known is not None and known != claims.value:
                return "value_changed"  # a proposer accepts one value per ballot
        old = self.knows.get(src, Claims())
        new = replace(old, promise=max(old.promise, claims.promise))
        if claims.accepted > old.accepted:
            new = replace(new, accepted=claims.accepted, value=claims.value)
            if claims.accepted[1] == src and claims.value is not None:
                self._proposed[claims.accepted] = claims.value
        self.knows[src] = new
        self.counts[src] = count
        return None

    def prune(self, reachable: set[str]) -> None:
        """Forget routers we cannot reach (bounds the tables; safe: acceptors keep their own claims)."""
        self.knows = {p: c for p, c in self.knows.items() if p == self.us or p in reachable}
        self.counts = {p: n for p, n in self.counts.items() if p in self.knows}
        live = {c.accepted for c in self.knows.values()} | {c.promise for c in self.knows.values()}
        self._proposed = {b: v for b, v in self._proposed.items() if b in live}

    def propose(self) -> None:
        """Prepare: a ballot above every round heard."""
        self.knows[self.us] = replace(self.ours, promise=(self.max_round() + 1, self.us))
        self.think()

    def think(self) -> bool:
        """The Paxos steps this router can take on what it knows; True if its claims changed."""
        ours = self.ours
        ours = replace(ours, promise=max([ours.promise, *(c.promise for c in self.knows.values())]))
        if ours.promise[1] == self.us and ours.accepted != ours.promise:   # our ballot is the highest known
            promised = [c for c in self.knows.values() if c.promise == ours.promise]
            if len(promised) >= self.quorum:
                best = max(promised, key=lambda c: c.accepted)
                value = best.value if best.value is not None else self._pick()
                ours = replace(ours, accepted=ours.promise, value=value)
                self._proposed[ours.promise] = value
        proposer = self.knows.get(ours.promise[1])
        if (ours.accepted != ours.promise and proposer is not None and proposer.accepted == ours.promise
                and proposer.value is not None):
            ours = replace(ours, accepted=ours.promise, value=proposer.value)
        changed = ours != self.ours
        self.knows[self.us] = ours
        return changed

    def _pick(self) -> Value:
        names = tuple(sorted(self.knows))[:MAX_INIT_PEERS]
        return Value(names, self._rng.getrandbits(32))

    def decided(self) -> tuple[Ballot, Value] | None:
        """The agreed (ballot, value) once a quorum accepted one ballot with its proposer's value."""
        tally: dict[Ballot, int] = {}
        for c in self.knows.values():
            if c.value is not None and self._proposed.get(c.accepted) == c.value:
                tally[c.accepted] = n = tally.get(c.accepted, 0) + 1
                if n >= self.quorum:
                    return c.accepted, c.value
        return None

    def status(self) -> dict:
        ours = self.ours
        promised = sum(1 for c in self.knows.values() if ours.promise[0] and c.promise == ours.promise)
        mismatch = sorted(p for p, n in self.counts.items() if n != self.count)
        return {"quorum": self.quorum, "heard": sorted(p for p in self.knows if p != self.us),
                "round": ours.promise[0], "promised": promised, "count_differs": mismatch}
