"""Bad variables fail before any task changes a host, with a message naming the variable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from playbook_runner import run_playbook


def _key(key_id: str, key: str = "k" * 40, not_after: str = "2099-01-01T00:00:00Z") -> dict:
    return {"id": key_id, "key": key, "not_after": not_after, "status": "active"}


EXAMPLE_KEY = "lgk_example-only-key-replace-me-0123456789abcdef"

# (role, variable, bad value, words the failure must contain besides the variable)
BAD_VARIABLES = [
    # PRE-01: types and closed sets from each role's argument_specs.
    ("baseline", "baseline_ssh_permit_root_login", "maybe", "must be one of"),
    ("baseline", "baseline_ssh_port", "twenty-two", "cannot be converted to an int"),
    ("baseline", "baseline_ssh_allow_groups", {"not": "a list"}, "list"),
    ("baseline", "baseline_sysctl_enabled", "perhaps", "bool"),
    ("firewall", "firewall_ssh_port", "ssh", "cannot be converted to an int"),
    ("firewall", "firewall_log_level", "loud", "must be one of"),
    ("pki", "pki_cert_valid_days", "ninety", "cannot be converted to an int"),
    ("engine", "localguard_engine", "triton", "must be one of"),
    ("gateway", "gateway_api_keys", [{"id": "no-key"}], "missing required arguments"),
    ("gateway", "gateway_rate_per_key", ["10r/s"], "gateway_rate_per_key"),
    # PRE-05 / FW-00: what argument specs cannot see inside the firewall's data.
    ("firewall", "firewall_admin_networks", ["10.0.0.300/24"], "is not an IPv4/IPv6 address or CIDR"),
    ("firewall", "firewall_admin_networks", ["198.18.10.1/24"], "has host bits set"),
    ("firewall", "firewall_input_rules_host", {"900 x": {"proto": "tcpp", "dport": 1}}, "unknown protocol"),
    ("firewall", "firewall_input_rules_host", {"900 x": {"proto": "tcp", "dport": 70000}}, "port '70000'"),
    ("firewall", "firewall_log_rate", "lots", "is not a rate"),
    ("firewall", "firewall_egress_allow_empty", [], "would be empty"),
    ("firewall", "firewall_sets_group", {"clients": []}, "No client may reach the gateway"),
    # PRE-06 / GW-00: what argument specs let through but nginx and the key check must never see.
    ("gateway", "gateway_api_keys", [_key("twin"), _key("twin")], "unique id"),
    ("gateway", "gateway_api_keys", [_key("short", key="k" * 31)], "32+ characters"),
    ("gateway", "gateway_api_keys", [_key("no-time", not_after="2099-01-01")], "YYYY-MM-DDTHH:MM:SSZ"),
    ("gateway", "gateway_rate_per_address", "20 per second", "gateway_rate_per_address"),
    ("gateway", "gateway_max_body_size", "1 MB", "gateway_max_body_size"),
    # PRE-02: secrets published in inventories/example, whatever the inventory.
    ("pki", "pki_ca_passphrase", "example-only-ca-passphrase-change-me", "secrets everyone knows"),
    ("gateway", "gateway_api_keys", [_key("copied", key=EXAMPLE_KEY)], "secrets everyone knows"),
    # PRE-03: exported client keys never inside the inventory.
    ("pki", "pki_export_dir", "{{ inventory_dir }}/pki-export", "is inside the inventory"),
    # PRE-07 / EN-00: engine settings that would reopen the sandbox.
    ("engine", "engine_extra_environment", {"HF_HUB_OFFLINE": "0"}, "HF_HUB_OFFLINE is set by the role"),
    ("engine", "engine_extra_environment", {"HTTPS_PROXY": "http://127.0.0.1:3128"}, "through a proxy"),
    (
        "engine",
        "engine_command",
        ["/usr/bin/python3", "-m", "x", "--host", "0.0.0.0"],
        "sets where the engine",
    ),
    ("engine", "engine_vllm_allowed_media_domains", ["https://evil.example/"], "is not a host name"),
    # PRE-11: rolling batches (harden.yml's GPU play).
    ("preflight", "localguard_serial", [1, "all"], "must be a batch size"),
    ("preflight", "localguard_max_fail_percentage", 150, "whole number from 0 to 100"),
    # PRE-12: a time client pointed outside the firewall's NTP set (the lab's is empty, acknowledged).
    ("preflight", "baseline_time_servers", ["192.0.2.123"], "outside the firewall's ntp_servers set"),
]


def roles_in(playbook: Path) -> set[str]:
    """Short names of the roles a playbook runs, following import_playbook (harden.yml at the root
    only imports playbooks/harden.yml) and dropping the collection prefix."""
    names = set()
    for play in yaml.safe_load(playbook.read_text()):
        imported = play.get("ansible.builtin.import_playbook")
        if imported:
            names |= roles_in(playbook.parent / imported)
        for role in play.get("roles", []):
            names.add((role["role"] if isinstance(role, dict) else role).rsplit(".", 1)[-1])
    return names


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
    assert not run.host_changes(), run.host_changes()
    messages = " ".join(run.failure_messages())
    assert expected in messages, messages
    assert variable in messages or "firewall_sets_default['admins']" in messages, messages
    assert live_state(host) == before


@pytest.mark.molecule_only
def test_bl_ssh_04_refuses_a_policy_that_would_lock_the_login_account_out(first_host, target):
    """BL-SSH-04: an AllowGroups list without the login account, and the role told not to add it."""
    playbook, inventory = target
    host, hostvars = first_host
    if "baseline" not in roles_in(playbook):
        pytest.skip(f"{playbook.name} does not run the baseline role")
    before = live_state(host)
    lockout = {"baseline_ssh_allow_groups": ["nobody-logs-in"], "baseline_ssh_add_login_user": False}
    run = run_playbook(
        playbook, inventory, "-e", json.dumps(lockout), limit=hostvars.get("inventory_hostname")
    )
    assert run.rc != 0
    assert not run.host_changes(), run.host_changes()
    assert any("would lock out" in m for m in run.failure_messages()), run.failure_messages()
    assert live_state(host) == before


@pytest.mark.molecule_only
def test_bl_lst_02_03_an_undeclared_listener_fails_the_check(first_host, target):
    """BL-LST-02 reads the listening sockets, BL-LST-03 fails on one nobody declared; with the
    listener gone the same run passes."""
    playbook, inventory = target
    host, hostvars = first_host
    if "baseline" not in roles_in(playbook):
        pytest.skip(f"{playbook.name} does not run the baseline role")
    strict = ("--tags", "listeners", "-e", json.dumps({"baseline_listeners_fail_on_unexpected": True}))
    limit = hostvars.get("inventory_hostname")
    host.run("systemd-run --unit=lab-undeclared-listener -- python3 -m http.server 8999 --bind 0.0.0.0")
    try:
        assert (
            host.run("ss -Htln 'sport = :8999' | grep -q LISTEN || (sleep 2; ss -Htln 'sport = :8999')").rc
            == 0
        )
        found = run_playbook(playbook, inventory, *strict, limit=limit)
    finally:
        host.run("systemctl stop lab-undeclared-listener")
    assert found.rc != 0
    assert any("python3 tcp 0.0.0.0 8999" in m for m in found.failure_messages()), found.failure_messages()
    clean = run_playbook(playbook, inventory, *strict, limit=limit)
    assert clean.rc == 0, clean.failure_messages()


def test_pre_10_a_gpu_host_that_is_also_the_ca_is_refused(first_host, target, tmp_path):
    """PRE-10: GPU hosts are hardened in their own batches after the CA and collectors, and the CA
    key never sits on a GPU host: a GPU host put in `ca` stops the run before any change."""
    playbook, inventory = target
    host, hostvars = first_host
    if "preflight" not in roles_in(playbook) or "gpu_hosts" not in hostvars.get("group_names", []):
        pytest.skip("needs harden.yml and a GPU host")
    name = hostvars["inventory_hostname"]
    also_ca = tmp_path / "also-ca.yml"
    also_ca.write_text(yaml.safe_dump({"all": {"children": {"ca": {"hosts": {name: {}}}}}}))
    before = live_state(host)
    run = run_playbook(playbook, inventory, "-i", str(also_ca), limit=name)
    assert run.rc != 0
    assert not run.host_changes(), run.host_changes()
    assert any("is in gpu_hosts and in ca" in m for m in run.failure_messages()), run.failure_messages()
    assert live_state(host) == before
