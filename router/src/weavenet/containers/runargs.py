"""`weave run CIDR... [docker run options] IMAGE [CMD...]` -> arguments for the docker SDK.

Pure: no Docker calls. The options table covers what `docker run` users type most; anything else is
refused by name (one line), never silently dropped, so a container is never started with less than
the user asked for.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field


class RunArgsError(ValueError):
    pass


@dataclass
class RunSpec:
    cidrs: list[str]
    image: str
    command: list[str] | None = None
    kwargs: dict = field(default_factory=dict)   # for docker's containers.create()
    pull: str = "missing"                         # docker run --pull: missing | always | never


_ADDRESS_LIKE = re.compile(r"[0-9a-fA-F.:]+/[0-9]+")


def looks_like_address(arg: str) -> bool:
    """A leading argument meant as an address (valid or not) rather than a docker option or the image.

    Malformed ones (10.0.0.300/24) count too, so they are reported as bad addresses instead of being
    taken for an image name; an image never ends in /DIGITS (registry refs look like 10.0.0.5:5000/app).
    """
    return arg.startswith(("net:", "ip:")) or _ADDRESS_LIKE.fullmatch(arg) is not None


def _kv(value: str, what: str) -> tuple[str, str]:
    k, sep, v = value.partition("=")
    if not k:
        raise RunArgsError(f"bad {what} {value!r}: expected KEY=VALUE")
    return k, v if sep else ""


def _env(kw: dict, value: str) -> None:
    kw.setdefault("environment", []).append(value)


def _env_file(kw: dict, value: str) -> None:
    try:
        with open(value) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise RunArgsError(f"cannot read --env-file {value}: {e.strerror}") from None
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            _env(kw, line)


def _label(kw: dict, value: str) -> None:
    k, v = _kv(value, "label")
    kw.setdefault("labels", {})[k] = v


def _sysctl(kw: dict, value: str) -> None:
    k, v = _kv(value, "sysctl")
    kw.setdefault("sysctls", {})[k] = v


def _publish(kw: dict, value: str) -> None:
    """[ip:][host_port:]container_port[/proto]"""
    port, _, proto = value.partition("/")
    parts = port.rsplit(":", 2)
    try:
        cport = f"{int(parts[-1])}/{proto or 'tcp'}"
        if len(parts) == 1:
            host = None
        elif len(parts) == 2:
            host = int(parts[0]) if parts[0] else None
        else:
            host = (parts[0], int(parts[1])) if parts[1] else (parts[0],)
    except ValueError:
        raise RunArgsError(f"bad --publish {value!r}: expected [IP:][HOST_PORT:]PORT[/PROTO]") from None
    kw.setdefault("ports", {})[cport] = host


def _restart(kw: dict, value: str) -> None:
    name, _, count = value.partition(":")
    if name not in ("no", "always", "unless-stopped", "on-failure"):
        raise RunArgsError(f"bad --restart {value!r}: expected no, always, unless-stopped or on-failure[:N]")
    policy: dict = {"Name": "" if name == "no" else name}
    if count:
        if name != "on-failure" or not count.isdigit():
            raise RunArgsError(f"bad --restart {value!r}: only on-failure takes a retry count")
        policy["MaximumRetryCount"] = int(count)
    kw["restart_policy"] = policy


def _cpus(kw: dict, value: str) -> None:
    try:
        kw["nano_cpus"] = int(float(value) * 1e9)
    except ValueError:
        raise RunArgsError(f"bad --cpus {value!r}: expected a number") from None


def _tmpfs(kw: dict, value: str) -> None:
    path, _, opts = value.partition(":")
    kw.setdefault("tmpfs", {})[path] = opts


def _add_host(kw: dict, value: str) -> None:
    host, sep, ip = value.partition(":")
    if not sep or not host or not ip:
        raise RunArgsError(f"bad --add-host {value!r}: expected HOST:IP")
    kw.setdefault("extra_hosts", {})[host] = ip


def _set(key: str) -> Callable[[dict, str], None]:
    def apply(kw: dict, value: str) -> None:
        kw[key] = value
    return apply


def _append(key: str) -> Callable[[dict, str], None]:
    def apply(kw: dict, value: str) -> None:
        kw.setdefault(key, []).append(value)
    return apply


def _true(key: str) -> Callable[[dict, str], None]:
    def apply(kw: dict, value: str) -> None:
        kw[key] = True
    return apply


def _ignore(kw: dict, value: str) -> None:
    pass


# option -> (takes a value, how it lands in the create() kwargs)
_OPTIONS: dict[str, tuple[bool, Callable[[dict, str], None]]] = {
    "--tty": (False, _true("tty")),
    "--interactive": (False, _true("stdin_open")),
    "--detach": (False, _ignore),          # weave run always detaches and prints the id
    "--rm": (False, _true("auto_remove")),
    "--privileged": (False, _true("privileged")),
    "--init": (False, _true("init")),
    "--read-only": (False, _true("read_only")),
    "--name": (True, _set("name")),
    "--hostname": (True, _set("hostname")),
    "--domainname": (True, _set("domainname")),
    "--env": (True, _env),
    "--env-file": (True, _env_file),
    "--volume": (True, _append("volumes")),
    "--label": (True, _label),
    "--workdir": (True, _set("working_dir")),
    "--user": (True, _set("user")),
    "--entrypoint": (True, _set("entrypoint")),
    "--publish": (True, _publish),
    "--restart": (True, _restart),
    "--network": (True, _set("network")),
    "--net": (True, _set("network")),
    "--cap-add": (True, _append("cap_add")),
    "--cap-drop": (True, _append("cap_drop")),
    "--device": (True, _append("devices")),
    "--dns": (True, _append("dns")),
    "--dns-search": (True, _append("dns_search")),
    "--dns-option": (True, _append("dns_opt")),
    "--add-host": (True, _add_host),
    "--memory": (True, _set("mem_limit")),
    "--cpus": (True, _cpus),
    "--tmpfs": (True, _tmpfs),
    "--security-opt": (True, _append("security_opt")),
    "--sysctl": (True, _sysctl),
    "--stop-signal": (True, _set("stop_signal")),
    "--shm-size": (True, _set("shm_size")),
    "--platform": (True, _set("platform")),
    "--mac-address": (True, _set("mac_address")),
    "--pull": (True, _ignore),             # handled by the caller (RunSpec.pull)
}
_SHORT = {"t": "--tty", "i": "--interactive", "d": "--detach", "e": "--env", "v": "--volume", "h": "--hostname",
          "l": "--label", "w": "--workdir", "u": "--user", "p": "--publish", "m": "--memory"}


def option_help() -> list[str]:
    """The docker run options `weave run` takes, for its --help (from the table above: one definition)."""
    short = {long: ch for ch, long in _SHORT.items()}
    return [f"{f'-{short[name]}|' if name in short else ''}{name}{' X' if takes else ''}"
            for name, (takes, _) in _OPTIONS.items()]


def _options(args: list[str]) -> tuple[list[tuple[str, str]], int]:
    """Docker options as (long name, value) up to the image; returns them and the image's index."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return out, i + 1
        if not arg.startswith("-") or arg == "-":
            return out, i
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if name not in _OPTIONS:
                raise RunArgsError(f"unsupported docker run option {name}")
            takes = _OPTIONS[name][0]
            if eq and not takes:
                raise RunArgsError(f"option {name} takes no value")
            if takes and not eq:
                i += 1
                if i >= len(args):
                    raise RunArgsError(f"option {name} needs a value")
                value = args[i]
            out.append((name, value))
        else:
            # Short options cluster like getopt: -ti, -dit, -e K=V, -eK=V.
            letters = arg[1:]
            for j, ch in enumerate(letters):
                name = _SHORT.get(ch)
                if name is None:
                    raise RunArgsError(f"unsupported docker run option -{ch}")
                if _OPTIONS[name][0]:
                    value = letters[j + 1:]
                    if not value:
                        i += 1
                        if i >= len(args):
                            raise RunArgsError(f"option -{ch} needs a value")
                        value = args[i]
                    out.append((name, value))
                    break
                out.append((name, ""))
        i += 1
    return out, i


def parse_run_args(argv: list[str]) -> RunSpec:
    """Split `weave run` arguments into addresses, docker options, image and command."""
    n = 0
    while n < len(argv) and looks_like_address(argv[n]):
        n += 1
    cidrs = argv[:n]
    opts, image_at = _options(argv[n:])
    rest = argv[n + image_at:]
    if not rest:
        raise RunArgsError("weave run needs an image: weave run CIDR... [docker run options] IMAGE [CMD...]")
    kwargs: dict = {}
    pull = "missing"
    for name, value in opts:
        if name == "--pull":
            if value not in ("missing", "always", "never"):
                raise RunArgsError(f"bad --pull {value!r}: expected missing, always or never")
            pull = value
        _OPTIONS[name][1](kwargs, value)
    if kwargs.get("auto_remove") and kwargs.get("restart_policy", {}).get("Name"):
        raise RunArgsError("--rm and --restart cannot be used together")
    return RunSpec(cidrs=cidrs, image=rest[0], command=rest[1:] or None, kwargs=kwargs, pull=pull)
