"""The collection ships router/ and ansible-test sanity runs on that tarball: tests/sanity/ignore-2.X.txt skip
pep8/pylint for each router/src Python file (scripts/gen-sanity-ignores says why). A file added to or removed
from router/src must be reflected there, or the collection's sanity step fails; this catches it here first."""

from __future__ import annotations

import shutil

import pytest

from . import repo_scripts
from .repo_scripts import REPO


def _gen():
    return repo_scripts.load("gen-sanity-ignores")


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="needs the git checkout")
def test_sanity_ignores_list_every_router_file():
    gen = _gen()
    text = gen.render()
    stale = [v for v in gen.VERSIONS if (REPO / "tests" / "sanity" / f"ignore-{v}.txt").read_text() != text]
    assert not stale, f"run scripts/gen-sanity-ignores: tests/sanity/ignore-{stale}.txt do not list router/src's files"
    assert any(line.startswith("router/src/weavenet/cli/main.py pylint!skip") for line in text.splitlines())
