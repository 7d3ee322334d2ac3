from weavenet.net.isolation import Port, render

UPLINKS = ["weave-tap", "vxlan-6784"]


def test_port_chains_pin_mac_and_ips_and_filter_by_subnet():
    text = render(UPLINKS, [Port("vethwepl1", "02:00:00:00:00:01", ("10.0.0.1/24", "10.10.0.1/24"))], [])
    assert "ether saddr != 02:00:00:00:00:01 drop" in text
    assert "ip saddr != { 10.0.0.1, 10.10.0.1 } drop" in text            # anti-spoofing
    assert "ip saddr != { 10.0.0.0/24, 10.10.0.0/24 } drop" in text      # only its subnets reach it
    assert "arp saddr ip != { 10.0.0.1, 10.10.0.1, 0.0.0.0 } drop" in text
    assert 'iifname "vethwepl1" jump from_vethwepl1' in text and 'oifname "vethwepl1" jump to_vethwepl1' in text


def test_host_input_only_from_exposed_subnets():
    text = render(UPLINKS, [], ["10.0.0.254/24"])
    assert 'iifname { "vxlan-6784", "weave-tap" } ether type ip ip saddr != { 10.0.0.0/24 } drop' in text
    closed = render(UPLINKS, [], [])
    assert 'iifname { "vxlan-6784", "weave-tap" } ether type { ip, arp } drop' in closed


def test_nested_networks_collapse_and_replace_is_atomic():
    text = render(UPLINKS, [Port("vethwepl2", "02:00:00:00:00:02", ("10.0.0.1/16", "10.0.1.1/24"))], [])
    assert "ip saddr != { 10.0.0.0/16 } drop" in text   # nft refuses overlapping set elements
    lines = text.splitlines()
    assert lines[:3] == ["table bridge weavenet", "delete table bridge weavenet", "table bridge weavenet {"]


def test_rendering_is_deterministic():
    ports = [Port("vethwepl2", "02:00:00:00:00:02", ("10.0.0.2/24",)),
             Port("vethwepl1", "02:00:00:00:00:01", ("10.0.0.1/24",))]
    assert render(UPLINKS, ports, []) == render(UPLINKS, list(reversed(ports)), [])
