"""The router's settings, each defined once as a `Setting` in a RouterConfig field's metadata.

Everything else is derived from that table: the flags of `weave launch` / `weave router`, the argv that
`weave launch` hands to the background router, validation, the report's `config`, `--config FILE`, the
dry-run comparison with a running router, and (through scripts/gen-settings) the Ansible collection's
option spec, docs and role defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from typing import Any

MAX_CONFIG_BYTES = 64 * 1024  # a settings file is a few hundred bytes; anything bigger is a mistake


@dataclass(frozen=True)
class Setting:
    help: str
    lo: int | None = None  # inclusive range of an int setting
    hi: int | None = None
    check: Callable[[Any], Any] | None = None  # normalises one value (one item of a list) or raises ValueError(reason)
    public: bool = True  # shown in the report's `config`
    restart: bool = True  # a change needs a router restart
    secret: bool = False  # never on a command line, in the report or in a group/world-readable file
    positional: bool = False  # the trailing PEER... arguments
    metavar: str | None = None
    default_text: str = ""  # how docs name a default computed when the router starts
    # filled in from the dataclass field by settings_of()
    name: str = ""
    kind: type = str
    default: Any = None  # the static default; None when unset or computed at start

    @property
    def flag(self) -> str:
        return (self.metavar or "PEER") if self.positional else "--" + self.name.replace("_", "-")

    @property
    def cli_flag(self) -> str:
        """The flag that sets a non-default value (`--no-dns` for a setting that defaults to on)."""
        if self.kind is bool and self.default is True:
            return "--no-" + self.name.replace("_", "-")
        return self.flag

    @property
    def range_text(self) -> str:
        if self.lo is None:
            return ""
        return f"{self.lo}-{self.hi}" if self.hi is not None else f"at least {self.lo}"

    def describe(self) -> str:
        """The help text with the range and default: `overlay MTU (576-9000; default 1376)`."""
        notes = [self.range_text] if self.range_text else []
        if self.default_text:
            notes.append(self.default_text)
        elif self.default is not None and self.kind is not list:
            notes.append(f"default {json.dumps(self.default) if self.kind is bool else self.default}")
        return f"{self.help} ({'; '.join(notes)})" if notes else self.help

    def normalise(self, value: Any) -> Any:
        """The canonical value, or ValueError with one line naming the flag."""
        if value is None:
            return None
        if self.kind is list:
            return list(dict.fromkeys(self._one(v) for v in value))
        return self._one(value)

    def _one(self, value: Any) -> Any:
        in_range = self.lo is None or (self.lo <= value and (self.hi is None or value <= self.hi))
        if self.kind is int and not in_range:
            raise ValueError(f"invalid {self.flag} {value!r}: must be {self.range_text}")
        if self.check is None:
            return value
        try:
            return self.check(value)
        except ValueError as e:
            if self.positional or self.flag in str(e):
                raise
            raise ValueError(f"invalid {self.flag} {value!r}: {e}") from None


def setting(default: Any = None, **meta: Any) -> Any:
    """A dataclass field carrying its Setting; a callable default is computed when the config is made."""
    s = Setting(**meta)
    if callable(default):
        return field(default_factory=default, metadata={"setting": s})
    return field(default=default, metadata={"setting": s})


def _kind(annotation: str) -> type:
    for name, kind in (("list", list), ("bool", bool), ("int", int)):
        if annotation.startswith(name):
            return kind
    return str


def settings_of(cls: type) -> tuple[Setting, ...]:
    out = []
    for f in fields(cls):
        s: Setting = f.metadata["setting"]
        kind = _kind(str(f.type))
        out.append(replace(s, name=f.name, kind=kind, default=_static_default(f, kind)))
    return tuple(out)


def _static_default(f: Field, kind: type) -> Any:
    if f.default is not MISSING:
        return f.default
    return [] if kind is list else None  # a factory other than list(): computed at start (host name)


# --- command line -------------------------------------------------------------------------------------


def add_flags(p: argparse.ArgumentParser, settings: Sequence[Setting]) -> None:
    """One flag per setting. Defaults are None (= not given), so flags can override a --config file."""
    for s in settings:
        if s.positional:
            p.add_argument(s.name, nargs="*", metavar=s.flag, help=s.help)
        elif s.kind is bool:  # its help is a verb phrase: "do not run weaveDNS" for --no-dns
            p.add_argument(s.cli_flag, dest=s.name, action="store_const", const=not s.default,
                           help=f"do not {s.help}" if s.default else s.help)
        elif s.kind is list:
            p.add_argument(s.flag, dest=s.name, action="append", metavar=s.metavar, help=s.describe())
        else:
            p.add_argument(s.flag, dest=s.name, type=s.kind, metavar=s.metavar, help=s.describe())


def given_flags(args: argparse.Namespace, settings: Sequence[Setting]) -> dict[str, Any]:
    """The settings given on the command line."""
    out = {}
    for s in settings:
        v = getattr(args, s.name, None)
        if v is not None and not (s.positional and not v):
            out[s.name] = v
    return out


def router_argv(values: dict[str, Any], settings: Sequence[Setting]) -> list[str]:
    """Arguments of `weave router` for these (validated) values; never a secret (that goes in the environment)."""
    argv: list[str] = []
    peers: list[str] = []
    for s in settings:
        v = values.get(s.name)
        if v is None or s.secret:
            continue
        if s.positional:
            peers = list(v)
        elif s.kind is bool:
            if v != s.default:
                argv.append(s.cli_flag)
        elif s.kind is list:
            for item in v:
                argv += [s.flag, str(item)]
        else:
            argv += [s.flag, str(v)]
    return [*argv, "--", *peers] if peers else argv


# --- --config FILE ------------------------------------------------------------------------------------

_TYPE_NAMES = {int: "an integer", bool: "true or false", str: "a string", list: "a list of strings"}


def read_config_file(path: str, settings: Sequence[Setting]) -> dict[str, Any]:
    """The settings in a JSON object file (null = not given). A file holding a secret must be 0600-like:
    readable by its owner only. Raises ValueError with one line."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as e:
        raise ValueError(f"cannot read --config {path}: {e.strerror}") from None
    st = os.fstat(fd)  # checks and reads the same file (no race with a rename)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ValueError(f"--config {path} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        raw = f.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ValueError(f"--config {path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"--config {path} is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {path} must hold a JSON object of settings")
    by_name = {s.name: s for s in settings}
    out = {}
    for key, value in data.items():
        s = by_name.get(key)
        if s is None:
            raise ValueError(f"--config {path}: unknown setting {key!r} (known: {', '.join(by_name)})")
        if value is None:
            continue
        if not _has_kind(value, s.kind):
            raise ValueError(f"--config {path}: {key} must be {_TYPE_NAMES[s.kind]}")
        if s.secret and st.st_mode & 0o077:
            raise ValueError(f"--config {path} holds the {key} but is readable by group or others "
                             f"(mode {stat.S_IMODE(st.st_mode):04o}): chmod 600 {path}")
        out[key] = value
    return out


def _has_kind(value: Any, kind: type) -> bool:
    if kind is list:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


# --- dry run ------------------------------------------------------------------------------------------


def differences(settings: Sequence[Setting], desired: dict[str, Any], given: Iterable[str],
                current: dict[str, Any], targets: list[str], password_matches: bool | None) -> list[str]:
    """Names of the given settings that differ from the running router's (a setting it does not report is
    not compared), then `encryption` (on/off differs) or `password` (the router said it is another one:
    None = it cannot tell, assumed the same). desired: normalised values; current: the report's config."""
    out = []
    for s in settings:
        if s.name not in given or s.secret:
            continue
        if s.positional:
            if set(desired[s.name]) != set(targets):
                out.append(s.name)
        elif s.name in current and current[s.name] != desired[s.name]:
            out.append(s.name)
    if "encrypted" in current:
        want = desired.get("password") is not None
        if want != bool(current["encrypted"]):
            out.append("encryption")
        elif want and password_matches is False:
            out.append("password")
    return out


def needs_restart(settings: Sequence[Setting], differ: Iterable[str]) -> bool:
    by_name = {s.name: s for s in settings}
    return any(by_name[d].restart if d in by_name else True for d in differ)  # encryption, password: restart
