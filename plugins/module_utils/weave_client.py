# -*- coding: utf-8 -*-
# Copyright: weavenet developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Shared code of the weavenet.mesh modules: run the router's `weave` CLI, read `weave report`,
and the pure desired-versus-current comparisons (unit-tested without a router). Router settings are not
compared here: `weave launch --config FILE --dry-run` does it with the router's own schema."""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import tempfile

DEFAULT_WEAVE_BIN = "/opt/weavenet/venv/bin/weave"

COMMON_ARGS = dict(
    weave_bin=dict(type="path"),   # default: find_weave_bin()
    rundir=dict(type="path"),
    datadir=dict(type="path"),
)


class WeaveError(Exception):
    """A failure worth one line in fail_json."""


def _normalized_unique(normalize, items):
    """Each item normalized, in order, the first of equal ones kept."""
    return list(dict.fromkeys(normalize(i) for i in items or []))


def normalize_cidr(cidr):
    """'10.0.0.01/24' -> '10.0.0.1/24' (an interface address: host bits are kept). Raises WeaveError."""
    try:
        iface = ipaddress.ip_interface(str(cidr).strip())
    except ValueError:
        raise WeaveError("invalid CIDR %r (expected an address with a prefix length, e.g. 10.0.0.1/24)" % (cidr,))
    if "/" not in str(cidr):
        raise WeaveError("invalid CIDR %r: missing the prefix length (e.g. /24)" % (cidr,))
    return str(iface)


def normalize_cidrs(cidrs):
    return _normalized_unique(normalize_cidr, cidrs)


def normalize_address(entry):
    """An address argument: an explicit CIDR, 'net:CIDR' (allocate in that subnet) or 'net:default'."""
    entry = str(entry).strip()
    if entry.startswith("net:"):
        spec = entry[4:]
        if spec == "default":
            return "net:default"
        try:
            return "net:%s" % ipaddress.ip_network(spec, strict=True)
        except ValueError:
            raise WeaveError("invalid subnet in %r (expected net:CIDR such as net:10.0.0.0/24, or net:default)"
                             % (entry,))
    return normalize_cidr(entry)


def normalize_addresses(entries):
    out = []
    for e in entries or []:
        n = normalize_address(e)
        if n.startswith("net:") or n not in out:
            out.append(n)
    return out


def address_plan(desired, current, exclusive):
    """(to_add, to_remove) for a container's addresses.

    desired: normalize_addresses() output (CIDRs and allocation specs); current: the container's CIDRs.
    An explicit CIDR is satisfied by itself; 'net:SUBNET' by a current address in SUBNET that no other entry
    claims; 'net:default' by any unclaimed current address. Unsatisfied entries are added (specs are passed
    to the router, which allocates); with exclusive, unclaimed current addresses are removed.
    """
    unclaimed = list(current)
    to_add = []
    explicit = [d for d in desired if not d.startswith("net:")]
    specs = [d for d in desired if d.startswith("net:")]
    for d in explicit:
        if d in unclaimed:
            unclaimed.remove(d)
        else:
            to_add.append(d)
    # subnet specs first, so net:default does not take an address a subnet spec needs
    for d in sorted(specs, key=lambda x: x == "net:default"):
        match = None
        for c in unclaimed:
            if d == "net:default" or ipaddress.ip_interface(c).network == ipaddress.ip_network(d[4:]):
                match = c
                break
        if match is None:
            to_add.append(d)
        else:
            unclaimed.remove(match)
    return to_add, (unclaimed if exclusive else [])


def peers_plan(desired, current):
    """How to turn the router's explicit targets `current` into `desired` (both normalized lists).

    Returns ('none', []), ('replace', desired) or ('forget', current) when desired is empty.
    """
    if set(desired) == set(current):
        return "none", []
    if desired:
        return "replace", list(desired)
    return "forget", list(current)


def cidrs_plan(desired, current, exclusive):
    """(to_add, to_remove): addresses to add, and (when exclusive) the ones to take away."""
    to_add = [c for c in desired if c not in current]
    to_remove = [c for c in current if c not in desired] if exclusive else []
    return to_add, to_remove


def find_container(containers, ident):
    """The report's entry for a container given by name or (possibly short) id; None if not attached."""
    if not ident:
        return None
    name = ident.lstrip("/")
    for c in containers or []:
        cid = c.get("id") or ""
        cname = (c.get("name") or "").lstrip("/")
        if cname == name or cid == ident or (len(ident) >= 12 and cid.startswith(ident)):
            return c
    return None


def config_json(config):
    """The text of a `weave launch --config` file (stable, so an unchanged file is not rewritten)."""
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def write_private_file(path, text):
    """Write `text` to `path` atomically, mode 0600 from the start (it may hold the password).
    Returns False when the file already had exactly this text and mode."""
    try:
        st = os.stat(path)
        with open(path) as f:
            if f.read() == text and stat.S_IMODE(st.st_mode) == 0o600:
                return False
    except (OSError, UnicodeDecodeError):
        pass
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".weave-config.")
    try:
        with os.fdopen(fd, "w") as f:  # mkstemp creates it 0600
            f.write(text)
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def private_file_differs(path, text):
    """Whether write_private_file(path, text) would change anything (for check mode)."""
    try:
        with open(path) as f:
            return f.read() != text or stat.S_IMODE(os.stat(path).st_mode) != 0o600
    except (OSError, UnicodeDecodeError):
        return True


def find_weave_bin(module):
    """`weave` on PATH (the router role links it into /usr/local/bin, wherever weave_install_dir put the
    venv), else the default install location."""
    return module.get_bin_path("weave", opt_dirs=["/usr/local/bin"]) or DEFAULT_WEAVE_BIN


class WeaveClient(object):
    """Runs `weave` for a module. Every call goes through module.run_command (no shell)."""

    def __init__(self, module):
        self.module = module
        p = module.params
        self.weave_bin = p.get("weave_bin") or find_weave_bin(module)
        self.env = {}
        if p.get("rundir"):
            self.env["WEAVE_RUNDIR"] = p["rundir"]
        if p.get("datadir"):
            self.env["WEAVE_DATADIR"] = p["datadir"]

    @property
    def rundir(self):
        return self.env.get("WEAVE_RUNDIR") or os.environ.get("WEAVE_RUNDIR") or "/run/weave"

    @property
    def datadir(self):
        return self.env.get("WEAVE_DATADIR") or os.environ.get("WEAVE_DATADIR") or "/var/lib/weave"

    def check_installed(self):
        if not (os.path.isfile(self.weave_bin) and os.access(self.weave_bin, os.X_OK)):
            if getattr(self.module, "check_mode", False):
                # --check on a fresh host: the router role's install only said what it would do, so there is
                # no router to ask; all this task asks for is a change
                self.module.exit_json(changed=True, msg="weave is not installed at %s yet (check mode): it would "
                                      "be installed first, then this applied" % self.weave_bin)
            raise WeaveError("weave command not found at %s (install the router first, or set weave_bin)"
                             % self.weave_bin)

    def run(self, args, extra_env=None, check=True):
        env = dict(self.env)
        env["WEAVE_PASSWORD"] = ""  # never inherit one: only launch passes it, in the environment
        if extra_env:
            env.update(extra_env)
        rc, out, err = self.module.run_command([self.weave_bin] + list(args), environ_update=env)
        if check and rc != 0:
            msg = (err or out or "").strip().splitlines()
            raise WeaveError("weave %s failed: %s" % (args[0], msg[-1] if msg else "exit status %d" % rc))
        return rc, out, err

    def dry_run(self, config_path):
        """`weave launch --config FILE --dry-run`: the router package checks the settings (a bad one fails
        here with its one-line reason) and says which differ from the running router's and whether that
        needs a restart. Returns its JSON: running, differ, restart, config, peers (normalised, or None)."""
        rc, out, err = self.run(["launch", "--config", config_path, "--dry-run"])
        try:
            data = json.loads(out)
        except ValueError:
            data = None
        ok = (isinstance(data, dict) and isinstance(data.get("running"), bool) and isinstance(data.get("restart"), bool)
              and isinstance(data.get("differ"), list) and all(isinstance(d, str) for d in data["differ"])
              and isinstance(data.get("config"), dict)
              and (data.get("peers") is None or isinstance(data["peers"], list)))
        if not ok:
            raise WeaveError("weave launch --dry-run printed something unexpected")
        return data

    def report(self):
        """The `weave report` JSON, or None when the router is not running."""
        rc, out, err = self.run(["report"], check=False)
        if rc != 0:
            if "not running" in (err or "") + (out or ""):
                return None
            msg = (err or out or "").strip().splitlines()
            raise WeaveError("weave report failed: %s" % (msg[-1] if msg else "exit status %d" % rc))
        try:
            data = json.loads(out)
        except ValueError:
            raise WeaveError("weave report printed something that is not JSON")
        if not isinstance(data, dict) or not isinstance(data.get("router"), dict):
            raise WeaveError("weave report has no router object")
        return data

    def has_persisted_state(self):
        return any(os.path.exists(os.path.join(self.datadir, f)) for f in ("peer-name", "targets.json"))
