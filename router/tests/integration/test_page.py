"""The live page in a real browser: a 3-host namespace lab, headless Chromium in h1's namespace opening the URL
`weave ui` prints; all three hosts on the page; a link cut (h2 <-> h3 dropped by nft) shows broken on h1's page
(learnt from h2's and h3's gossiped summaries), and `weave topology` on h1 says so too."""

from __future__ import annotations

import re
import subprocess
import time

from weavenet.lab import browser

from .conftest import wait_for
from .helpers import full_mesh, launch_chain, report

CUT = """table inet weavecut {{
  chain cin {{ type filter hook input priority -10; ip saddr {ip} drop; }}
  chain cout {{ type filter hook output priority -10; ip daddr {ip} drop; }}
}}
"""


# Per row of the open page's links table: is it marked broken?
LINK_ROWS = ("Array.from(document.querySelectorAll('#links tbody tr'))"
             ".map(r => r.outerHTML.includes('data-state=\"broken\"'))")


def link_rows(live: browser.LivePage) -> list | None:
    try:
        return live.evaluate(LINK_ROWS)
    except RuntimeError:   # the page is still loading (no page target yet)
        return None


def links(h) -> dict[frozenset, str]:
    """Each link's state as `h` shows it (from every router's summary)."""
    from weavenet.health.view import build
    v = build({"router": report(h)})
    nick = {n.name: n.nickname for n in v.nodes.values()}
    return {frozenset((nick[e.a], nick[e.b])): e.state for e in v.edges}


def page(h, tmp_path, shot: str) -> str:
    url = h.weave("ui").stdout.strip()
    assert url.startswith("http://127.0.0.1:") and "/ui/login?ticket=" in url
    png = tmp_path / shot
    browser.run(h.weave("ui").stdout.strip(), netns=h.netns, screenshot=png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    return browser.run(url, netns=h.netns)   # the DOM once its scripts ran (a fresh ticket: each is one-time)


def rows(dom: str, table: str) -> list[str]:
    body = re.search(rf'<table id="{table}">.*?<tbody>(.*?)</tbody>', dom, re.S)
    assert body, f"no table {table} in the page"
    return re.findall(r"<tr[^>]*>.*?</tr>", body.group(1), re.S)


def test_page_shows_every_host_and_a_cut_link_broken(lab_factory, tmp_path):
    lab = lab_factory(3)
    h1, h2, h3 = lab.hosts
    names = launch_chain(lab.hosts)
    wait_for(lambda: full_mesh(lab.hosts, names), 20, what="full mesh")
    c1 = lab.add_container(h1, "c1")
    h1.weave("attach", "10.2.1.1/24", f"netns:{c1}")
    wait_for(lambda: set(links(h1).values()) == {"ok"} and len(links(h1)) == 3, 20, what="3 healthy links on h1")

    dom = page(h1, tmp_path, "before.png")
    nodes = rows(dom, "nodes")
    assert len(nodes) == 3 and all(any(f"h{i} (" in r for r in nodes) for i in (1, 2, 3))
    assert any("(this host)" in r and ">1<" in r for r in nodes)          # h1 with its one container
    assert len(rows(dom, "links")) == 3 and 'data-state="broken"' not in dom
    assert "10.2.1.1/24" in dom and "10.2.1.0/24" in dom                  # this host's container and subnet
    assert len(rows(dom, "peers")) == 2

    # One page kept open across the cut: it must refresh itself (DevTools protocol reads it as it is now).
    live = browser.LivePage(h1.weave("ui").stdout.strip(), h1.netns)
    try:
        wait_for(lambda: link_rows(live) == [False, False, False], 30, interval=0.5,
                 what="open page: 3 healthy links")
        subprocess.run(["ip", "netns", "exec", h2.netns, "nft", "-f", "-"], input=CUT.format(ip=h3.ip), text=True,
                       check=True)
        t0 = time.monotonic()
        wait_for(lambda: links(h1).get(frozenset(("h2", "h3"))) == "broken", 20, what="h2-h3 broken on h1")
        seen_after = time.monotonic() - t0
        wait_for(lambda: sorted(link_rows(live) or []) == [False, False, True], 20, interval=0.5,
                 what="the open page showing h2-h3 broken")
        print(f"h2-h3 cut: on the open page after {time.monotonic() - t0:.1f}s")
    finally:
        live.close()
    try:
        dom = page(h1, tmp_path, "after.png")
        broken = [r for r in rows(dom, "links") if 'data-state="broken"' in r]
        assert len(broken) == 1 and "h2 (" in broken[0] and "h3 (" in broken[0], broken
        text = h1.weave("topology").stdout
        assert re.search(r"^!! h[23] <-> h[23]  BROKEN", text, re.M), text
        # On h2, h3 is still reachable (through h1), and marked: its direct connection was lost.
        peers = h2.weave("status", "peers").stdout
        assert re.search(r"^!! \S+\(h3\) +\[direct connection lost \(timeout\)\] relayed", peers, re.M), peers
        print(f"h2-h3 cut: shown broken on h1 after {seen_after:.1f}s")
    finally:
        h2.exec("nft", "delete", "table", "inet", "weavecut", check=False)
    wait_for(lambda: links(h1).get(frozenset(("h2", "h3"))) == "ok", 40, what="h2-h3 back")
