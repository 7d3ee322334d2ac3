"""Bad input and daemon handling of the weave command."""

from .helpers import report


def test_bad_input_is_one_clear_line(lab_factory):
    lab = lab_factory(1)
    h = lab.host(1)
    cases = {
        ("frobnicate",): "invalid choice",
        ("launch", "not a host!"): "bad peer address",
        ("launch", "--port", "70000"): "invalid port 70000",
        ("launch", "--port", "x"): "invalid int value",
        ("launch", "192.0.2.9:0"): "port 0 out of range",
        ("launch", "--name", "zz:zz"): "invalid peer name",
        ("launch", "--conn-limit", "0"): "invalid connection limit",
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
