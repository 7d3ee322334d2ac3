"""`--ipalloc-init`: how the IPAM ring comes to exist (Weave's modes).

- ``consensus=N``: the N routers of the mesh agree (Paxos among a quorum of N//2+1) on who shares the
  range; the first request for an address starts it. Two groups that cannot talk cannot both reach a
  quorum, so they never create two rings. Default: the number of peers given at launch plus this router
  (a router launched alone: consensus=1, it creates the ring by itself).
- ``seed=PEER,...``: the named routers own the range from the start, split evenly; every router given the
  same list builds the same ring by itself, with no messages.
- ``observer``: never creates the ring nor takes part in the agreement; gets space from the others.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..mesh.names import parse_peer_name

MAX_INIT_PEERS = 1024  # routers a consensus count or a seed list may name (the ring is split among them)


@dataclass(frozen=True)
class IpamInit:
    mode: str                       # "consensus" | "seed" | "observer"
    count: int = 0                  # consensus: the number of routers that take part
    seeds: tuple[str, ...] = ()     # seed: the owners of the initial ring, sorted

    @property
    def quorum(self) -> int:
        """Routers that must agree before the ring is created (consensus only)."""
        return self.count // 2 + 1

    def __str__(self) -> str:
        if self.mode == "consensus":
            return f"consensus={self.count}"
        if self.mode == "seed":
            return "seed=" + ",".join(self.seeds)
        return "observer"


def consensus(count: int) -> IpamInit:
    return IpamInit("consensus", count)


ALONE = consensus(1)
OBSERVER = IpamInit("observer")


def default_init(n_peers: int) -> IpamInit:
    """Weave's default: consensus among the peers given at launch and this router."""
    return consensus(min(n_peers + 1, MAX_INIT_PEERS))


def parse_init(text: str) -> IpamInit:
    """`consensus=N`, `seed=PEER,...` (peer names) or `observer`; ValueError with one line otherwise."""
    if not isinstance(text, str):
        raise ValueError("expected consensus=N, seed=PEER,... or observer")
    mode, _, arg = text.strip().partition("=")
    if mode == "observer" and not arg:
        return IpamInit("observer")
    if mode == "consensus":
        if not arg.isdigit() or not 1 <= int(arg) <= MAX_INIT_PEERS:
            raise ValueError(f"consensus=N needs a number of routers in 1..{MAX_INIT_PEERS}")
        return consensus(int(arg))
    if mode == "seed":
        names = [n for n in arg.split(",") if n.strip()]
        if not names or len(names) > MAX_INIT_PEERS:
            raise ValueError(f"seed= needs 1..{MAX_INIT_PEERS} peer names, comma-separated")
        seeds = tuple(sorted({parse_peer_name(n) for n in names}))
        return IpamInit("seed", len(seeds), seeds)
    raise ValueError("expected consensus=N, seed=PEER,... or observer")
