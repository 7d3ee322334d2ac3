"""What a router keeps across restarts (peer name, connection targets, attachments, IPAM space), read and written
safely.

Writes are crash-safe: temp file in the same directory, fsync, rename, fsync the directory. Reads trust nothing:
a file that is empty, truncated, not UTF-8, not the JSON shape we write, or holding values of the wrong type
raises one StateError naming the file and the way out, before the router touches anything else, so a launch
fails with one line and no other state is rewritten or lost.
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

from ..ipam.ring import Ring
from ..mesh.errors import ProtocolError
from ..mesh.names import parse_peer_address, parse_peer_name, random_peer_name
from ..net.addrs import parse_cidr
from .paths import Paths

MAX_STATE_BYTES = 64 << 20   # far above any real state; a bigger file is not one we wrote
WAY_OUT = "move it away or run `weave reset`"


class StateError(ValueError):
    """A persisted file the router cannot use as it is (the message is one line, fit for the operator)."""


def _one_line(reason: object, limit: int = 160) -> str:
    text = " ".join(str(reason).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def corrupt(path: Path, reason: object) -> StateError:
    return StateError(f"state file {path} is corrupt ({_one_line(reason)}); {WAY_OUT}")


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace `path` with `text` so that after a crash it holds either the old or the new content, never a mix
    or nothing: the data is on disk before the rename, and the rename is on disk before we return."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")   # same directory: rename(2) is atomic only within a filesystem
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)   # the rename itself lives in the directory
    finally:
        os.close(dfd)


# --- reading -----------------------------------------------------------------------------------------------
def _read(path: Path) -> str | None:
    """The file's text, None if it does not exist; StateError if unreadable, oversized, not UTF-8 or empty."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StateError(f"cannot read state file {path} ({_one_line(e.strerror or e)}); {WAY_OUT}") from None
    if len(data) > MAX_STATE_BYTES:
        raise corrupt(path, f"larger than {MAX_STATE_BYTES >> 20} MiB")
    try:
        text = data.decode()
    except UnicodeDecodeError as e:
        raise corrupt(path, f"not UTF-8 text at byte {e.start}") from None
    if not text.strip():
        raise corrupt(path, "empty")
    return text


def _type(v: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number")


def _read_object(path: Path) -> dict | None:
    text = _read(path)
    return None if text is None else _decode_object(path, text)


def _decode_object(path: Path, text: str) -> dict:
    try:
        d = json.loads(text)
    except RecursionError:
        raise corrupt(path, "nested too deeply") from None
    except ValueError as e:
        raise corrupt(path, e) from None
    if not isinstance(d, dict):
        raise corrupt(path, f"expected a JSON object, found {_type(d)}")
    return d


def _want(path: Path, d: dict, key: str, kind: type, where: str = "") -> object:
    if key not in d:
        raise corrupt(path, f"{where}no {key!r}")
    v = d[key]
    if not isinstance(v, kind) or (kind is not bool and isinstance(v, bool)):
        raise corrupt(path, f"{where}{key!r} is {_type(v)}, expected {_type(kind())}")
    return v


def _strings(path: Path, values: list, what: str) -> list[str]:
    for v in values:
        if not isinstance(v, str):
            raise corrupt(path, f"{what} holds {_type(v)} where a string is expected")
    return values


# --- peer name ---------------------------------------------------------------------------------------------
def read_peer_name(paths: Paths) -> str | None:
    text = _read(paths.peer_name_file)
    if text is None:
        return None
    try:
        return parse_peer_name(text)
    except ValueError:
        raise corrupt(paths.peer_name_file, f"{text.strip()[:40]!r} is not a peer name like 02:00:5e:10:00:01"
                      ) from None


def load_or_create_peer_name(paths: Paths, override: str | None) -> str:
    """--name wins (and is remembered); otherwise the persisted name; otherwise a new random one."""
    persisted = read_peer_name(paths)
    name = parse_peer_name(override) if override else persisted or random_peer_name()
    if name != persisted:   # an unchanged file is not rewritten
        write_atomic(paths.peer_name_file, name + "\n")
    return name


# --- targets -----------------------------------------------------------------------------------------------
def load_targets(paths: Paths) -> list[str]:
    path = paths.targets_file
    d = _read_object(path)
    if d is None:
        return []
    targets = _strings(path, _want(path, d, "targets", list), "'targets'")   # type: ignore[arg-type]
    for t in targets:
        try:
            parse_peer_address(t)
        except ValueError as e:
            raise corrupt(path, e) from None
    return list(targets)


def save_targets(paths: Paths, targets: list[str]) -> None:
    write_atomic(paths.targets_file, json.dumps({"targets": targets}) + "\n")


# --- attachments -------------------------------------------------------------------------------------------
# The fields of attachments.Record (kept here to validate without importing it: it imports write_atomic).
_RECORD_FIELDS: dict[str, type] = {"key": str, "name": str, "cidrs": list, "mac": str, "ifname": str,
                                   "running": bool, "kind": str, "netns": str, "fqdn": str, "dns": list,
                                   "extra": dict}
_RECORD_REQUIRED = ("key", "name", "cidrs")


def load_attachment_records(path: Path) -> list[dict]:
    """The records as keyword arguments for attachments.Record, every field checked; [] if there is no file."""
    d = _read_object(path)
    if d is None:
        return []
    records = _want(path, d, "records", list)
    for i, r in enumerate(records):   # type: ignore[arg-type]
        where = f"record {i}: "
        if not isinstance(r, dict):
            raise corrupt(path, f"{where}{_type(r)}, expected an object")
        unknown = set(r) - set(_RECORD_FIELDS)
        if unknown:
            raise corrupt(path, f"{where}unknown field {sorted(unknown)[0][:40]!r}")
        for k in _RECORD_REQUIRED:
            _want(path, r, k, _RECORD_FIELDS[k], where)
        for k in set(r) - set(_RECORD_REQUIRED):
            _want(path, r, k, _RECORD_FIELDS[k], where)
        if not r["key"]:
            raise corrupt(path, f"{where}empty key")
        if r.get("kind", "container") not in ("container", "netns"):
            raise corrupt(path, f"{where}kind {r['kind'][:20]!r} is not container or netns")
        try:
            for c in _strings(path, r["cidrs"], f"{where}'cidrs'"):
                parse_cidr(c)
            for e in r.get("dns", []):
                if not (isinstance(e, list) and len(e) == 2 and all(isinstance(x, str) for x in e)):
                    raise ValueError("'dns' entries must be [name, address] pairs")
                ipaddress.ip_address(e[1])
        except ValueError as e:
            raise corrupt(path, f"{where}{e}") from None
    return records   # type: ignore[return-value]


# --- IPAM --------------------------------------------------------------------------------------------------
def load_ipam_text(path: Path) -> str | None:
    """The IPAM state's text once its shape is checked (Allocator.from_json then decides whether it fits this
    router's name and range); None if there is no file."""
    text = _read(path)
    if text is None:
        return None
    d = _decode_object(path, text)
    fmt = _want(path, d, "format", int)
    if fmt != 1:
        raise corrupt(path, f"unknown format {fmt}")
    try:
        parse_peer_name(_want(path, d, "name", str))   # type: ignore[arg-type]
        network = ipaddress.IPv4Network(_want(path, d, "range", str))
        if "ring" not in d:
            raise ValueError("no 'ring'")
        Ring.from_wire(d["ring"], network)
        allocs = _want(path, d, "allocations", dict)
        for cid, addrs in allocs.items():   # type: ignore[attr-defined]
            if not isinstance(addrs, list):
                raise ValueError(f"allocations of {cid[:40]!r} are {_type(addrs)}, expected a list")
            for a in _strings(path, addrs, f"allocations of {cid[:40]!r}"):
                ipaddress.IPv4Interface(a)
    except (ValueError, ProtocolError) as e:
        if isinstance(e, StateError):
            raise
        raise corrupt(path, e) from None
    return text


def check_all(paths: Paths) -> None:
    """Read and check every state file; the first bad one raises StateError. Done before anything is changed,
    so a launch that fails here leaves every file (and the host) as it was."""
    read_peer_name(paths)
    load_targets(paths)
    load_attachment_records(paths.attachments_file)
    load_ipam_text(paths.ipam_file)
