"""The mesh view built from a report (links merged from both ends' summaries), and its renderings: text,
Graphviz DOT (hostile nicknames escaped) and SVG laid out by the real Graphviz; `weave topology` end to end
against a stub report."""

from __future__ import annotations

import argparse
import json
import subprocess

import pytest

from weavenet.cli import topology
from weavenet.health import render
from weavenet.health.view import build

A, B, C = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"


def report(bc_state: str = "connected", nick_c: str = "h3") -> dict:
    ok = lambda p, dp="fastdp": [p, "connected", dp, False, 1, 0, True]   # noqa: E731
    bc = [C, "broken", "none", False, None, None, False] if bc_state == "broken" else ok(C, "sleeve")
    cb = [B, "broken", "none", False, None, None, False] if bc_state == "broken" else ok(B, "sleeve")
    return {"router": {
        "name": A, "nickname": "h1", "containers": [{"id": "x" * 64, "name": "web", "cidrs": ["10.32.0.1/12"]}],
        "peers": [{"name": A, "nickname": "h1", "connections": [
                      {"name": B, "nickname": "h2", "address": "10.0.0.2:6783", "established": True},
                      {"name": C, "nickname": nick_c, "address": "10.0.0.3:6783", "established": True}]},
                  {"name": B, "nickname": "h2", "connections": [
                      {"name": A, "nickname": "h1", "address": "10.0.0.1:6783", "established": True}]}],
        "health": {"peers": [], "mesh": {
            A: {"o": A, "e": 1, "n": 1, "k": "h1", "c": 1, "l": [ok(B), ok(C)], "age_s": 0.0},
            B: {"o": B, "e": 1, "n": 1, "k": "h2", "c": 4, "l": [ok(A), bc], "age_s": 1.0},
            C: {"o": C, "e": 1, "n": 1, "k": nick_c, "c": 0, "l": [ok(A), cb], "age_s": 2.0}}}}}


def test_every_router_and_link_with_both_ends_merged():
    v = build(report())
    assert set(v.nodes) == {A, B, C}
    assert (v.nodes[A].ours, v.nodes[A].containers, v.nodes[B].containers) == (True, 1, 4)
    assert v.nodes[A].address == "10.0.0.1" and v.nodes[C].address == "10.0.0.3"
    edges = {(e.a, e.b): e for e in v.edges}
    assert set(edges) == {(A, B), (A, C), (B, C)}
    assert edges[(A, B)].datapath == "fastdp" and edges[(B, C)].datapath == "sleeve"
    assert v.unhealthy() == []


def test_a_link_one_end_says_broken_is_broken_and_marked():
    v = build(report("broken"))
    (bad,) = v.unhealthy()
    assert (bad.a, bad.b, bad.state) == (B, C, "broken")
    text = render.text(v)
    assert "!! h2 <-> h3  BROKEN" in text and "1 unhealthy" in text
    dot = render.dot(v)
    assert 'style=dotted' in dot and render.STYLE["broken"][0] in dot


def test_hostile_nicknames_cannot_break_out_of_dot_strings():
    v = build(report(nick_c='x" ]; evil -- "y\\'))
    dot = render.dot(v)
    assert 'x\\" ]; evil -- \\"y\\\\' in dot
    svg = render.svg(dot)   # Graphviz accepts it: the quoting held
    assert b"evil" in svg and svg.count(b"<g id=\"node") == 3


def test_svg_is_laid_out_by_graphviz_with_all_routers_and_the_broken_link():
    svg = render.svg(render.dot(build(report("broken")))).decode()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for nick in ("h1", "h2", "h3"):
        assert f">{nick}<" in svg
    assert render.STYLE["broken"][0] in svg and render.STYLE["fastdp"][0] in svg


def test_weave_topology_prints_text_dot_and_writes_svg(tmp_path, capsys):
    ns = argparse.Namespace(dot=False, svg=None)
    assert topology.run(ns, report("broken")) == 0
    assert "Links (3, 1 unhealthy)" in capsys.readouterr().out
    ns.dot = True
    topology.run(ns, report())
    out = capsys.readouterr().out
    assert out.startswith("graph weave {")
    assert subprocess.run(["dot", "-Tsvg"], input=out.encode(), capture_output=True).returncode == 0
    ns.dot, ns.svg = False, str(tmp_path / "mesh.svg")
    topology.run(ns, report())
    assert (tmp_path / "mesh.svg").read_bytes().count(b"<g id=\"edge") == 3
    assert "3 routers, 3 links, 0 unhealthy" in capsys.readouterr().out
    ns.svg = str(tmp_path / "nodir" / "x.svg")
    with pytest.raises(ValueError, match="no directory"):
        topology.run(ns, report())


def test_a_router_without_summaries_still_shows_its_topology():
    r = report()
    r["router"]["health"] = None
    v = build(json.loads(json.dumps(r)))
    assert {(e.a, e.b) for e in v.edges} == {(A, B), (A, C)} and all(e.datapath == "unknown" for e in v.edges)
