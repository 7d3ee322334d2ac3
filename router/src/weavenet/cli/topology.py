"""`weave topology`: the whole mesh as this router sees it (its own links and every other router's gossiped
summary) — text, Graphviz DOT (`--dot`) or an SVG picture laid out by Graphviz (`--svg FILE`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..health import render
from ..health.view import build


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("topology", help="the mesh: routers and links with datapath, encryption, RTT; unhealthy "
                                        "ones marked (--dot: Graphviz DOT, --svg FILE: a picture)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--dot", action="store_true", help="print Graphviz DOT")
    g.add_argument("--svg", metavar="FILE", help="write an SVG picture (needs Graphviz: apt-get install graphviz)")


def write_file(path: Path, data: bytes) -> None:
    """Replace `path` whole (a reader never sees half a picture)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def run(args: argparse.Namespace, report: dict) -> int:
    view = build(report)
    if args.dot:
        sys.stdout.write(render.dot(view))
    elif args.svg:
        path = Path(args.svg)
        if not path.parent.is_dir():
            raise ValueError(f"cannot write {args.svg}: no directory {path.parent}")
        try:
            write_file(path, render.svg(render.dot(view)))
        except render.RenderError as e:
            raise RuntimeError(str(e)) from None
        print(f"{args.svg}: {len(view.nodes)} routers, {len(view.edges)} links, {len(view.unhealthy())} unhealthy")
    else:
        sys.stdout.write(render.text(view))
    return 0
