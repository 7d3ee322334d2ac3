"""The path-MTU prober against a peer that never answers (no sleeve, UDP blocked, a simulated peer): after a
few void rounds it backs off to one round per VOID_BACKOFF_MAX, and an answer still settles it."""

from weavenet.datapath import pmtu
from weavenet.datapath.pmtu import FLOOR, Prober


def probes_sent(p: Prober, start: float, until: float, answer_from: float | None = None) -> int:
    sent, now = 0, start
    while now < until:
        for nonce, size in p.tick(now):
            sent += 1
            if answer_from is not None and now >= answer_from and size <= 1400:
                p.on_reply(nonce, size, now + 0.01)
        now = round(now + 0.1, 1)
    return sent


def test_a_silent_peer_costs_a_round_per_backoff_not_per_second_and_an_answer_still_settles_it():
    p = Prober(1500, now=0.0)
    per_round = pmtu.ROUND_PROBES + 1
    first = probes_sent(p, 0.0, 60.0)
    assert first < 12 * per_round        # without the backoff: 60 rounds
    later = probes_sent(p, 60.0, 360.0)
    assert later <= (300 / pmtu.VOID_BACKOFF_MAX + 1) * per_round and p.pmtu == FLOOR and p.searching
    # The peer starts answering: the next round after the backoff finds the size.
    probes_sent(p, 360.0, 360.0 + pmtu.VOID_BACKOFF_MAX + 10, answer_from=360.0)
    assert not p.searching and 1400 - pmtu.STEP < p.pmtu <= 1400 and p.voids == 0
