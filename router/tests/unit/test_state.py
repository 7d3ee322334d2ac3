"""State files: crash-safe writes, and every corrupt file (empty, truncated, garbage, wrong type) refused with one
line naming it and the way out, through the loaders the router really uses, with no other file touched."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import os
import random
from dataclasses import asdict
from pathlib import Path

import pytest

from weavenet.ipam import Allocator
from weavenet.ipam.init import OBSERVER
from weavenet.mesh.core import Mesh, MeshConfig
from weavenet.mesh.handshake import LocalIdentity
from weavenet.weaver import state
from weavenet.weaver.app import build_router
from weavenet.weaver.attachments import Attachments, Record
from weavenet.weaver.config import RouterConfig
from weavenet.weaver.ipam_service import IpamService
from weavenet.weaver.paths import Paths
from weavenet.weaver.state import StateError

NAME = "02:00:00:00:00:01"
RANGE = ipaddress.IPv4Network("10.32.0.0/12")


def valid_ipam() -> str:
    a = Allocator(NAME, RANGE, rng=random.Random(1))
    a.allocate("c1", None, 0)
    a.claim("c2", ipaddress.IPv4Interface("10.32.0.9/12"), 0)
    return a.to_json() + "\n"


def valid_attachments() -> str:
    recs = [Record("abc123", "web", ["10.32.0.1/12"], mac="aa:bb:cc:dd:ee:ff", ifname="vethwepl1",
                   fqdn="web.weave.local", dns=[["alias.weave.local.", "10.32.0.1"]]),
            Record("netns:c1", "", ["10.0.0.1/24"], kind="netns", netns="/run/netns/c1", running=False)]
    return json.dumps({"records": [asdict(r) for r in recs]}, indent=1) + "\n"


VALID = {"peer_name_file": NAME + "\n", "targets_file": json.dumps({"targets": ["192.0.2.2", "host-b:6783"]}) + "\n",
         "attachments_file": valid_attachments(), "ipam_file": valid_ipam()}

# Corruptions every file gets; `wrong` is valid JSON (or text) of the wrong shape or type.
COMMON = {"empty": "", "blank": " \n", "garbage": "\x00\x01garbage{", "not utf-8": b"\xff\xfe\x00x"}
WRONG = {
    "peer_name_file": {"not a mac": "hello\n", "zero": "00:00:00:00:00:00\n", "two lines": NAME + "\nx\n",
                       "json": '{"name": "02:00:00:00:00:01"}'},
    "targets_file": {"list": '["192.0.2.2"]', "targets not a list": '{"targets": "192.0.2.2"}',
                     "number in list": '{"targets": [1]}', "bad address": '{"targets": ["1.2.3.4:99999"]}',
                     "missing key": "{}", "null": "null"},
    "attachments_file": {"list": "[]", "records a dict": '{"records": {}}', "record a list": '{"records": [[1]]}',
                         "missing cidrs": '{"records": [{"key": "a", "name": ""}]}',
                         "cidrs a string": '{"records": [{"key": "a", "name": "", "cidrs": "10.0.0.1/24"}]}',
                         "bad cidr": '{"records": [{"key": "a", "name": "", "cidrs": ["10.0.0.1"]}]}',
                         "running a string": '{"records": [{"key": "a", "name": "", "cidrs": [], "running": "yes"}]}',
                         "unknown field": '{"records": [{"key": "a", "name": "", "cidrs": [], "evil": 1}]}',
                         "bad kind": '{"records": [{"key": "a", "name": "", "cidrs": [], "kind": "vm"}]}',
                         "bad dns": '{"records": [{"key": "a", "name": "", "cidrs": [], "dns": [["x"]]}]}',
                         "empty key": '{"records": [{"key": "", "name": "", "cidrs": []}]}'},
    "ipam_file": {"list": "[1, 2]", "string": '"ipam"', "allocations a list": None, "bad name": None,
                  "ring garbage": None, "no ring": None, "bad address": None, "format 2": None, "range number": None},
}


def ipam_variant(kind: str) -> str:
    d = json.loads(valid_ipam())
    if kind == "allocations a list":
        d["allocations"] = [["c1", "10.32.0.1/12"]]
    elif kind == "bad name":
        d["name"] = "not-a-peer"
    elif kind == "ring garbage":
        d["ring"]["entries"] = [["10.32.0.0", NAME, "x", 0]]
    elif kind == "no ring":
        del d["ring"]
    elif kind == "bad address":
        d["allocations"]["c1"] = ["10.32.0.300/12"]
    elif kind == "format 2":
        d["format"] = 2
    elif kind == "range number":
        d["range"] = 12
    return json.dumps(d)


def cases():
    for attr, valid in VALID.items():
        for kind, text in COMMON.items():
            yield pytest.param(attr, kind, text, id=f"{attr}-{kind}")
        yield pytest.param(attr, "truncated", valid[: len(valid) // 2], id=f"{attr}-truncated")
        yield pytest.param(attr, "truncated to one byte", valid[:1], id=f"{attr}-truncated to one byte")
        for kind, text in WRONG[attr].items():
            yield pytest.param(attr, kind, ipam_variant(kind) if text is None else text, id=f"{attr}-{kind}")


def write_all(paths: Paths, bad_attr: str | None = None, bad: str | bytes = "") -> dict[str, str]:
    paths.datadir.mkdir(parents=True, exist_ok=True)
    for attr, text in VALID.items():
        p: Path = getattr(paths, attr)
        data = bad if attr == bad_attr else text
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return hashes(paths)


def hashes(paths: Paths) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(paths.datadir.iterdir())}


@pytest.fixture
def paths(tmp_path) -> Paths:
    return Paths(tmp_path / "run", tmp_path / "data")


def test_valid_files_load_through_every_loader(paths):
    write_all(paths)
    state.check_all(paths)
    assert state.read_peer_name(paths) == NAME
    assert state.load_targets(paths) == ["192.0.2.2", "host-b:6783"]
    att = Attachments(paths.attachments_file, "weave", 1376, [])
    assert set(att.records) == {"abc123", "netns:c1"} and att.records["abc123"].dns == [["alias.weave.local.",
                                                                                         "10.32.0.1"]]
    svc = ipam_service(paths)
    assert svc.alloc.lookup("c1") == [ipaddress.IPv4Interface("10.32.0.1/12")]


def test_missing_files_are_a_fresh_start(paths):
    state.check_all(paths)
    assert state.load_targets(paths) == [] and state.read_peer_name(paths) is None
    assert Attachments(paths.attachments_file, "weave", 1376, []).records == {}
    assert state.load_ipam_text(paths.ipam_file) is None


def ipam_service(paths: Paths) -> IpamService:
    mesh = Mesh(LocalIdentity(NAME, "h1", 1, 6783), incarnation=1, config=MeshConfig(), rng=random.Random(1))
    return IpamService(mesh, paths.ipam_file, RANGE, None, init=OBSERVER, on_claim_refused=lambda *a: None)


LOADERS = {
    "peer_name_file": lambda p: state.load_or_create_peer_name(p, None),
    "targets_file": state.load_targets,
    "attachments_file": lambda p: Attachments(p.attachments_file, "weave", 1376, []),
    "ipam_file": ipam_service,
}


@pytest.mark.parametrize(("attr", "kind", "text"), list(cases()))
def test_corrupt_file_is_one_line_naming_it_and_nothing_is_touched(paths, attr, kind, text):
    before = write_all(paths, attr, text)
    path = getattr(paths, attr)
    for load in (LOADERS[attr], state.check_all, lambda p: asyncio.run(build_router(RouterConfig(), p))):
        with pytest.raises(StateError) as e:
            load(paths)
        msg = str(e.value)
        assert "\n" not in msg and len(msg) < 400
        assert msg.startswith(f"state file {path} is corrupt (") and msg.endswith("move it away or run `weave reset`")
        assert hashes(paths) == before   # nothing rewritten, nothing deleted, no temp file left


def test_router_checks_every_file_before_writing_its_peer_name(paths):
    """--name would rewrite peer-name; a corrupt IPAM file must stop the launch before that."""
    before = write_all(paths, "ipam_file", "{")
    with pytest.raises(StateError, match="ipam.json is corrupt"):
        asyncio.run(build_router(RouterConfig(name="02:00:00:00:00:09"), paths))
    assert hashes(paths) == before


def test_unreadable_file_is_one_line_too(paths):
    paths.datadir.mkdir(parents=True)
    paths.targets_file.mkdir()   # a directory where the file should be
    with pytest.raises(StateError, match=r"^cannot read state file .*targets.json \(Is a directory\); move it away"):
        state.check_all(paths)


def test_oversized_and_deeply_nested_files(paths, monkeypatch):
    paths.datadir.mkdir(parents=True)
    paths.targets_file.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(StateError, match="targets.json is corrupt"):
        state.load_targets(paths)
    monkeypatch.setattr(state, "MAX_STATE_BYTES", 16)
    paths.targets_file.write_text(json.dumps({"targets": ["192.0.2.2"] * 4}))
    with pytest.raises(StateError, match=r"corrupt \(larger than"):
        state.load_targets(paths)


def test_long_garbage_is_cut_to_one_short_line(paths):
    paths.datadir.mkdir(parents=True)
    paths.peer_name_file.write_text("x" * 10_000 + "\n" * 50)
    with pytest.raises(StateError) as e:
        state.read_peer_name(paths)
    assert "\n" not in str(e.value) and len(str(e.value)) < 250


def test_peer_name_is_created_once_and_not_rewritten(paths):
    name = state.load_or_create_peer_name(paths, None)
    st = paths.peer_name_file.stat()
    assert state.load_or_create_peer_name(paths, None) == name
    assert paths.peer_name_file.stat().st_mtime_ns == st.st_mtime_ns and paths.peer_name_file.stat().st_ino == st.st_ino
    assert state.load_or_create_peer_name(paths, "02:00:00:00:00:07") == "02:00:00:00:00:07"
    assert paths.peer_name_file.read_text() == "02:00:00:00:00:07\n"


def test_write_atomic_fsyncs_file_then_renames_then_fsyncs_directory(tmp_path, monkeypatch):
    """The order that makes a crash leave the old or the new content: observed on the real syscalls."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(("rename", f"{src} -> {dst}"))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "sub" / "ipam.json"
    state.write_atomic(target, "one\n")
    state.write_atomic(target, "two\n")
    tmp = tmp_path / "sub" / ".ipam.json.tmp"
    assert events[:3] == [("fsync", str(tmp)), ("rename", f"{tmp} -> {target}"), ("fsync", str(tmp_path / "sub"))]
    assert len(events) == 6 and target.read_text() == "two\n" and os.listdir(tmp_path / "sub") == ["ipam.json"]


def test_write_atomic_failure_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "targets.json"
    state.write_atomic(target, "old\n")

    def boom(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="No space"):
        state.write_atomic(target, "new\n")
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["targets.json"]


def test_every_state_write_goes_through_write_atomic():
    src = Path(state.__file__).parent
    for f in ("state.py", "attachments.py", "ipam_service.py"):
        text = (src / f).read_text()
        assert ".write_text(" not in text and ".write_bytes(" not in text, f
