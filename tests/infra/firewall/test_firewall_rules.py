"""Firewall controls (FW-*) as loaded in the kernel. Packets between hosts: tests/lab."""

from __future__ import annotations

import json
import re

import pytest
from localguard_engines import engine as engine_spec


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


@pytest.mark.parametrize(
    ("chain", "prefix"),
    [
        ("input", "localguard-input-drop "),
        ("forward", "localguard-forward-drop "),
        ("output", "localguard-output-drop "),
        ("output", "localguard-engine-egress-drop "),
    ],
)
def test_fw_05_every_drop_path_logs_rate_limited_and_counts(host, hostvars, chain, prefix):
    if "engine" in prefix and "localguard_engine" not in hostvars:
        pytest.skip("no engine account on this host")
    listing = host.check_output(f"nft list chain inet localguard {chain}")
    log_lines = [line for line in listing.splitlines() if f'log prefix "{prefix}"' in line]
    assert log_lines, listing
    assert all("limit rate" in line for line in log_lines)
    counter = "engine_egress_drop" if "engine" in prefix else f"{chain}_drop"
    assert f'counter name "{counter}" drop' in listing


def test_fw_04_engine_account_exists_and_is_locked_to_loopback(host, hostvars):
    engine = hostvars.get("localguard_engine")
    if engine is None:
        pytest.skip("no engine on this host")
    account = engine_spec(engine).account
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
