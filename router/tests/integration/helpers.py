import json
import time

from weavenet.lab.netns import Host


def report(h: Host) -> dict:
    return json.loads(h.weave("report").stdout)["router"]


def established_peers(h: Host) -> set[str]:
    r = report(h)
    return {c["name"] for c in r["connections"] if c["state"] == "established"}


def peer_names(h: Host) -> set[str]:
    return {p["name"] for p in report(h)["peers"]}


def launch_chain(hosts: list[Host], *extra: str) -> list[str]:
    names = []
    for i, h in enumerate(hosts):
        args = ["launch", "--nickname", f"h{h.index}", *extra]
        if i:
            args.append(hosts[i - 1].ip)
        names.append(h.weave(*args).stdout.strip())
    return names


def full_mesh(hosts: list[Host], names: list[str]) -> bool:
    for h, name in zip(hosts, names, strict=True):
        r = report(h)
        if {p["name"] for p in r["peers"]} != set(names):
            return False
        if {c["name"] for c in r["connections"] if c["state"] == "established"} != set(names) - {name}:
            return False
    return True


def log_text(h: Host) -> str:
    time.sleep(0.1)
    return (h.rundir / "weave.log").read_text()
