"""Bad variables fail before any task changes a host, with a message naming the variable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from playbook_runner import run_playbook

# (role, variable, bad value, words the failure must contain besides the variable)
BAD_VARIABLES = [
    ("baseline", "baseline_ssh_permit_root_login", "maybe", "must be one of"),
    ("baseline", "baseline_ssh_port", "twenty-two", "cannot be converted to an int"),
    ("baseline", "baseline_ssh_allow_groups", {"not": "a list"}, "list"),
    ("baseline", "baseline_sysctl_enabled", "perhaps", "bool"),
    ("firewall", "firewall_ssh_port", "ssh", "cannot be converted to an int"),
    ("firewall", "firewall_log_level", "loud", "must be one of"),
    ("firewall", "firewall_admin_networks", ["10.0.0.300/24"], "is not an IPv4/IPv6 address or CIDR"),
    ("firewall", "firewall_admin_networks", ["198.18.10.1/24"], "has host bits set"),
    ("firewall", "firewall_input_rules_host", {"900 x": {"proto": "tcpp", "dport": 1}}, "unknown protocol"),
    ("firewall", "firewall_input_rules_host", {"900 x": {"proto": "tcp", "dport": 70000}}, "port '70000'"),
    ("firewall", "firewall_log_rate", "lots", "is not a rate"),
    ("pki", "pki_cert_valid_days", "ninety", "cannot be converted to an int"),
    ("engine", "localguard_engine", "triton", "must be one of"),
    ("engine", "engine_extra_environment", {"HF_HUB_OFFLINE": "0"}, "HF_HUB_OFFLINE is set by the role"),
    ("engine", "engine_extra_environment", {"HTTPS_PROXY": "http://127.0.0.1:3128"}, "through a proxy"),
    (
        "engine",
        "engine_command",
        ["/usr/bin/python3", "-m", "x", "--host", "0.0.0.0"],
        "sets where the engine listens",
    ),
    ("engine", "engine_vllm_allowed_media_domains", ["https://evil.example/"], "is not a host name"),
    # Secrets published in inventories/example, whatever the inventory.
    ("pki", "pki_ca_passphrase", "example-only-ca-passphrase-change-me", "secrets everyone knows"),
    (
        "gateway",
        "gateway_api_keys",
        [
            {
                "id": "copied",
                "key": "lgk_example-only-key-replace-me-0123456789abcdef",
                "not_after": "2099-01-01T00:00:00Z",
                "status": "active",
            }
        ],
        "secrets everyone knows",
    ),
    ("firewall", "firewall_egress_allow_empty", [], "would be empty"),
    ("firewall", "firewall_sets_group", {"clients": []}, "No client may reach the gateway"),
    ("gateway", "gateway_api_keys", [{"id": "no-key"}], "missing required arguments"),
    ("gateway", "gateway_rate_per_key", ["10r/s"], "gateway_rate_per_key"),
]


def roles_in(playbook: Path) -> set[str]:
    plays = yaml.safe_load(playbook.read_text())
    return {
        role["role"] if isinstance(role, dict) else role for play in plays for role in play.get("roles", [])
    }


def live_state(host) -> tuple[str, str]:
    """What a bad run must leave alone: sshd_config and the live firewall table."""
    table = host.run("nft -s list table inet localguard")
    return host.file("/etc/ssh/sshd_config").sha256sum, table.stdout if table.rc == 0 else "absent"


@pytest.mark.parametrize(("role", "variable", "value", "expected"), BAD_VARIABLES)
def test_bad_variable_fails_before_any_change(first_host, target, role, variable, value, expected):
    playbook, inventory = target
    host, hostvars = first_host
    if role not in roles_in(playbook):
        pytest.skip(f"{playbook.name} does not run the {role} role")
    before = live_state(host)
    run = run_playbook(
        playbook, inventory, "-e", json.dumps({variable: value}), limit=hostvars.get("inventory_hostname")
    )
    assert run.rc != 0
    assert run.total("changed") == 0, run.changed_tasks()
    messages = " ".join(run.failure_messages())
    assert expected in messages, messages
    assert variable in messages or "firewall_sets_default['admins']" in messages, messages
    assert live_state(host) == before
