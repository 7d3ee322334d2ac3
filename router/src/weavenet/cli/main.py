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
from ..router.config import RouterConfig, password_from_env
from ..router.paths import Paths
from . import daemon


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    """argparse that reports bad input as one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _add_router_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--password", help="encrypt the mesh (or set WEAVE_PASSWORD)")
    p.add_argument("--nickname", help="name shown for this peer (default: hostname)")
    p.add_argument("--name", help="peer name, MAC-style (default: generated once and persisted)")
    p.add_argument("--port", type=int, default=6783, help="TCP port for peer connections (default 6783)")
    p.add_argument("--api-port", type=int, default=6784, help="127.0.0.1 port of the HTTP API (0: off)")
    p.add_argument("--conn-limit", type=int, default=100, help="maximum number of connections (default 100)")
    p.add_argument("--no-discovery", action="store_true", help="do not connect to peers learned by gossip")
    p.add_argument("--mtu", type=int, default=1376, help="overlay MTU (default 1376)")
    p.add_argument("--no-fastdp", action="store_true", help="never use the kernel VXLAN fast path")
    p.add_argument("peers", nargs="*", metavar="PEER", help="host[:port] of peers to connect to")


def build_parser() -> Parser:
    p = Parser(prog="weave", description="weavenet: overlay network for Docker hosts")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=Parser)
    _add_router_flags(sub.add_parser("launch", help="start the router in the background"))
    _add_router_flags(sub.add_parser("router", help="run the router in the foreground"))
    sub.add_parser("stop", help="stop the router")
    sub.add_parser("reset", help="stop the router, delete its persisted state and the weave bridge")
    st = sub.add_parser("status", help="show the router's status")
    st.add_argument("section", nargs="?", choices=sorted(fmt.SECTIONS))
    sub.add_parser("report", help="full state as JSON")
    c = sub.add_parser("connect", help="add peers to connect to")
    c.add_argument("--replace", action="store_true", help="replace the current target list")
    c.add_argument("peers", nargs="+", metavar="PEER")
    f = sub.add_parser("forget", help="stop connecting to peers")
    f.add_argument("peers", nargs="+", metavar="PEER")
    sub.add_parser("run", help="docker run a container on the overlay: run CIDR... [docker run options] IMAGE [CMD...]",
                   add_help=False)
    ps = sub.add_parser("ps", help="list containers attached to the overlay (and weave:expose)")
    ps.add_argument("containers", nargs="*", metavar="CONTAINER")
    a = sub.add_parser("attach", help="plug a container into the overlay: attach CIDR... CONTAINER")
    a.add_argument("args", nargs="+", metavar="CIDR... TARGET")
    d = sub.add_parser("detach", help="remove overlay addresses: detach [CIDR...] CONTAINER")
    d.add_argument("args", nargs="+", metavar="[CIDR...] TARGET")
    for cmd, what in (("expose", "give this host an address on the overlay"), ("hide", "undo expose")):
        e = sub.add_parser(cmd, help=what)
        e.add_argument("cidrs", nargs="+", metavar="CIDR")
    sub.add_parser("version", help="print the version")
    return p


def _config_from(args: argparse.Namespace) -> RouterConfig:
    cfg = RouterConfig(peers=list(args.peers), password=password_from_env(args.password), name=args.name,
                       port=args.port, api_port=args.api_port, conn_limit=args.conn_limit,
                       discovery=not args.no_discovery, mtu=args.mtu, fastdp=not args.no_fastdp)
    if args.nickname is not None:
        cfg.nickname = args.nickname
    cfg.validate()
    return cfg


def _router_argv(args: argparse.Namespace, cfg: RouterConfig) -> list[str]:
    argv = ["--nickname", cfg.nickname, "--port", str(cfg.port), "--api-port", str(cfg.api_port),
            "--conn-limit", str(cfg.conn_limit), "--mtu", str(cfg.mtu)]
    if cfg.name:
        argv += ["--name", cfg.name]
    if not cfg.discovery:
        argv.append("--no-discovery")
    if not cfg.fastdp:
        argv.append("--no-fastdp")
    return argv + cfg.peers


def run_router(cfg: RouterConfig, paths: Paths) -> int:
    from ..api.server import start_api
    from ..router.runtime import Router

    logging.basicConfig(level=os.environ.get("WEAVE_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def main() -> None:
        paths.rundir.mkdir(parents=True, exist_ok=True)
        router = Router(cfg, paths)
        try:
            await router.start()
        except OSError as e:
            raise SystemExit(f"weave: cannot listen on port {cfg.port}: {e.strerror or e}") from None
        runner = await start_api(router)
        paths.pidfile.write_text(f"{os.getpid()}\n")
        try:
            await router.wait_stopped()
        finally:
            await runner.cleanup()
            for f in (paths.socket, paths.pidfile):
                f.unlink(missing_ok=True)

    asyncio.run(main())
    return 0


def _client(paths: Paths) -> Client:
    return Client(paths.socket)


def dispatch(args: argparse.Namespace, paths: Paths) -> int:
    cmd = args.cmd
    if cmd is None:
        raise UsageError("missing command (try 'weave --help')")
    if cmd == "version":
        print(f"weave {__version__}")
    elif cmd == "launch":
        cfg = _config_from(args)
        print(daemon.launch(paths, _router_argv(args, cfg), cfg.password))
    elif cmd == "router":
        cfg = _config_from(args)
        if daemon.running_pid(paths) is not None:
            raise RuntimeError(f"weave router is already running (pid {daemon.running_pid(paths)})")
        return run_router(cfg, paths)
    elif cmd in ("stop", "reset"):
        was = daemon.stop(paths)
        if cmd == "reset":
            for f in paths.persisted_files():
                f.unlink(missing_ok=True)
            from ..router.dataplane import remove_links

            remove_links()
        if not was and cmd == "stop":
            print("weave router is not running", file=sys.stderr)
    elif cmd == "status":
        if args.section:
            sys.stdout.write(fmt.SECTIONS[args.section](_client(paths).report()))
        else:
            sys.stdout.write(_client(paths).request("GET", "/status").decode())
    elif cmd == "report":
        print(json.dumps(_client(paths).report(), indent=2))
    elif cmd in ("attach", "detach"):
        *cidrs, target = args.args
        if cmd == "attach" and not cidrs:
            raise UsageError("usage: weave attach CIDR... CONTAINER (or netns:NAME, pid:PID)")
        r = _client(paths).json("POST", f"/{cmd}", {"target": target, "cidrs": cidrs})
        if cmd == "attach":
            print(" ".join(a.split("/")[0] for a in r.get("addresses", [])))
    elif cmd in ("expose", "hide"):
        _client(paths).json("POST", f"/{cmd}", {"cidrs": args.cidrs})
    elif cmd == "ps":
        rows = _client(paths).json("GET", "/ps")["containers"]
        if args.containers:
            want = set(args.containers)
            rows = [r for r in rows if r["id"] in want or r["name"] in want or r["id"][:12] in want]
        sys.stdout.write(fmt.ps_lines(rows))
    elif cmd in ("connect", "forget"):
        body = {"peers": args.peers, "replace": bool(getattr(args, "replace", False))}
        _client(paths).json("POST", f"/{cmd}", body)
    return 0


def run_container(argv: list[str], paths: Paths) -> int:
    """weave run: docker run -d, then attach; if attaching fails the container is removed again."""
    from ..containers.client import Docker
    from ..containers.runargs import RunArgsError, parse_run_args
    from ..net.addrs import parse_cidrs

    if not argv or argv[0] in ("-h", "--help"):
        print("usage: weave run CIDR... [docker run options] IMAGE [CMD...]")
        return 0 if argv else 2
    try:
        spec = parse_run_args(argv)
    except RunArgsError as e:
        raise UsageError(str(e)) from None
    if not spec.cidrs:
        raise UsageError("weave run needs at least one CIDR before the docker options, e.g. 10.0.0.1/24")
    wanted = {i.ip for i in parse_cidrs(spec.cidrs)}
    client = _client(paths)
    # The router must be up, and the addresses free here, before anything is started (attach checks
    # again, atomically; this only spares starting a container just to remove it).
    for row in client.json("GET", "/ps")["containers"]:
        taken = wanted & {ipaddress.ip_interface(c).ip for c in row["cidrs"]}
        if taken and row.get("running", True):
            raise ValueError(f"{min(taken)} is already used by {row['name'] or row['id']} on this host")
    docker = Docker()
    info = docker.run(spec)
    try:
        client.json("POST", "/attach", {"target": info.id, "cidrs": spec.cidrs})
    except BaseException:
        docker.remove(info.id)
        raise
    print(info.id)
    return 0


def main(argv: list[str] | None = None) -> int:
    paths = Paths.from_env()
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] == "run":  # docker options follow: argparse must not touch them
            return run_container(argv[1:], paths)
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
