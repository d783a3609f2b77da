import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.localguard.hardening.plugins.filter.localguard_firewall import (
    host_addresses,
    nft_rules,
    nft_sets,
)


def test_host_addresses_prefer_explicit_then_ip_then_facts():
    hostvars = {
        "a": {"localguard_address": "10.0.0.9", "ansible_host": "10.0.0.1"},
        "b": {"ansible_host": "198.18.10.11"},
        "c": {"ansible_host": "gpu-c.invalid", "ansible_facts": {"default_ipv4": {"address": "10.0.0.3"}}},
        "d": {
            "ansible_host": "gpu-d.invalid",
            "ansible_facts": {
                "default_ipv4": {},
                "all_ipv4_addresses": ["198.18.20.5"],
                "all_ipv6_addresses": ["fe80::1", "2001:db8::5"],
            },
        },
    }
    assert host_addresses(["a", "b", "c", "d"], hostvars) == [
        "10.0.0.9",
        "198.18.10.11",
        "10.0.0.3",
        "198.18.20.5",
        "2001:db8::5",
    ]


def test_unresolvable_name_is_kept_for_validation_to_reject():
    addresses = host_addresses(["e"], {"e": {"ansible_host": "no-such-host.invalid"}})
    assert addresses == ["no-such-host.invalid"]
    with pytest.raises(AnsibleFilterError, match="set localguard_address"):
        nft_sets({"gpu_hosts": addresses}, {}, {})


def test_filters_render_from_layers():
    sets = nft_sets({"admins": ["198.18.10.1"]}, {}, {"admins": ["198.18.10.1", "2001:db8::1"]})
    assert sets == {"admins": {"v4": ["198.18.10.1/32"], "v6": ["2001:db8::1/128"]}}
    lines = nft_rules({"100 ssh": {"proto": "tcp", "dport": 22, "saddr_set": "admins"}}, {}, {}, sets, "r")
    assert lines[0] == 'ip saddr @admins_v4 tcp dport 22 counter accept comment "100 ssh"'
    with pytest.raises(AnsibleFilterError, match=r"r_group\['1 x'\]"):
        nft_rules({}, {"1 x": {"proto": "sctp"}}, {}, sets, "r")
