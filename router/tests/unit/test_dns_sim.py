"""Record stores gossiping deltas along a chain, as the adapter would: names and removals reach everyone."""

import random

from weavenet.nameserver import RecordStore

NAMES = [f"02:00:00:00:02:{i:02x}" for i in range(1, 6)]


class Chain:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.stores = [RecordStore(n, 100 + i) for i, n in enumerate(NAMES)]
        self.queue: list[tuple[int, int, bytes]] = []

    def gossip(self, i: int, changed) -> None:
        if changed:
            data = self.stores[i].encode_gossip(changed)
            self.queue += [(i, j, data) for j in (i - 1, i + 1) if 0 <= j < len(self.stores)]

    def settle(self) -> None:
        while self.queue:
            self.rng.shuffle(self.queue)
            src, dst, data = self.queue.pop()
            self.gossip(dst, self.stores[dst].merge(data, 0.0))


def test_names_and_removals_reach_the_other_end_of_a_chain():
    c = Chain(1)
    first, last = c.stores[0], c.stores[-1]
    c.gossip(0, first.add("web", "10.32.0.1", "c1", 0))
    c.gossip(4, last.add("web", "10.40.0.1", "c2", 0))
    c.gossip(2, c.stores[2].add("db", "10.36.0.1", "c3", 0))
    c.settle()
    for s in c.stores:
        assert s.lookup("web.weave.local.") == ["10.32.0.1", "10.40.0.1"]
        assert s.lookup("db.weave.local.") == ["10.36.0.1"]
    c.gossip(0, first.remove_container("c1", 1))
    c.gossip(2, c.stores[2].remove("c3", 1, name="db"))
    c.settle()
    for s in c.stores:
        assert s.lookup("web.weave.local.") == ["10.40.0.1"] and s.lookup("db.weave.local.") == []
    assert len({tuple(sorted(s.records.items())) for s in c.stores}) == 1


def test_a_new_neighbour_gets_everything_in_one_message():
    c = Chain(2)
    for i, s in enumerate(c.stores):
        c.gossip(i, s.add(f"h{i}", f"10.32.0.{i + 1}", f"c{i}", 0))
    c.settle()
    late = RecordStore("02:00:00:00:02:99", 1)
    late.merge(c.stores[2].encode_gossip(), 0)
    assert [late.lookup(f"h{i}.weave.local.") for i in range(5)] == [[f"10.32.0.{i + 1}"] for i in range(5)]
