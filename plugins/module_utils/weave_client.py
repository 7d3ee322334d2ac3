# -*- coding: utf-8 -*-
# Copyright: weavenet developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Shared code of the weavenet.mesh modules: run the router's `weave` CLI, read `weave report`,
and the pure desired-versus-current comparisons (unit-tested without a router)."""

from __future__ import annotations

import ipaddress
import json
import os

DEFAULT_WEAVE_BIN = "/opt/weavenet/venv/bin/weave"
DEFAULT_PORT = 6783

# weave_router settings that need a restart when they differ; compared only when the user set them.
RESTART_SETTINGS = ("nickname", "conn_limit", "discovery", "mtu", "fastdp", "port",
                    "ipalloc_range", "ipalloc_default_subnet", "dns", "dns_domain", "dns_ttl")

COMMON_ARGS = dict(
    weave_bin=dict(type="path", default=DEFAULT_WEAVE_BIN),
    rundir=dict(type="path"),
    datadir=dict(type="path"),
)


class WeaveError(Exception):
    """A failure worth one line in fail_json."""


def normalize_peer(peer, default_port=DEFAULT_PORT):
    """'192.0.2.1' -> '192.0.2.1:6783'; 'host:7000' stays; '[fe80::1]:6783' stays; a bare IPv6 gets brackets."""
    peer = str(peer).strip()
    if not peer:
        raise WeaveError("empty peer address")
    if peer.startswith("["):
        if "]:" in peer:
            return peer
        return "%s:%d" % (peer, default_port)
    if peer.count(":") > 1:  # bare IPv6
        return "[%s]:%d" % (peer, default_port)
    if ":" in peer:
        host, port = peer.rsplit(":", 1)
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise WeaveError("invalid port in peer address %r" % peer)
        return "%s:%d" % (host, int(port))
    return "%s:%d" % (peer, default_port)


def _normalized_unique(normalize, items):
    """Each item normalized, in order, the first of equal ones kept."""
    return list(dict.fromkeys(normalize(i) for i in items or []))


def normalize_peers(peers):
    return _normalized_unique(normalize_peer, peers)


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


def running_config(router):
    """The running router's settings: router.config when the router reports it, else the older top-level keys."""
    cfg = dict(router.get("config") or {})
    dp = router.get("dataplane") or {}
    fallbacks = {
        "nickname": router.get("nickname"),
        "conn_limit": router.get("conn_limit"),
        "discovery": router.get("discovery"),
        "mtu": dp.get("mtu"),
        "fastdp": dp.get("fastdp"),
        "port": router.get("port"),
        "encrypted": router.get("encryption"),
    }
    for key, value in fallbacks.items():
        if cfg.get(key) is None and value is not None:
            cfg[key] = value
    return cfg


def router_settings_diff(desired, current, password=None, password_matches=None):
    """Settings that differ and need a restart: a list of names (sorted, stable).

    desired: the module's settings (None = not managed); current: running_config(); password: the desired
    password or None (= unencrypted); password_matches: what the running router answered to
    WeaveClient.password_matches() (None = it cannot tell: assumed unchanged).
    """
    changed = []
    for key in RESTART_SETTINGS:
        want = desired.get(key)
        if want is None or key not in current:  # unset, or a router too old to report it
            continue
        have = current.get(key)
        if have is None or _canonical(key, want) != _canonical(key, have):
            changed.append(key)
    want_encrypted = bool(password)
    have_encrypted = bool(current.get("encrypted"))
    if want_encrypted != have_encrypted:
        changed.append("encryption")
    elif want_encrypted and password_matches is False:
        changed.append("password")
    return changed


def _canonical(key, value):
    if key == "dns_domain":
        return str(value).rstrip(".").lower() + "."
    if key in ("ipalloc_range", "ipalloc_default_subnet"):
        try:
            return str(ipaddress.ip_network(str(value), strict=False))
        except ValueError:
            return value
    return value


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


def launch_args(settings, peers):
    """`weave launch` arguments (never the password: that goes in the environment)."""
    argv = []
    if settings.get("nickname") is not None:
        argv += ["--nickname", settings["nickname"]]
    if settings.get("port") is not None:
        argv += ["--port", str(settings["port"])]
    if settings.get("conn_limit") is not None:
        argv += ["--conn-limit", str(settings["conn_limit"])]
    if settings.get("mtu") is not None:
        argv += ["--mtu", str(settings["mtu"])]
    if settings.get("discovery") is False:
        argv.append("--no-discovery")
    if settings.get("fastdp") is False:
        argv.append("--no-fastdp")
    if settings.get("ipalloc_range"):
        argv += ["--ipalloc-range", settings["ipalloc_range"]]
    if settings.get("ipalloc_default_subnet"):
        argv += ["--ipalloc-default-subnet", settings["ipalloc_default_subnet"]]
    if settings.get("dns") is False:
        argv.append("--no-dns")
    if settings.get("dns_domain"):
        argv += ["--dns-domain", settings["dns_domain"]]
    if settings.get("dns_ttl") is not None:
        argv += ["--dns-ttl", str(settings["dns_ttl"])]
    return argv + list(peers or [])


class WeaveClient(object):
    """Runs `weave` for a module. Every call goes through module.run_command (no shell)."""

    def __init__(self, module):
        self.module = module
        p = module.params
        self.weave_bin = p.get("weave_bin") or DEFAULT_WEAVE_BIN
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

    def password_matches(self, password):
        """Whether the running router's password is `password` (`weave password-check`, authenticated with
        the router's API token; the password goes in the environment only). None when the router is too old
        to tell."""
        rc, out, err = self.run(["password-check"], extra_env={"WEAVE_PASSWORD": password}, check=False)
        if rc != 0:
            msg = (err or out or "").strip().splitlines()
            if msg and ("cannot check passwords" in msg[-1] or "invalid choice" in msg[-1]):
                return None
            raise WeaveError("weave password-check failed: %s" % (msg[-1] if msg else "exit status %d" % rc))
        try:
            data = json.loads(out)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("matches"), bool):
            raise WeaveError("weave password-check printed something unexpected")
        return data["matches"]

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
