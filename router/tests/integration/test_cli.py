"""Bad input and daemon handling of the weave command, and its authenticated local API."""

import json
import stat

from .helpers import report


def test_bad_input_is_one_clear_line(lab_factory):
    lab = lab_factory(1)
    h = lab.host(1)
    cases = {
        ("frobnicate",): "invalid choice",
        ("launch", "not a host!"): "bad peer address",
        ("launch", "--port", "70000"): "invalid --port 70000",
        ("launch", "--port", "x"): "invalid int value",
        ("launch", "192.0.2.9:0"): "port 0 out of range",
        ("launch", "--name", "zz:zz"): "invalid peer name",
        ("launch", "--conn-limit", "0"): "invalid --conn-limit 0",
        ("status",): "weave router is not running (no socket at",
        ("connect", "192.0.2.9"): "weave router is not running",
    }
    for args, expected in cases.items():
        p = h.weave(*args, check=False)
        assert p.returncode != 0, args
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (args, p.stderr)
        assert p.stdout == ""
    # Nothing half-done: no router, no socket left behind by the refused launches.
    assert h.router_pid() is None and not (h.rundir / "weave.sock").exists()


def test_launch_twice_and_stop(lab_factory):
    lab = lab_factory(1)
    h = lab.host(1)
    name = h.weave("launch").stdout.strip()
    assert report(h)["name"] == name
    p = h.weave("launch", check=False)
    assert p.returncode != 0 and "already running" in p.stderr
    p = h.weave("connect", "bad:address:x", check=False)
    assert p.returncode != 0 and "bad peer address" in p.stderr
    h.weave("stop")
    assert h.router_pid() is None
    assert not (h.rundir / "weave.sock").exists()
    assert h.weave("status", check=False).returncode != 0


# A raw request to the router's TCP API from inside the host's namespace: (status, body). Only the
# stdlib http.client, which sends exactly the headers given (plus Host, Content-Length).
_RAW = """
import http.client, json, sys
method, path, body, headers = json.loads(sys.argv[1])
c = http.client.HTTPConnection("127.0.0.1", 6784, timeout=10)
c.request(method, path, body=body.encode() if body is not None else None, headers=headers)
r = c.getresponse()
print(json.dumps([r.status, r.read().decode(errors="replace")]))
"""


def _raw(h, method: str, path: str, body: str | None = None, headers: dict | None = None) -> tuple[int, str]:
    p = h.exec("python3", "-c", _RAW, json.dumps([method, path, body, headers or {}]))
    status, text = json.loads(p.stdout)
    return status, text


def test_api_needs_the_token_and_the_cli_sends_it(lab_factory):
    lab = lab_factory(2)
    a, b = lab.hosts
    a.weave("launch", "--password", "pw one")
    b.weave("launch")
    token_file = a.rundir / "api-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((a.rundir / "weave.sock").stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 43
    # The CLI works end to end: it reads the token.
    assert "Encryption: enabled" in a.weave("status").stdout
    a.weave("connect", b.ip)
    assert f"{b.ip}:6783" in report(a)["targets"]
    assert "password_fingerprint" not in report(a)["config"]
    check = a.weave("password-check", env={"WEAVE_PASSWORD": "pw one"})
    assert json.loads(check.stdout) == {"matches": True}
    check = a.weave("password-check", env={"WEAVE_PASSWORD": "pw two"})
    assert json.loads(check.stdout) == {"matches": False}
    # Raw requests on 127.0.0.1:6784 without the token, or from a web page, reach nothing.
    assert _raw(a, "GET", "/report")[0] == 401
    assert _raw(a, "POST", "/attach", '{"target": "pid:1"}', {"Content-Type": "application/json"})[0] == 401
    assert _raw(a, "POST", "/connect", '{"peers": ["192.0.2.9"]}', {"Content-Type": "text/plain"})[0] == 401
    auth = {"Authorization": f"Bearer {token}"}
    assert _raw(a, "POST", "/connect", '{"peers": ["192.0.2.9"]}', {**auth, "Content-Type": "text/plain"})[0] == 415
    assert _raw(a, "GET", "/report", headers={**auth, "Host": "evil.example:6784"})[0] == 403
    assert _raw(a, "GET", "/report", headers={**auth, "Origin": "https://evil.example"})[0] == 403
    assert "192.0.2.9:6783" not in report(a)["targets"]
    status, text = _raw(a, "GET", "/report", headers=auth)
    assert status == 200 and json.loads(text)["router"]["name"]
    assert _raw(a, "GET", "/metrics")[0] == 200  # scraped without the token
    # A refused CLI says so in one line and fails.
    token_file.write_text("not-the-token\n")
    p = a.weave("status", check=False)
    assert p.returncode == 1 and p.stdout == ""
    assert len(p.stderr.strip().splitlines()) == 1 and "token" in p.stderr, p.stderr
    token_file.write_text(f"{token}\n")
    a.weave("stop")
    assert not token_file.exists()  # removed with the socket when the router stops


def test_weave_address_flavours_and_what_the_commands_print(lab_factory):
    """As Weave's scripts use them: IPS=$(weave attach/detach/expose/hide ...), ip:/net: forms, ps lines."""
    import re

    lab = lab_factory(1)
    h = lab.host(1)
    h.weave("launch")
    ns = lab.add_container(h, "flav")
    out = lambda *args: h.weave(*args).stdout  # noqa: E731
    assert out("attach", "ip:10.2.1.1/24", "net:default", "net:10.33.0.0/24", f"netns:{ns}") == \
        "10.2.1.1 10.32.0.1 10.33.0.1\n"   # the lowest free address of each subnet
    inside = h.exec("ip", "netns", "exec", ns, "ip", "-4", "-o", "addr", "show", "ethwe").stdout
    assert all(a in inside for a in ("10.2.1.1/24", "10.32.0.1/12", "10.33.0.1/24"))
    line = out("ps", f"netns:{ns}")
    assert re.fullmatch(rf"netns:{ns} [0-9a-f:]{{17}} 10\.2\.1\.1/24 10\.32\.0\.1/12 10\.33\.0\.1/24\n", line), line
    rows = json.loads(out("ps", "--format", "json"))
    assert [r["cidrs"] for r in rows if r["id"] == f"netns:{ns}"] == [["10.2.1.1/24", "10.32.0.1/12", "10.33.0.1/24"]]

    assert out("detach", "net:10.33.0.0/24", f"netns:{ns}") == "10.33.0.1\n"
    assert out("detach", "net:10.99.0.0/24", f"netns:{ns}") == ""          # nothing there: not an error
    assert out("detach", "net:default", f"netns:{ns}") == "10.32.0.1\n"
    assert out("expose") == "10.32.0.1\n"                                   # net:default; the freed one again
    assert out("expose", "ip:10.2.1.254/24") == "10.2.1.254\n"
    bridge = h.exec("ip", "-4", "-o", "addr", "show", "weave").stdout
    assert "10.32.0.1/12" in bridge and "10.2.1.254/24" in bridge
    assert out("ps").splitlines()[0].split()[2:] == ["10.32.0.1/12", "10.2.1.254/24"]   # weave:expose first
    assert out("hide", "net:default") == "10.32.0.1\n"
    assert out("hide", "10.2.1.254/24") == "10.2.1.254\n"
    assert "10.2.1.254" not in h.exec("ip", "-4", "-o", "addr", "show", "weave").stdout
    assert out("detach", f"netns:{ns}") == "10.2.1.1\n"                     # no address: everything
    assert out("ps") == ""
    p = h.weave("attach", "ip:10.2.1.300/24", f"netns:{ns}", check=False)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and p.stdout == ""
    p = h.weave("attach", "10.2.1.5/24", "netns:no-such-ns", check=False)
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1
