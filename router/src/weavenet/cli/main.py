"""`weave` command line."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import sys

from .. import __version__
from ..api import format as fmt
from ..api.client import APIError, Client, RouterNotRunning
from ..ipam.spec import Allocate, Explicit, parse_address_spec
from ..weaver import settings
from ..weaver.config import SETTINGS, RouterConfig
from ..weaver.paths import Paths
from . import daemon, topology, ui


class UsageError(ValueError):
    """Bad input from the command line (exit 2); a ValueError, as the checks it wraps raise."""


PS_FORMATS = ("plain", "table", "json")


def _check_specs(specs: list[str]) -> None:
    """Malformed addresses are a usage error here, before the router is asked."""
    for s in specs:
        try:
            parse_address_spec(s)
        except ValueError as e:
            raise UsageError(str(e)) from None


def _print_ips(cidrs: list[str]) -> None:
    """Addresses as Weave prints them: IPs without prefix, space-separated, one line (none: no line)."""
    if cidrs:
        print(" ".join(c.split("/")[0] for c in cidrs))


class Parser(argparse.ArgumentParser):
    """argparse that reports bad input as one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _add_router_flags(p: argparse.ArgumentParser, launch: bool) -> None:
    p.add_argument("--config", metavar="FILE",
                   help="JSON object of settings (keys as in `weave report` config, plus peers, password, name); "
                        "flags given too override it; with a password it must be mode 0600")
    if launch:
        p.add_argument("--dry-run", action="store_true",
                       help="only check the settings and print as JSON which differ from the running router's "
                            "and whether it needs a restart")
        p.add_argument("--replace", action="store_true",
                       help="for a restart or upgrade: a running router is replaced; the new one loads first, "
                            "then stops the old one as 'weave stop --restart' does (the fast path keeps "
                            "forwarding) and takes over; with no router running, a plain launch")
    else:  # set by launch --replace: the router to stop once this one's code is loaded
        p.add_argument("--takeover", type=int, metavar="PID", help=argparse.SUPPRESS)
    settings.add_flags(p, SETTINGS)


ENVIRONMENT = """environment:
  WEAVE_RUNDIR      the router's socket, pid and API token (default /run/weave)
  WEAVE_DATADIR     persisted state: IPAM ring, attachments, peers (default /var/lib/weave)
  WEAVE_PASSWORD    the mesh password, read by launch/router (never given as an argument)
  WEAVE_LOG_LEVEL   the router's log level: DEBUG, INFO (default), WARNING, ERROR
  DOCKER_HOST       the Docker engine for run, attach and container names (default unix:///var/run/docker.sock)

addresses (ADDR): CIDR or ip:CIDR (as given), net:CIDR (IPAM picks the lowest free address of that
subnet), net:default (of the default subnet). attach/detach/expose/hide print the addresses they added
or removed, space-separated on one line (IPS=$(weave detach C) works as with Weave).

exit status: 0 done, 1 refused (by the router, Docker or the kernel; or the router is not running),
2 usage error (unknown command or flag, malformed argument)"""

ADDR_HELP = "ADDR: CIDR, ip:CIDR, net:CIDR or net:default"


def build_parser() -> Parser:
    p = Parser(prog="weave", description="weavenet: overlay network for Docker hosts", epilog=ENVIRONMENT,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=Parser)
    _add_router_flags(sub.add_parser("launch", help="start the router in the background"), launch=True)
    _add_router_flags(sub.add_parser("router", help="run the router in the foreground"), launch=False)
    sp = sub.add_parser("stop", help="stop the router")
    sp.add_argument("--restart", action="store_true",
                    help="for a restart or upgrade: the fast path (kernel VXLAN) keeps forwarding until the next "
                         "router adopts it, instead of closing")
    sub.add_parser("reset", help="stop the router, delete its persisted state and the weave bridge")
    st = sub.add_parser("status", help="show the router's status")
    st.add_argument("section", nargs="?", choices=sorted([*fmt.SECTIONS, "ipam"]))
    sub.add_parser("report", help="full state as JSON")
    c = sub.add_parser("connect", help="add peers to connect to")
    c.add_argument("--replace", action="store_true", help="replace the current target list")
    c.add_argument("peers", nargs="+", metavar="PEER")
    f = sub.add_parser("forget", help="stop connecting to peers")
    f.add_argument("peers", nargs="+", metavar="PEER")
    sub.add_parser("run", help="docker run a container on the overlay: run [ADDR...] [docker run options] IMAGE "
                   "[CMD...] (see weave run --help)", add_help=False)
    ps = sub.add_parser("ps", help="list containers attached to the overlay (and weave:expose)",
                        description="Default (plain, as Weave's): one line per running attached container, "
                        "ID MAC CIDR... (weave:expose for the host's own addresses). table: with names and "
                        "stopped containers; json: a list of objects (id, name, mac, cidrs, running, hostname).")
    ps.add_argument("--format", choices=PS_FORMATS, default="plain", help="output form (default plain)")
    ps.add_argument("containers", nargs="*", metavar="CONTAINER")
    a = sub.add_parser("attach", help=f"plug a container into the overlay: attach [ADDR...] CONTAINER "
                       f"({ADDR_HELP}; none = net:default); prints the addresses",
                       usage="weave attach [ADDR...] CONTAINER")
    a.add_argument("args", nargs="+", metavar="[ADDR...] CONTAINER")
    d = sub.add_parser("detach", help=f"remove overlay addresses: detach [ADDR...] CONTAINER ({ADDR_HELP}: "
                       "the address in that subnet; none = all); prints the addresses removed",
                       usage="weave detach [ADDR...] CONTAINER")
    d.add_argument("args", nargs="+", metavar="[ADDR...] CONTAINER")
    for cmd, what in (("expose", "give this host addresses on the overlay: expose [ADDR...] (none = net:default); "
                                 "prints them"),
                      ("hide", "take the host's overlay addresses off: hide [ADDR...] (none = net:default); "
                               "prints the addresses removed")):
        e = sub.add_parser(cmd, help=what)
        e.add_argument("cidrs", nargs="*", metavar="ADDR")
    rp = sub.add_parser("rmpeer", help="take over the address space of a peer that is gone for good")
    rp.add_argument("peer", metavar="PEER")
    for cmd, what in (("dns-add", "register names: dns-add [IP...] CONTAINER [--hostname FQDN]"),
                      ("dns-remove", "remove names: dns-remove [IP...] CONTAINER [--hostname FQDN]")):
        # -h FQDN is Weave's spelling (scripts use it); --help, or -h alone, is help.
        dp = sub.add_parser(cmd, help=what, add_help=False,
                            usage=f"weave {cmd} [IP...] CONTAINER [-h FQDN | --hostname FQDN] | --help")
        dp.add_argument("--help", action="help", help="show this help message and exit (also: -h alone)")
        dp.add_argument("-h", "--hostname", dest="fqdn", metavar="FQDN",
                        help="the name (in the weaveDNS domain; default: the container's hostname or name)")
        dp.add_argument("args", nargs="+", metavar="[IP...] CONTAINER")
    dl = sub.add_parser("dns-lookup", help="addresses weaveDNS has for a name")
    dl.add_argument("name", metavar="NAME")
    sub.add_parser("password-check", help="print whether $WEAVE_PASSWORD is the running router's password "
                   "(JSON; for Ansible, which must not see the password anywhere else)")
    sub.add_parser("version", help="print the version")
    topology.add_parser(sub)
    ui.add_parser(sub)
    for action in sub._choices_actions:   # `weave CMD --help` repeats what `weave --help` says of CMD
        cmd_parser = sub.choices[action.dest]
        cmd_parser.description = cmd_parser.description or action.help
    return p


def _config_from(args: argparse.Namespace) -> tuple[RouterConfig, set[str]]:
    """The settings of `--config FILE`, overridden by flags; the password from --password, the file or
    WEAVE_PASSWORD (in that order). Also returns the names of the settings given."""
    try:   # bad values (flags, --config, WEAVE_PASSWORD) are the caller's: a usage error, exit 2
        values = settings.read_config_file(args.config, SETTINGS) if args.config else {}
        values.update(settings.given_flags(args, SETTINGS))
        if values.get("password") is None and os.environ.get("WEAVE_PASSWORD"):
            values["password"] = os.environ["WEAVE_PASSWORD"]
        cfg = RouterConfig(**values)
        cfg.validate()
    except ValueError as e:
        raise UsageError(str(e)) from None
    return cfg, set(values)


def _router_argv(cfg: RouterConfig) -> list[str]:
    return settings.router_argv(cfg.values(), SETTINGS)


def dry_run(cfg: RouterConfig, given: set[str], paths: Paths) -> dict:
    """What `weave launch` with these settings would change: the JSON of `weave launch --dry-run`."""
    out: dict = {"running": False, "differ": [], "restart": False, "config": cfg.public(),
                 "peers": cfg.peers if "peers" in given else None}
    if daemon.running_pid(paths) is None:
        return out
    client = _client(paths)
    router = client.report()["router"]
    current = dict(router.get("config") or {})
    current.setdefault("name", router.get("name"))
    matches = None
    if cfg.password is not None and current.get("encrypted"):
        try:  # constant-time on the router; the report carries nothing to compare offline
            matches = client.json("POST", "/password/check", {"password": cfg.password}).get("matches") is True
        except APIError as e:
            if e.status != 404:  # 404: a router that predates the check; assumed the same password
                raise
    targets = [t for t in router.get("targets") or [] if isinstance(t, str)]
    differ = settings.differences(SETTINGS, cfg.values(), given, current, targets, matches)
    out.update(running=True, differ=differ, restart=settings.needs_restart(SETTINGS, differ))
    return out


def _check_range(cfg: RouterConfig) -> None:
    """Refuse an IPAM range the host already routes elsewhere (containers there would be unreachable)."""
    from ..net.routes import overlapping_routes

    clash = overlapping_routes(ipaddress.IPv4Network(cfg.ipalloc_range))
    if clash:
        raise ValueError(f"--ipalloc-range {cfg.ipalloc_range} overlaps the host route {clash[0]}: "
                         "choose another range")


def _process_age() -> float:
    """Seconds since this process started (/proc): the share of a restart spent before main() runs."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


def run_router(cfg: RouterConfig, paths: Paths, takeover: int | None = None) -> int:
    from ..api.server import start_api
    from ..weaver.app import build_router

    logging.basicConfig(level=os.environ.get("WEAVE_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("weavenet.cli").info("router process started %.2f s ago (Python start and imports)",
                                           _process_age())
    if takeover is not None:
        daemon.takeover(paths, takeover)
        logging.getLogger("weavenet.cli").info("took over from the router of pid %d", takeover)

    async def main() -> int:
        paths.rundir.mkdir(parents=True, exist_ok=True)
        try:
            router = await build_router(cfg, paths)
            await router.start()
        except OSError as e:
            raise SystemExit(f"weave: cannot listen on port {cfg.port}: {e.strerror or e}") from None
        except ValueError as e:  # e.g. persisted IPAM state for another range
            raise SystemExit(f"weave: {e}") from None
        runner = await start_api(router)
        paths.pidfile.write_text(f"{os.getpid()}\n")
        try:
            await router.wait_stopped()
        finally:
            await runner.cleanup()
            for f in (paths.socket, paths.pidfile, paths.api_token):
                f.unlink(missing_ok=True)
        return router.exit_status

    return asyncio.run(main())


def _client(paths: Paths) -> Client:
    return Client.for_paths(paths)


def dispatch(args: argparse.Namespace, paths: Paths) -> int:
    cmd = args.cmd
    if cmd is None:
        raise UsageError("missing command (try 'weave --help')")
    if cmd == "version":
        print(f"weave {__version__}")
    elif cmd == "launch":
        cfg, given = _config_from(args)  # the router checks the range against host routes: its error comes back
        if args.dry_run:
            print(json.dumps(dry_run(cfg, given, paths), indent=2))
            return 0
        print(daemon.launch(paths, _router_argv(cfg), cfg.password, replace=args.replace))
    elif cmd == "router":
        cfg, _ = _config_from(args)
        pid = daemon.running_pid(paths)
        if pid is not None and pid != args.takeover:
            raise RuntimeError(f"weave router is already running (pid {pid})")
        _check_range(cfg)
        status = run_router(cfg, paths, takeover=pid)
        # Everything is closed and released: skip the interpreter's teardown of ~100 modules (0.1-0.3 s that
        # a restart's `weave launch --replace` would wait for, with the sleeve down).
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    elif cmd in ("stop", "reset"):
        was = daemon.stop(paths, restart=cmd == "stop" and args.restart)
        if cmd == "reset":
            for f in paths.persisted_files():
                f.unlink(missing_ok=True)
            from ..weaver.dataplane import remove_links

            remove_links()
        if not was and cmd == "stop":
            print("weave router is not running", file=sys.stderr)
    elif cmd == "status":
        if args.section == "ipam":
            sys.stdout.write(_client(paths).request("GET", "/ipam").decode())
        elif args.section:
            sys.stdout.write(fmt.SECTIONS[args.section](_client(paths).report()))
        else:
            sys.stdout.write(_client(paths).request("GET", "/status").decode())
    elif cmd == "report":
        print(json.dumps(_client(paths).report(), indent=2))
    elif cmd == "topology":
        return topology.run(args, _client(paths).report())
    elif cmd == "ui":
        return ui.run(_client(paths))
    elif cmd in ("attach", "detach"):
        *cidrs, target = args.args
        _check_specs(cidrs)
        r = _client(paths).json("POST", f"/{cmd}", {"target": target, "cidrs": cidrs})
        _print_ips(r.get("added" if cmd == "attach" else "removed", []))
    elif cmd == "rmpeer":
        n = _client(paths).json("POST", "/rmpeer", {"peer": args.peer})["addresses"]
        print(f"{n} addresses taken over from {args.peer}")
    elif cmd in ("dns-add", "dns-remove"):
        *ips, target = args.args
        for ip in ips:
            try:
                ipaddress.IPv4Address(ip)
            except ValueError:
                raise UsageError(f"invalid IP address {ip!r}") from None
        _client(paths).json("POST", f"/{cmd}", {"target": target, "ips": ips, "fqdn": args.fqdn})
    elif cmd == "dns-lookup":
        from urllib.parse import quote

        addrs = _client(paths).json("GET", f"/dns-lookup?name={quote(args.name)}")["addresses"]
        if not addrs:
            print(f"weave: {args.name}: not found", file=sys.stderr)
            return 1
        print("\n".join(addrs))
    elif cmd == "password-check":
        password = os.environ.get("WEAVE_PASSWORD")
        if not password:  # never an argument: `ps` would show it
            raise UsageError("password-check reads the password from WEAVE_PASSWORD, which is empty")
        try:
            r = _client(paths).json("POST", "/password/check", {"password": password})
        except APIError as e:
            if e.status == 404:
                raise RuntimeError("the running router cannot check passwords (it predates /password/check; "
                                   "restart it)") from None
            raise
        print(json.dumps({"matches": r.get("matches") is True}))
    elif cmd in ("expose", "hide"):
        _check_specs(args.cidrs)
        r = _client(paths).json("POST", f"/{cmd}", {"cidrs": args.cidrs})
        _print_ips(r.get("added" if cmd == "expose" else "removed", []))
    elif cmd == "ps":
        rows = _client(paths).json("GET", "/ps")["containers"]
        if args.containers:
            want = set(args.containers)
            rows = [r for r in rows if r["id"] in want or r["name"] in want or r["id"][:12] in want]
        if args.format == "json":
            print(json.dumps(rows, indent=2))
        else:
            sys.stdout.write(fmt.ps_lines(rows) if args.format == "table" else fmt.ps_plain(rows))
    elif cmd in ("connect", "forget"):
        body = {"peers": args.peers, "replace": bool(getattr(args, "replace", False))}
        _client(paths).json("POST", f"/{cmd}", body)
    return 0


def run_help() -> str:
    from ..containers.runargs import option_help

    lines = [""]
    for opt in option_help():   # wrapped by whole options (textwrap would split "--name X")
        if len(lines[-1]) + len(opt) > 100:
            lines.append("")
        lines[-1] += f"  {opt}"
    return "\n".join([
        "usage: weave run [ADDR...] [docker run options] IMAGE [CMD...]",
        "",
        "Runs the container detached (docker run -d), attaches it to the overlay and prints its id; if the",
        "attach fails the container is removed again. With weaveDNS on, it gets the DNS server, the weave",
        "domain to search, and (with --name N) the hostname N.<domain>, unless given.",
        "",
        f"{ADDR_HELP}; none = net:default.",
        "",
        "docker run options taken (short ones cluster: -dit; X: takes a value; any other is refused):",
        *lines,
    ])


def run_container(argv: list[str], paths: Paths) -> int:
    """weave run: docker run -d, then attach; if attaching fails the container is removed again."""
    from ..containers.client import Docker
    from ..containers.runargs import RunArgsError, parse_run_args

    if not argv or argv[0] in ("-h", "--help"):
        if not argv:
            raise UsageError("weave run needs an image: weave run [ADDR...] [docker run options] IMAGE [CMD...]")
        print(run_help())
        return 0
    try:
        spec = parse_run_args(argv)
    except RunArgsError as e:
        raise UsageError(str(e)) from None
    _check_specs(spec.cidrs)
    wanted = [parse_address_spec(c) for c in spec.cidrs]
    client = _client(paths)
    # The router must be up, and explicit addresses free here, before anything is started (attach
    # checks again, atomically; this only spares starting a container just to remove it).
    report = client.report()["router"]
    explicit = {w.interface.ip for w in wanted if isinstance(w, Explicit)}
    for row in [*report["containers"], {"name": "weave:expose", "id": "", "cidrs": report["exposed"]}]:
        taken = explicit & {ipaddress.ip_interface(c).ip for c in row["cidrs"]}
        if taken and row.get("running", True):
            raise ValueError(f"{min(taken)} is already used by {row['name'] or row['id']} on this host")
    cfg = report.get("config", {})
    rng = ipaddress.IPv4Network(cfg.get("ipalloc_range", "10.32.0.0/12"))
    for w in wanted:
        if isinstance(w, Allocate) and w.subnet is not None and not w.subnet.subnet_of(rng):
            raise ValueError(f"subnet {w.subnet} is not inside the allocation range {rng}")
    shared_netns = str(spec.kwargs.get("network", "")).startswith(("host", "container:"))  # Docker refuses --dns
    if cfg.get("dns") and report.get("dns") and not shared_netns:
        # weaveDNS for the container: our server first, the weave domain searched, and a hostname
        # in the domain (so it is registered) unless the user chose one.
        domain = cfg["dns_domain"].rstrip(".")
        spec.kwargs.setdefault("dns", [report["dns"]["address"]])
        spec.kwargs.setdefault("dns_search", [domain])
        if "name" in spec.kwargs and "hostname" not in spec.kwargs:
            spec.kwargs["hostname"] = f"{spec.kwargs['name']}.{domain}"
    docker = Docker()
    info = docker.run(spec)
    try:
        r = client.json("POST", "/attach", {"target": info.id, "cidrs": spec.cidrs})
    except BaseException as e:
        # A command that ends at once may be gone before the router looks: say so, not "not running".
        now = docker.exists(info.id) if isinstance(e, (ValueError, APIError)) else info
        gone = now is None or not now.running
        docker.remove(info.id)
        if gone:
            raise ValueError(f"container {info.name} exited right after start") from None
        raise
    print(info.id)
    if r.get("allocated"):
        print(f"weave: allocated {' '.join(r['allocated'])}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    paths = Paths.from_env()
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] == "run":  # docker options follow: argparse must not touch them
            return run_container(argv[1:], paths)
        if argv[:1] in (["dns-add"], ["dns-remove"]) and argv[1:] == ["-h"]:   # -h alone: help, not a hostname
            argv = [argv[0], "--help"]
        args = build_parser().parse_args(argv)
        return dispatch(args, paths)
    except UsageError as e:
        print(f"weave: {e}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError, RouterNotRunning, APIError) as e:
        msg = str(e)
        print(msg if msg.startswith("weave ") else f"weave: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
