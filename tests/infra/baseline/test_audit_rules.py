"""auditd rules (BL-AUD-02): every syscall rule for both ABIs, and watches on the files that decide
what the engine, the gateway and the firewall do. Runs under Molecule and on the lab."""

from __future__ import annotations

import re

import pytest

RULES = "/etc/audit/rules.d/50-localguard.rules"
NAMED_SYSCALLS = ("init_module", "finit_module", "delete_module", "adjtimex", "settimeofday", "clock_settime")
ARCH = re.compile(r"-F arch=(b32|b64)\b")


def rules_in_force(host) -> list[str]:
    """The rule lines of localguard's file, comments and blank lines left out (as augenrules does)."""
    lines = host.file(RULES).content_string.splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_bl_aud_02_every_syscall_rule_for_both_abis(host):
    """A 32-bit process calls init_module or settimeofday through its own syscall table: a b64-only
    rule never sees it."""
    syscall_rules = [rule for rule in rules_in_force(host) if " -S " in rule]
    by_abi: dict[str, set[str]] = {"b32": set(), "b64": set()}
    for rule in syscall_rules:
        arch = ARCH.search(rule)
        assert arch, f"no -F arch= in {rule}"
        by_abi[arch.group(1)].add(ARCH.sub("-F arch=ABI", rule))
    assert by_abi["b64"] and by_abi["b64"] == by_abi["b32"], by_abi
    b32 = " ".join(rule for rule in syscall_rules if "arch=b32" in rule)
    for syscall in NAMED_SYSCALLS:
        assert re.search(rf"-S (\S+,)?{syscall}\b", b32), syscall


def watched_paths(hostvars) -> list[str]:
    """What localguard's files are, from the roles that make them (not from the rule table)."""
    models = hostvars.get("engine_model_dir", "/opt/models").rstrip("/") + "/"
    return [
        "/etc/localguard/",  # certificates, the firewall's ruleset, the gateway's key records
        "/var/lib/localguard/",  # the firewall's rollback state, the gateway's keys by hash
        "/etc/nginx/",  # the gateway's site and its njs key check
        "/etc/systemd/system/",  # the engine's unit and drop-ins, localguard's units
        "/usr/lib/systemd/system/",
        "/etc/nftables.conf",
        "/etc/ulogd.conf",
        models,
    ]


def test_bl_aud_02_watches_on_localguard_files(host, hostvars):
    """Each path is watched once it exists (the kernel refuses a watch on a missing directory, and
    one such line stops the whole load); harden.yml renders the rules again after the roles that
    make them."""
    watched = {rule.split()[1] for rule in rules_in_force(host) if rule.startswith("-w ")}
    content = host.file(RULES).content_string
    for path in watched_paths(hostvars):
        if host.file(path.rstrip("/")).exists:
            assert path in watched, f"{path} exists and is not watched"
        else:
            assert path not in watched, f"{path} is missing: its watch would stop augenrules --load"
            assert re.search(rf"^# -w {re.escape(path)} ", content, re.M), f"{path}: no note of its watch"
    # Never vacuous: the unit directories exist on every systemd host.
    assert {"/etc/systemd/system/", "/usr/lib/systemd/system/"} <= watched


def test_bl_aud_02_03_rules_loaded_for_both_abis_on_real_hosts(host, hostvars, hostenv):
    if hostenv["in_container"]:
        pytest.skip("the audit subsystem is not namespaced: a container cannot load rules")
    loaded = host.check_output("auditctl -l")
    for abi in ("b64", "b32"):
        assert re.search(rf"-F arch={abi} -S \S*init_module\S* -F key=kernel-modules", loaded), abi
    for path in watched_paths(hostvars):
        if host.file(path.rstrip("/")).exists:
            assert re.search(rf"^-w {re.escape(path.rstrip('/'))}/? ", loaded, re.M), path
