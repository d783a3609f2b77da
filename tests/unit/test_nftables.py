import pytest
from ansible_collections.localguard.hardening.plugins.module_utils.localguard_nftables import (
    FirewallDataError,
    address_set,
    address_sets,
    check_rate,
    egress_gaps,
    outside_set,
    parse_ports,
    render_rule,
    rules,
)

SETS = address_sets({"admins": ["198.18.10.1", "2001:db8::/64"], "clients": ["10.0.0.0/24"], "empty": []})


def render(spec: dict, group: dict | None = None, host: dict | None = None) -> list[str]:
    merged = rules(spec, group, host, SETS, "firewall_input_rules")
    return [line for rule in merged for line in render_rule(rule)]


def test_sets_split_by_family_and_collapse_overlaps():
    parsed = address_set("x", ["10.0.0.0/25", "10.0.0.128/25", "10.0.0.7", "::1", "fd00::/8"], "w")
    assert parsed.v4 == ("10.0.0.0/24",)
    assert parsed.v6 == ("::1/128", "fd00::/8")


@pytest.mark.parametrize(
    ("member", "message"),
    [
        ("10.0.0.300/24", "is not an IPv4/IPv6 address or CIDR"),
        ("10.0.0.1/24", "has host bits set"),
        ("gpu1.example", "is not an IPv4/IPv6 address or CIDR"),
        ("10.0.0.0/33", "is not an IPv4/IPv6 address or CIDR"),
    ],
)
def test_bad_cidrs_name_variable_set_and_value(member, message):
    with pytest.raises(FirewallDataError) as err:
        address_sets({"admins": [member]})
    text = str(err.value)
    assert "firewall_sets_default['admins']" in text and member in text and message in text


def test_set_must_be_a_list_and_named_simply():
    with pytest.raises(FirewallDataError, match="must be a list"):
        address_sets({"admins": "10.0.0.1"})
    with pytest.raises(FirewallDataError, match="set name"):
        address_sets({"Bad-Name": []})


@pytest.mark.parametrize("port", [0, 65536, "http", "2000-1000", "1-2-3", ""])
def test_bad_ports(port):
    with pytest.raises(FirewallDataError):
        parse_ports(port, "r")


def test_good_ports():
    assert parse_ports([22, "1000-2000"], "r") == ("22", "1000-2000")


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"proto": "tcpp", "dport": 22}, "unknown protocol 'tcpp'"),
        ({"proto": "tcp", "dport": 70000}, "port '70000'"),
        ({"proto": "any", "dport": 22}, "dport needs proto tcp and/or udp"),
        ({"proto": "tcp", "dport": 22, "saddr_set": "nobody"}, "saddr_set 'nobody' is not a defined set"),
        ({"proto": "tcp", "dport": 22, "action": "allow"}, "unknown action 'allow'"),
        ({"proto": "tcp", "dprot": 22}, "unknown field(s) ['dprot']"),
        ({"proto": "tcp", "dport": 22, "saddr": ["10.0.0.1/8"]}, "has host bits set"),
        ({"proto": "icmp", "icmp_type": ["echo request"]}, "is not an ICMP type name"),
        ({"proto": "icmp", "limit": "fast"}, "is not a rate"),
        ({"proto": "tcp", "comment": 'say "hi"'}, "comment may not contain quotes"),
        ("tcp/22", "must be a dict"),
    ],
)
def test_bad_rules_name_the_entry(rule, message):
    with pytest.raises(FirewallDataError) as err:
        render({"100 ssh": rule})
    assert "firewall_input_rules_default['100 ssh']" in str(err.value)
    assert message in str(err.value)


def test_named_set_rule_renders_both_families_in_key_order():
    lines = render(
        {
            "200 gateway": {"proto": "tcp", "dport": 443, "saddr_set": "clients"},
            "100 ssh": {"proto": "tcp", "dport": 22, "saddr_set": "admins"},
            "150 removed": None,
        }
    )
    assert lines == [
        'ip saddr @admins_v4 tcp dport 22 counter accept comment "100 ssh"',
        'ip6 saddr @admins_v6 tcp dport 22 counter accept comment "100 ssh"',
        'ip saddr @clients_v4 tcp dport 443 counter accept comment "200 gateway"',
        'ip6 saddr @clients_v6 tcp dport 443 counter accept comment "200 gateway"',
    ]


def test_inline_addresses_render_only_their_families():
    assert render({"1 x": {"proto": "tcp", "dport": [80, "8000-8100"], "daddr": ["10.1.0.0/16"]}}) == [
        'ip daddr { 10.1.0.0/16 } tcp dport { 80, 8000-8100 } counter accept comment "1 x"'
    ]


def test_multi_protocol_ports_and_icmp_and_limits():
    assert render({"1 dns": {"proto": ["udp", "tcp"], "dport": 53}}) == [
        'meta l4proto { udp, tcp } th dport 53 counter accept comment "1 dns"'
    ]
    assert render({"2 echo": {"proto": "icmp", "icmp_type": ["echo-request"], "limit": "10/second"}}) == [
        'icmp type { echo-request } limit rate 10/second counter accept comment "2 echo"'
    ]
    assert render({"3 any": {"iifname": "eth1", "action": "drop"}}) == [
        'iifname "eth1" counter drop comment "3 any"'
    ]


def test_rate():
    assert check_rate("10/minute", "x") == "10/minute"
    with pytest.raises(FirewallDataError):
        check_rate("10 per minute", "x")


def test_layers_merge_default_group_host_and_null_removes():
    lines = render(
        {
            "100 ssh": {"proto": "tcp", "dport": 22, "saddr_set": "admins"},
            "110 extra": {"proto": "udp", "dport": 9},
        },
        group={"100 ssh": {"proto": "tcp", "dport": 2222, "saddr_set": "admins"}},
        host={"110 extra": None},
    )
    assert lines == [
        'ip saddr @admins_v4 tcp dport 2222 counter accept comment "100 ssh"',
        'ip6 saddr @admins_v6 tcp dport 2222 counter accept comment "100 ssh"',
    ]


def test_errors_name_the_layer_the_bad_entry_came_from():
    with pytest.raises(FirewallDataError, match=r"firewall_input_rules_host\['900 x'\]: unknown protocol"):
        render({}, host={"900 x": {"proto": "tcpp"}})
    with pytest.raises(FirewallDataError, match=r"firewall_sets_group\['admins'\]"):
        address_sets({"admins": []}, {"admins": ["10.0.0.1/8"]}, None)
    with pytest.raises(FirewallDataError, match="firewall_input_rules_group must be a dict"):
        render({}, group=["not", "a", "dict"])


def test_enforced_egress_with_empty_essential_sets_is_named_with_its_variable():
    sets = {
        "resolvers": {"v4": ["10.0.0.53/32"], "v6": []},
        "ntp_servers": {"v4": [], "v6": []},
        "mirrors": {},
    }
    message = egress_gaps(sets, [], "gpu-a01")
    assert "ntp_servers (localguard_ntp_servers), mirrors (firewall_package_mirrors)" in message
    assert "resolvers" not in message.split("would be empty")[0]
    assert "gpu-a01" in message and "firewall_egress_allow_empty: [ntp_servers, mirrors]" in message
    assert egress_gaps(sets, ["ntp_servers", "mirrors"], "gpu-a01") == ""
    # An IPv6-only resolver set counts as filled.
    assert "resolvers" not in egress_gaps({"resolvers": {"v6": ["2001:db8::53/128"]}}, [], "h")


def test_pre_12_time_servers_outside_the_ntp_set_are_named():
    ntp = {"v4": ["10.20.0.0/24"], "v6": ["2001:db8::123/128"]}
    names = {"ntp.site.example": ["10.20.0.9"], "pool.example": ["10.20.0.9", "192.0.2.1"]}

    def resolve(name: str) -> list[str]:
        return names.get(name, [])

    inside = ["10.20.0.123", "2001:db8::123", "ntp.site.example"]
    outside = ["192.0.2.1", "pool.example", "nowhere.example"]
    assert outside_set(inside + outside, ntp, resolve) == outside
    assert outside_set([], ntp, resolve) == []
    # An IPv4 server is never inside an IPv6 network, nor the other way round.
    assert outside_set(["10.20.0.1"], {"v6": ["::/0"]}, resolve) == ["10.20.0.1"]
