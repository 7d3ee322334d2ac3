"""`weave ui`: a one-time login URL for the router's live page (see api/page.py for how it stays safe)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("ui", help="print a one-time URL (valid 60 s) that opens the router's live page in a browser "
                              "on this host")


def run(client) -> int:
    r = client.json("POST", "/ui/ticket", {})
    print(r["url"])
    return 0
