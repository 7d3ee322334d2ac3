"""Peer names and peer addresses."""

import pytest

from weavenet.mesh.names import (
    DEFAULT_PORT,
    format_address,
    normalise_address,
    parse_peer_address,
    parse_peer_name,
    random_peer_name,
)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("02:00:5e:10:00:01", "02:00:5e:10:00:01"),
        ("AA:BB:CC:DD:EE:FF", "aa:bb:cc:dd:ee:ff"),
        ("  0a:0B:0c:0D:0e:0F\n", "0a:0b:0c:0d:0e:0f"),
    ],
)
def test_parse_peer_name_accepts_and_normalises(text, want):
    assert parse_peer_name(text) == want


@pytest.mark.parametrize(
    "text",
    [
        "",
        "00:00:00:00:00:00",
        "02:00:5e:10:00",
        "02:00:5e:10:00:01:02",
        "02-00-5e-10-00-01",
        "02:00:5e:10:00:0g",
        "2:00:5e:10:00:01",
        "020:0:5e:10:00:01",
        "02005e100001",
        "02:00:5e:10:00:01x",
    ],
)
def test_parse_peer_name_rejects(text):
    with pytest.raises(ValueError):
        parse_peer_name(text)


def test_random_peer_name():
    names = {random_peer_name() for _ in range(200)}
    assert len(names) == 200
    for n in names:
        assert parse_peer_name(n) == n
        first = int(n[:2], 16)
        assert first & 0x01 == 0  # unicast
        assert first & 0x02 == 0x02  # locally administered


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("10.0.0.1", ("10.0.0.1", DEFAULT_PORT)),
        (" 10.0.0.1:7000 ", ("10.0.0.1", 7000)),
        ("192.168.1.2:65535", ("192.168.1.2", 65535)),
        ("10.0.0.1:1", ("10.0.0.1", 1)),
        ("host-1", ("host-1", DEFAULT_PORT)),
        ("node.example.com:6790", ("node.example.com", 6790)),
        ("localhost", ("localhost", DEFAULT_PORT)),
        ("[::1]:7000", ("::1", 7000)),
        ("[2001:DB8::1]", ("2001:db8::1", DEFAULT_PORT)),
        ("fe80::1", ("fe80::1", DEFAULT_PORT)),
        ("2001:db8:0:0::5", ("2001:db8::5", DEFAULT_PORT)),
    ],
)
def test_parse_peer_address_accepts(text, want):
    assert parse_peer_address(text) == want


def test_parse_peer_address_default_port():
    assert parse_peer_address("10.0.0.1", default_port=1234) == ("10.0.0.1", 1234)
    assert parse_peer_address("10.0.0.1:80", default_port=1234) == ("10.0.0.1", 80)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("10.0.0.1:0", "out of range"),
        ("10.0.0.1:70000", "out of range"),
        ("[::1]:0", "out of range"),
        ("10.0.0.1:http", "not a number"),
        ("10.0.0.1:", "not a number"),
        ("10.0.0.1:-1", "not a number"),
        ("a b", "not an IP address or host name"),
        ("-host", "not an IP address or host name"),
        ("bad_name", "not an IP address or host name"),
        ("1.2.3", "not an IP address or host name"),
        ("300.1.1.1", "not an IP address or host name"),
        ("12345", "not an IP address or host name"),
        ("1::2::3", "not an IP address or host name"),
        ("[::1", "missing"),
        ("[::1]7000", "bad peer address"),
        ("0.0.0.0", "cannot be a peer"),
        ("0.0.0.0:6783", "cannot be a peer"),
        ("[::]:6783", "cannot be a peer"),
        ("224.0.0.1", "cannot be a peer"),
        ("239.1.2.3:6783", "cannot be a peer"),
        ("ff02::1", "cannot be a peer"),
    ],
)
def test_parse_peer_address_rejects(text, why):
    with pytest.raises(ValueError, match=why):
        parse_peer_address(text)


def test_format_and_normalise_address():
    assert format_address("10.0.0.1", 80) == "10.0.0.1:80"
    assert format_address("::1", 80) == "[::1]:80"
    assert normalise_address("10.0.0.1") == f"10.0.0.1:{DEFAULT_PORT}"
    assert normalise_address("2001:DB8::1") == f"[2001:db8::1]:{DEFAULT_PORT}"
    assert normalise_address("[::1]:7000") == "[::1]:7000"
    for addr in ("10.0.0.1:5", "[::1]:5", "host:5"):
        assert normalise_address(normalise_address(addr)) == normalise_address(addr)
