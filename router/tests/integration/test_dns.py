"""weaveDNS answers that do not fit a datagram, asked with the real `dig` from a namespace on the overlay:
TC when trimmed, and all the records over TCP (asked directly, or by dig's own retry after TC)."""

import shutil

import pytest

from weavenet.lab.netns import sh

from .helpers import report

DNS = "169.254.53.53"
N = 50


def dig(ns: str, *opts: str) -> tuple[list[str], str]:
    """(the A records of many.weave.local, dig's whole output)."""
    p = sh("dig", f"@{DNS}", "many.weave.local", "A", "+tries=1", "+time=5", *opts, netns=ns, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    answers = [line.split()[-1] for line in p.stdout.splitlines()
               if line and not line.startswith(";") and "\tA\t" in line.replace(" ", "\t")]
    return answers, p.stdout


@pytest.fixture
def fifty(lab_factory):
    assert shutil.which("dig"), "dig is missing (scripts/bootstrap installs bind9-dnsutils)"
    lab = lab_factory(1)
    h = lab.host(1)
    h.weave("launch")
    server = lab.add_container(h, "many")
    cidrs = [f"10.40.0.{i}/24" for i in range(1, N + 1)]
    h.weave("attach", *cidrs, f"netns:{server}")
    h.weave("dns-add", f"netns:{server}", "-h", "many.weave.local")
    client = lab.add_container(h, "asker")
    h.weave("attach", "10.40.1.1/24", f"netns:{client}")
    return h, client, {c.split("/")[0] for c in cidrs}


def test_all_records_over_tcp_and_after_tc(fifty):
    h, client, want = fifty
    got, out = dig(client, "+tcp")
    assert sorted(got) == sorted(want), out
    for opts in (("+bufsize=700",), ("+noedns",), ()):  # trimmed over UDP: TC, then dig asks again over TCP
        got, out = dig(client, *opts)
        assert sorted(got) == sorted(want), (opts, out)
    # Without the retry, the UDP answers are visibly cut: TC set, as many records as the size holds.
    for opts, size in ((("+bufsize=700",), 700), (("+noedns",), 512)):
        got, out = dig(client, "+ignore", *opts)
        flags = next(line for line in out.splitlines() if line.startswith(";; flags:"))
        assert " tc" in flags.split(";")[2], out
        assert 20 < len(got) < N and set(got) <= want
        rcvd = int(out.split("MSG SIZE  rcvd:")[1].split()[0])
        assert size - 16 < rcvd <= size, out   # full: one more record (16 bytes) would not have fit
    dns = report(h)["dns"]   # plain dig offers EDNS 1232 bytes: all 50 fit, no TC, no TCP
    assert (dns["truncated"], dns["tcp_answered"]) == (4, 3), {k: v for k, v in dns.items() if k != "records"}
