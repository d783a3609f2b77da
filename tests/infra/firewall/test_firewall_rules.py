"""Firewall controls (FW-*) as loaded in the kernel. Packets between hosts: tests/lab."""

from __future__ import annotations

import json
import re

import pytest
from ansible_collections.localguard.hardening.plugins.module_utils.localguard_engines import (
    engine as engine_spec,
)
from playbook_runner import run_playbook


def table(host) -> dict:
    out = host.check_output("nft -j list table inet localguard")
    return json.loads(out)["nftables"]


def chains(host) -> dict[str, dict]:
    return {item["chain"]["name"]: item["chain"] for item in table(host) if "chain" in item}


def test_fw_01_own_table_loaded_with_drop_policies(host, hostvars):
    by_name = chains(host)
    assert by_name["input"]["policy"] == "drop"
    assert by_name["forward"]["policy"] == "drop"
    enforce = hostvars.get("firewall_egress_enforce", True)
    assert by_name["output"]["policy"] == ("drop" if enforce else "accept")


def test_fw_01_other_tables_untouched_and_no_flush(host):
    # The role never flushes the ruleset: a table someone else owns survives a converge.
    assert "flush ruleset" not in host.file("/etc/localguard/firewall/active.nft").content_string
    assert "delete table inet localguard" in host.file("/etc/localguard/firewall/active.nft").content_string


def test_fw_01_confirmed_ruleset_persisted_for_boot(host):
    active = host.file("/etc/localguard/firewall/active.nft")
    assert active.user == "root" and active.mode == 0o640
    assert host.service("localguard-firewall.service").is_enabled
    assert host.run("nft -c -f /etc/localguard/firewall/active.nft").rc == 0


def test_fw_02_address_sets_are_named_per_family(host):
    sets = {item["set"]["name"]: item["set"] for item in table(host) if "set" in item}
    for name in ("admins", "clients", "gpu_hosts", "collectors", "resolvers"):
        assert sets[f"{name}_v4"]["type"] == "ipv4_addr"
        assert sets[f"{name}_v6"]["type"] == "ipv6_addr"
        assert "interval" in sets[f"{name}_v4"]["flags"]


@pytest.mark.parametrize("chain", ["input", "forward", "output"])
def test_fw_05_every_drop_in_every_chain_is_logged_rate_limited_and_counted(host, chain):
    """Each drop or reject rule is preceded by a rate-limited log rule with the same match, and
    counts into a named counter."""
    rules = [
        line.strip() for line in host.check_output(f"nft list chain inet localguard {chain}").splitlines()
    ]
    final = [i for i, rule in enumerate(rules) if re.search(r"\b(drop|reject( with .*)?)$", rule)]
    assert final, rules
    for i in final:
        match, _, verdict = rules[i].partition("counter name ")
        assert verdict, f"no named counter: {rules[i]}"
        log_match, _, log = rules[i - 1].partition("limit rate ")
        assert log_match == match and 'log prefix "localguard-' in log, (rules[i - 1], rules[i])


def test_fw_04_engine_account_exists_and_is_locked_to_loopback(host, hostvars):
    if "gpu_hosts" not in hostvars.get("group_names", []):
        pytest.skip("not a GPU host")
    account = engine_spec(hostvars["localguard_engine"]).account
    uid = host.user(account).uid
    listing = host.check_output("nft list chain inet localguard output")
    uids = rf"(\{{[^}}]*\b{uid}\b[^}}]*\}}|{uid})"
    rule = rf'meta skuid {uids} oifname != "lo" counter name "engine_egress_drop" drop'
    assert re.search(rule, listing), listing
    # It comes before any accept, so no egress allowance can let the engine out.
    assert listing.index("engine_egress_drop") < listing.index("accept")
    assert host.user(account).shell == "/usr/sbin/nologin"


def test_fw_06_no_rollback_left_armed(host):
    assert not host.service("localguard-firewall-rollback.timer").is_running


@pytest.mark.molecule_only
def test_fw_07_a_docker_socket_brings_the_published_ports_warning(host, hostvars, target):
    """FW-07 warns where Docker runs (its published ports bypass the input chain); not elsewhere."""
    playbook, inventory = target
    name = hostvars["inventory_hostname"]
    warning = "FW-07 | Warn that Docker-published ports"
    # The control's own tag: its two tasks and the validation that always runs, not the whole role.
    quiet = run_playbook(playbook, inventory, "--tags", "fw_07", limit=name)
    assert quiet.rc == 0 and quiet.ran_on(warning) == [], quiet.failure_messages()
    host.run("touch /run/docker.sock")
    try:
        warned = run_playbook(playbook, inventory, "--tags", "fw_07", limit=name)
    finally:
        host.run("rm -f /run/docker.sock")
    assert warned.rc == 0 and warned.ran_on(warning) == [name], warned.failure_messages()
