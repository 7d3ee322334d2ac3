"""Address specs as users type them, and their one-line errors."""

import ipaddress

import pytest

from weavenet.ipam import Allocate, Explicit, parse_address_spec, parse_cidr


@pytest.mark.parametrize("text,expected", [
    ("", Allocate(None)),
    ("  ", Allocate(None)),
    ("net:default", Allocate(None)),
    ("net:10.2.0.0/16", Allocate(ipaddress.IPv4Network("10.2.0.0/16"))),
    ("10.0.0.1/24", Explicit(ipaddress.IPv4Interface("10.0.0.1/24"))),
    ("10.0.0.1/32", Explicit(ipaddress.IPv4Interface("10.0.0.1/32"))),
])
def test_valid_specs(text, expected):
    assert parse_address_spec(text) == expected


@pytest.mark.parametrize("text,message", [
    ("net:", "expected CIDR"),
    ("net:10.2.0.0", "expected CIDR"),
    ("net:10.2.0.1/16", r"host bits set \(did you mean 10.2.0.0/16\?\)"),
    ("net:10.2.0.0/33", "invalid address spec"),
    ("net:10.2.0.0/31", "too small"),
    ("net:fd00::/64", "only IPv4"),
    ("net:bogus/8", "invalid address spec"),
    ("net-10.0.0.0/8", "expected CIDR like"),
    ("10.0.0.1", "expected CIDR like"),
    ("10.0.0.300/24", "invalid address"),
    ("10.0.0.0/24", "network address of 10.0.0.0/24"),
    ("10.0.0.255/24", "broadcast address"),
    ("fd00::1/64", "only IPv4"),
])
def test_malformed_specs_give_one_line_errors(text, message):
    with pytest.raises(ValueError, match=message) as e:
        parse_address_spec(text)
    assert "\n" not in str(e.value)


def test_parse_cidr_for_the_range_flag():
    assert parse_cidr("10.32.0.0/12") == ipaddress.IPv4Network("10.32.0.0/12")
    with pytest.raises(ValueError, match="invalid ipalloc-range '10.32.0.1/12': host bits"):
        parse_cidr("10.32.0.1/12", "ipalloc-range")
