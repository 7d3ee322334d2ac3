"""The README's pictures, made from a real lab rather than drawn: 3 hosts as network namespaces, a router on
each, containers (bare namespaces) attached, the fast path blocked between h1 and h3 so that link runs on the
sleeve; then `weave topology --svg` on h1 and a headless Chromium screenshot of h1's live page.

Run by scripts/screenshots (root). Writes OUT/lab-topology.svg and OUT/live-page.png."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from . import browser
from .netns import NetnsLab


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not reached within {timeout:.0f}s")
        time.sleep(0.5)


def _links(h) -> dict:
    import json

    from ..health.view import build
    v = build(json.loads(h.weave("report").stdout))
    return {(v.nodes[e.a].nickname, v.nodes[e.b].nickname): e for e in v.edges}


def main(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    with NetnsLab(3) as lab:
        h1, h2, h3 = lab.hosts
        for i, h in enumerate(lab.hosts):
            h.weave("launch", "--nickname", f"h{h.index}", *([lab.hosts[i - 1].ip] if i else []))
        for h, n in ((h1, 2), (h2, 1), (h3, 3)):
            for k in range(n):
                ns = lab.add_container(h, f"c{h.index}{k}")
                h.weave("attach", f"10.2.{h.index}.{k + 1}/24", f"netns:{ns}")
        # VXLAN (UDP 6784) dropped between h1 and h3: their link stays on the sleeve.
        for rule in (["INPUT", "-s", h1.ip, "-p", "udp", "--dport", "6784"], ["OUTPUT", "-d", h1.ip, "-p", "udp",
                                                                              "--dport", "6784"]):
            h3.exec("iptables", "-A", *rule, "-j", "DROP")
        _wait(lambda: len(_links(h1)) == 3 and all(e.rtt_ms is not None for e in _links(h1).values()), 60,
              "three links with RTTs on h1")
        time.sleep(12)   # fast paths up (and h1-h3's given up), figures through a few anti-entropy rounds
        svg = out / "lab-topology.svg"
        h1.weave("topology", "--svg", str(svg))
        png = out / "live-page.png"
        browser.run(h1.weave("ui").stdout.strip(), netns=h1.netns, screenshot=png, size=(1280, 1350))
        print("$ weave topology\n" + h1.weave("topology").stdout)
        print("$ weave status peers\n" + h1.weave("status", "peers").stdout)
        print(f"wrote {svg} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img")))
