# -*- coding: utf-8 -*-
# Copyright: weavenet developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Declared container versus running container, field by field (pure: no Docker, no router).

The shape of community.docker's docker_container comparisons: a table of fields, each saying how to read
the live value from `docker inspect`, what the declaration means when the field is not declared (the
image's own value, or what `weave run` sets), how to normalise both sides, how to compare them, and how a
difference is applied: `recreate` (Docker cannot change it on a container) or `update` (docker update).

Env and labels are compared strictly against the image's own env/labels with the declared ones on top,
so variables and labels that come from the image are not differences, and removing a declared one is.
"""

from __future__ import annotations

import ipaddress
import re
import shlex

from ansible.module_utils.six import string_types

RESTART_POLICIES = ("no", "on-failure", "always", "unless-stopped")
PORT_PROTOCOLS = ("tcp", "udp", "sctp")
SHARED_NETNS_PREFIXES = ("host", "container:")   # Docker refuses --dns there, weave run sets none
_DIGITS = re.compile(r"^[0-9]{1,5}$")


class SpecError(ValueError):
    """A declared value that cannot be run; the message names the option."""


# --- the declared side: checks and normalisation ------------------------------------------------------
def command_list(value, option="command"):
    """A command or entrypoint as a list (a string is split like a shell would); None stays None."""
    if value is None:
        return None
    if isinstance(value, string_types):
        try:
            return shlex.split(value)
        except ValueError as e:
            raise SpecError("%s: %s" % (option, e))
    if isinstance(value, (list, tuple)):
        return [str(c) for c in value]
    raise SpecError("%s must be a string or a list" % option)


def string_map(value, option):
    """env/labels: string keys and values; numbers are converted, booleans refused (yes/true/True?)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SpecError("%s must be a mapping" % option)
    out = {}
    for k, v in value.items():
        if not isinstance(k, string_types) or not k or "=" in k:
            raise SpecError("%s: bad key %r" % (option, k))
        if isinstance(v, bool):
            raise SpecError("%s.%s is a boolean: quote it (e.g. '%s') so it is passed as you mean it"
                            % (option, k, str(v).lower()))
        if v is None:
            v = ""
        if not isinstance(v, (string_types, int, float)):
            raise SpecError("%s.%s must be a string" % (option, k))
        out[k] = str(v)
    return out


def parse_port(spec):
    """'[IP:][HOST_PORT:]PORT[/PROTO]' -> (ip, host_port, 'PORT/proto'), the strings Docker keeps."""
    text = str(spec).strip()
    bad = SpecError("ports: bad entry %r (expected [IP:][HOST_PORT:]PORT[/tcp|udp|sctp])" % (spec,))
    text, dummy, proto = text.partition("/")
    proto = proto or "tcp"
    if proto not in PORT_PROTOCOLS:
        raise SpecError("ports: bad protocol in %r (tcp, udp or sctp)" % (spec,))
    ip = ""
    if text.startswith("["):   # [IPv6]:HOST_PORT:PORT
        ip, sep, text = text[1:].partition("]:")
        if not sep:
            raise bad
        parts = text.split(":")
        if len(parts) != 2:
            raise bad
    else:
        parts = text.split(":")
        if len(parts) == 3:
            ip = parts.pop(0)
        elif len(parts) > 3:
            raise bad
    port, host = parts[-1], parts[0] if len(parts) == 2 else ""
    if not _DIGITS.match(port) or (host and not _DIGITS.match(host)) or (len(parts) == 2 and not ip and not host):
        raise bad   # IP::PORT leaves the host port to Docker; :PORT says nothing
    for p in (port, host):
        if p and not 1 <= int(p) <= 65535:
            raise SpecError("ports: port out of range in %r (1-65535)" % (spec,))
    if ip or len(parts) == 3:
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            raise SpecError("ports: bad address in %r" % (spec,))
    return ip, str(int(host)) if host else "", "%d/%s" % (int(port), proto)


def ports_set(specs):
    """Sorted 'IP:HOST_PORT:PORT/proto' strings; one binding per container port (what weave run takes)."""
    seen = {}
    out = []
    for spec in specs or []:
        ip, host, cport = parse_port(spec)
        if cport in seen:
            raise SpecError("ports: %s is published twice (%r and %r)" % (cport, seen[cport], spec))
        seen[cport] = spec
        out.append("%s:%s:%s" % (ip, host, cport))
    return sorted(out)


def normalize_volume(spec):
    """'SRC:DST[:OPTS]' or 'DST' -> 'SRC:DST:OPTS' with the options sorted and the default rw dropped."""
    parts = str(spec).split(":")
    if not 1 <= len(parts) <= 3 or not all(parts[:2]):
        raise SpecError("volumes: bad entry %r (expected SOURCE:DEST[:OPTIONS] or DEST)" % (spec,))
    if len(parts) == 1:
        src, dst, opts = "", parts[0], ""
    else:
        src, dst, opts = parts[0], parts[1], parts[2] if len(parts) == 3 else ""
    if not dst.startswith("/"):
        raise SpecError("volumes: the container path in %r must be absolute" % (spec,))
    flags = sorted(o for o in opts.split(",") if o and o != "rw")
    return "%s:%s:%s" % (src, dst, ",".join(flags))


def volumes_set(specs):
    return sorted(normalize_volume(v) for v in specs or [])


def restart_value(policy, retries):
    """'no' | 'always' | 'unless-stopped' | 'on-failure' | 'on-failure:N' (N > 0 only for on-failure)."""
    policy = policy or "no"
    if policy not in RESTART_POLICIES:
        raise SpecError("restart_policy must be one of %s" % ", ".join(RESTART_POLICIES))
    if retries:
        if policy != "on-failure":
            raise SpecError("restart_retries is only for restart_policy on-failure")
        if retries < 0:
            raise SpecError("restart_retries must not be negative")
        return "on-failure:%d" % retries
    return policy


def etc_hosts_list(value):
    """etc_hosts {name: ip} -> sorted 'name:ip' (Docker's ExtraHosts)."""
    out = []
    for name, ip in (string_map(value, "etc_hosts") or {}).items():
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise SpecError("etc_hosts.%s: %r is not an IP address" % (name, ip))
        out.append("%s:%s" % (name, ip))
    return sorted(out)


def check_params(p):
    """Every declared value checked before anything is done (raises SpecError naming the option)."""
    command_list(p.get("command"))
    command_list(p.get("entrypoint"), "entrypoint")
    string_map(p.get("env"), "env")
    string_map(p.get("labels"), "labels")
    ports_set(p.get("ports"))
    volumes_set(p.get("volumes"))
    restart_value(p.get("restart_policy"), p.get("restart_retries"))
    etc_hosts_list(p.get("etc_hosts"))


# --- the live side: docker inspect readers ---------------------------------------------------------------
def _cfg(info):
    return (info or {}).get("Config") or {}


def _host(info):
    return (info or {}).get("HostConfig") or {}


def env_dict(env_list):
    out = {}
    for item in env_list or []:
        k, dummy, v = str(item).partition("=")
        out[k] = v
    return out


def live_ports(info):
    out = []
    for cport, bindings in sorted((_host(info).get("PortBindings") or {}).items()):
        for b in bindings or [{}]:
            host = (b or {}).get("HostPort") or ""
            ip = (b or {}).get("HostIp") or ""
            if ip:
                ip = str(ipaddress.ip_address(ip.strip("[]")))
            out.append("%s:%s:%s" % (ip, str(int(host)) if host else "", cport))
    return sorted(out)


def live_volumes(info, ctx):
    """Binds, plus anonymous volumes (Config.Volumes) that are neither the image's nor a bind's target."""
    binds = volumes_set(_host(info).get("Binds"))
    targets = set(b.split(":")[1] for b in binds)
    if not ctx.image:   # which anonymous volumes the image brings is unknown: the binds only
        return binds
    image_volumes = ctx.image_cfg().get("Volumes") or {}
    anon = [":%s:" % v for v in (_cfg(info).get("Volumes") or {}) if v not in image_volumes and v not in targets]
    return sorted(set(binds + anon))


def live_restart(info):
    rp = _host(info).get("RestartPolicy") or {}
    name = rp.get("Name") or "no"
    if name == "on-failure" and rp.get("MaximumRetryCount"):
        return "on-failure:%d" % rp["MaximumRetryCount"]
    return name


def live_hostname(info):
    c = _cfg(info)
    host, domain = c.get("Hostname") or "", c.get("Domainname") or ""
    return "%s.%s" % (host, domain) if domain else host


def network_mode(value):
    return "bridge" if value in (None, "", "default") else value


# --- the table ------------------------------------------------------------------------------------------
class Context(object):
    """What the declaration's defaults depend on: the image's config and what `weave run` adds.

    image: `docker image inspect` of the declared image (or None when it is not on the host);
    weave_dns: (resolver address, domain without the dot) when the router runs weaveDNS, else None."""

    def __init__(self, params, image=None, weave_dns=None):
        self.p = params
        self.image = image
        self.weave_dns = weave_dns

    def image_cfg(self):
        return _cfg(self.image)

    def shared_netns(self):
        return network_mode(self.p.get("network_mode")).startswith(SHARED_NETNS_PREFIXES)

    def dns_defaults(self):
        return self.weave_dns if self.weave_dns and not self.shared_netns() else None


IGNORE = object()   # no declared value and no known default: not compared


def _want_command(ctx):
    cmd = command_list(ctx.p.get("command"))
    if cmd is not None:
        return cmd
    if ctx.p.get("entrypoint") is not None:   # Docker: a new entrypoint drops the image's Cmd
        return []
    return list(ctx.image_cfg().get("Cmd") or []) if ctx.image else IGNORE


def _want_entrypoint(ctx):
    ep = command_list(ctx.p.get("entrypoint"), "entrypoint")
    if ep is not None:
        return ep
    return list(ctx.image_cfg().get("Entrypoint") or []) if ctx.image else IGNORE


def _want_env(ctx):
    if not ctx.image:
        return IGNORE
    env = env_dict(ctx.image_cfg().get("Env"))
    env.update(string_map(ctx.p.get("env"), "env") or {})
    return env


def _have_env(info, ctx):
    env = env_dict(_cfg(info).get("Env"))
    declared = string_map(ctx.p.get("env"), "env") or {}
    image_env = env_dict(ctx.image_cfg().get("Env"))
    if _cfg(info).get("Tty") and "TERM" not in declared and "TERM" not in image_env:
        env.pop("TERM", None)   # docker adds TERM=xterm to a container with a tty
    return env


def _want_labels(ctx):
    if not ctx.image:
        return IGNORE
    labels = dict(ctx.image_cfg().get("Labels") or {})
    labels.update(string_map(ctx.p.get("labels"), "labels") or {})
    return labels


def _want_image_value(ctx, key, option):
    value = ctx.p.get(option)
    if value is not None:
        return value
    return ctx.image_cfg().get(key) or "" if ctx.image else IGNORE


def _want_hostname(ctx):
    if ctx.p.get("hostname"):
        return ctx.p["hostname"]
    dns = ctx.dns_defaults()
    return "%s.%s" % (ctx.p["name"], dns[1]) if dns else IGNORE   # Docker's default is the id: any


def _want_dns(ctx):
    if ctx.p.get("dns"):
        return list(ctx.p["dns"])
    dns = ctx.dns_defaults()
    return [dns[0]] if dns else []


def _want_dns_search(ctx):
    if ctx.p.get("dns_search"):
        return list(ctx.p["dns_search"])
    dns = ctx.dns_defaults()
    return [dns[1]] if dns else []


class Field(object):
    """One row: name, live reader, desired value (or IGNORE), comparison (strict | allow_more_present),
    how a difference is applied (recreate | update)."""

    def __init__(self, name, have, want, comparison="strict", apply="recreate"):
        self.name = name
        self.have = have
        self.want = want
        self.comparison = comparison
        self.apply = apply

    def differs(self, have, want):
        if want is IGNORE:
            return False
        if self.comparison == "allow_more_present":
            if isinstance(want, dict):
                return any(k not in have or have[k] != v for k, v in want.items())
            return not set(want) <= set(have)
        return have != want


FIELDS = (
    Field("image", lambda info, ctx: (info or {}).get("Image") or "",
          lambda ctx: ctx.image["Id"] if ctx.image else ctx.p["image"]),
    Field("command", lambda info, ctx: list(_cfg(info).get("Cmd") or []), _want_command),
    Field("entrypoint", lambda info, ctx: list(_cfg(info).get("Entrypoint") or []), _want_entrypoint),
    Field("env", _have_env, _want_env),
    Field("labels", lambda info, ctx: dict(_cfg(info).get("Labels") or {}), _want_labels),
    Field("volumes", live_volumes,
          lambda ctx: volumes_set(ctx.p.get("volumes"))),
    Field("ports", lambda info, ctx: live_ports(info), lambda ctx: ports_set(ctx.p.get("ports"))),
    Field("restart_policy", lambda info, ctx: live_restart(info),
          lambda ctx: restart_value(ctx.p.get("restart_policy"), ctx.p.get("restart_retries")), apply="update"),
    Field("hostname", lambda info, ctx: live_hostname(info), _want_hostname),
    Field("user", lambda info, ctx: _cfg(info).get("User") or "", lambda ctx: _want_image_value(ctx, "User", "user")),
    Field("working_dir", lambda info, ctx: _cfg(info).get("WorkingDir") or "",
          lambda ctx: _want_image_value(ctx, "WorkingDir", "working_dir")),
    Field("network_mode", lambda info, ctx: network_mode(_host(info).get("NetworkMode")),
          lambda ctx: network_mode(ctx.p.get("network_mode"))),
    Field("dns", lambda info, ctx: list(_host(info).get("Dns") or []), _want_dns),
    Field("dns_search", lambda info, ctx: list(_host(info).get("DnsSearch") or []), _want_dns_search),
    Field("dns_opts", lambda info, ctx: sorted(_host(info).get("DnsOptions") or []),
          lambda ctx: sorted(ctx.p.get("dns_opts") or [])),
    Field("etc_hosts", lambda info, ctx: sorted(_host(info).get("ExtraHosts") or []),
          lambda ctx: etc_hosts_list(ctx.p.get("etc_hosts"))),
    Field("tty", lambda info, ctx: bool(_cfg(info).get("Tty")), lambda ctx: bool(ctx.p.get("tty"))),
    Field("interactive", lambda info, ctx: bool(_cfg(info).get("OpenStdin")),
          lambda ctx: bool(ctx.p.get("interactive"))),
)
FIELD_NAMES = tuple(f.name for f in FIELDS)


class Difference(object):
    def __init__(self, field, before, after, apply):
        self.field = field
        self.before = before
        self.after = after
        self.apply = apply

    def __repr__(self):
        return "Difference(%r, %r, %r, %r)" % (self.field, self.before, self.after, self.apply)


def differences(info, ctx):
    """The fields of the running container `info` (docker inspect) that differ from the declaration."""
    out = []
    for f in FIELDS:
        want = f.want(ctx)
        have = f.have(info, ctx)
        if f.differs(have, want):
            out.append(Difference(f.name, have, want, f.apply))
    return out


class Plan(object):
    """What to do with an existing container: recreate, update in place (`docker update` arguments), or
    nothing; `diff` is the before/after of the differing fields (for --diff)."""

    def __init__(self, diffs):
        self.diffs = diffs
        self.recreate = any(d.apply == "recreate" for d in diffs)
        self.update_args = [] if self.recreate else update_args(diffs)

    def diff(self):
        return ({d.field: d.before for d in self.diffs}, {d.field: d.after for d in self.diffs})


def update_args(diffs):
    """`docker update` options for in-place differences."""
    args = []
    for d in diffs:
        if d.field == "restart_policy":
            args += ["--restart", d.after]
    return args


def plan(info, ctx, force_recreate=False):
    p = Plan(differences(info, ctx))
    if force_recreate and not p.recreate:
        p.recreate, p.update_args = True, []
    return p
