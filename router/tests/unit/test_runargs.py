import pytest

from weavenet.containers.runargs import RunArgsError, looks_like_address, parse_run_args


def test_seed_command():
    spec = parse_run_args(["10.0.0.1/24", "-t", "-i", "ubuntu"])
    assert spec.cidrs == ["10.0.0.1/24"] and spec.image == "ubuntu" and spec.command is None
    assert spec.kwargs == {"tty": True, "stdin_open": True}


def test_clustered_short_options_values_and_command():
    spec = parse_run_args(["10.0.0.1/24", "10.10.0.1/24", "-dit", "-eA=1", "-e", "B=2", "-v", "/a:/b:ro",
                           "--name=web", "-h", "web1", "-l", "tier=front", "--rm", "img:1", "sh", "-c", "echo hi"])
    assert spec.cidrs == ["10.0.0.1/24", "10.10.0.1/24"]
    assert spec.image == "img:1" and spec.command == ["sh", "-c", "echo hi"]
    kw = spec.kwargs
    assert kw["environment"] == ["A=1", "B=2"] and kw["volumes"] == ["/a:/b:ro"] and kw["name"] == "web"
    assert kw["hostname"] == "web1" and kw["labels"] == {"tier": "front"} and kw["auto_remove"] is True


def test_publish_restart_cpus_pull():
    spec = parse_run_args(["10.0.0.1/24", "-p", "8080:80", "-p", "127.0.0.1:53:53/udp", "-p", "9000",
                           "--restart", "on-failure:3", "--cpus", "1.5", "--pull", "never", "img"])
    assert spec.kwargs["ports"] == {"80/tcp": 8080, "53/udp": ("127.0.0.1", 53), "9000/tcp": None}
    assert spec.kwargs["restart_policy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert spec.kwargs["nano_cpus"] == 1_500_000_000 and spec.pull == "never"


def test_double_dash_ends_options():
    spec = parse_run_args(["10.0.0.1/24", "--", "-weird-image"])
    assert spec.image == "-weird-image"


@pytest.mark.parametrize("argv, says", [
    (["10.0.0.1/24", "--frobnicate", "img"], "unsupported docker run option --frobnicate"),
    (["10.0.0.1/24", "-Z", "img"], "unsupported docker run option -Z"),
    (["10.0.0.1/24", "--name"], "needs a value"),
    (["10.0.0.1/24", "-t"], "needs an image"),
    (["10.0.0.1/24", "--restart", "sometimes", "img"], "bad --restart"),
    (["10.0.0.1/24", "--rm", "--restart", "always", "img"], "cannot be used together"),
    (["10.0.0.1/24", "-p", "x:y", "img"], "bad --publish"),
    (["10.0.0.1/24", "--tty=yes", "img"], "takes no value"),
    (["10.0.0.1/24", "--pull", "sometimes", "img"], "bad --pull"),
])
def test_bad_options(argv, says):
    with pytest.raises(RunArgsError, match=says):
        parse_run_args(argv)


@pytest.mark.parametrize("arg, expected", [
    ("10.0.0.1/24", True), ("10.0.0.300/24", True), ("net:10.2.0.0/16", True), ("net:default", True),
    ("fd00::1/64", True), ("ubuntu", False), ("10.0.0.5:5000/app", False), ("library/busybox", False),
])
def test_address_detection(arg, expected):
    assert looks_like_address(arg) is expected
