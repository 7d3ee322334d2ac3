"""An idle mesh does O(due) work per tick: the dial pass runs only when something changed or is due."""

from weavenet.mesh.connmaker import RECONNECT_QUICK, ConnectionMaker
from weavenet.mesh.core import Dial

from .meshsim import SimNet, full_mesh
from .test_mesh_sim import launch_chain


def count_dial_passes(m) -> list[float]:
    calls: list[float] = []
    orig = m._dial_pass

    def counted(now):
        calls.append(now)
        return orig(now)
    m._dial_pass = counted
    return calls


def test_idle_mesh_skips_the_dial_pass_until_a_connection_goes():
    net = SimNet()
    meshes = launch_chain(net, 5)
    net.until(lambda: full_mesh(net), 30)
    net.advance(2)
    a = meshes[4]                                    # its explicit target is meshes[3]
    calls = count_dial_passes(a)
    net.advance(5)                                   # 100 ticks, nothing changes
    assert calls == []
    net.kill(meshes[3])                              # a connection goes: its target must be retried
    net.advance(1)
    assert calls, "a lost connection must re-check the dial targets"
    n = len(calls)
    net.advance(60)   # quick redials (RECONNECT_QUICK), then backoff (0.5 s doubling to 30 s): a few passes each
    assert n < len(calls) < n + 30 + 2 * RECONNECT_QUICK, len(calls)
    assert a.connmaker.targets[net.addr_of(meshes[3])].state == "retrying"


def test_connect_to_a_new_target_dials_at_once():
    net = SimNet()
    a, b = net.add(1), net.add(2)
    net.run(net.addr_of(a), a.connect([net.addr_of(b)], net.now))
    net.until(lambda: full_mesh(net), 10)
    net.advance(2)
    c = net.add(3)
    out = a.connect([net.addr_of(c)], net.now)      # connect ticks at once: the new target is due now
    assert [x.address for x in out if isinstance(x, Dial)] == [net.addr_of(c)]


def test_connmaker_version_moves_with_every_change_and_only_then():
    cm = ConnectionMaker()
    v = cm.version
    cm.add("a:1", explicit=False, now=0.0)
    assert cm.version > v
    v = cm.version
    cm.add("a:1", explicit=False, now=1.0)           # already there: nothing changed
    assert cm.version == v
    t = cm.targets["a:1"]
    for step in (lambda: cm.dialing(t, 1), lambda: cm.failed("a:1", "x", 1.0), lambda: cm.remove("a:1")):
        step()
        assert cm.version > v
        v = cm.version


def test_discovery_does_not_reset_a_retrying_targets_backoff():
    cm = ConnectionMaker()
    cm.add("a:1", explicit=False, now=0.0)
    t = cm.targets["a:1"]
    cm.dialing(t, 1)
    cm.failed("a:1", "refused", 0.0)
    due = t.next_try
    assert due > 0
    cm.add("a:1", explicit=False, now=0.1)           # topology recomputed: still wanted
    assert t.next_try == due
    cm.add("a:1", explicit=True, now=0.2)            # the operator asks: now
    assert t.next_try == 0.2
