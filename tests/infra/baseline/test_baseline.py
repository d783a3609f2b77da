"""Baseline controls (BL-*), checked on the host itself. Runs under Molecule and on the lab."""

from __future__ import annotations

import pytest

WEAK_SSH_MARKS = ("-cbc", "sha1", "md5", "nistp", "3des", "arcfour")


def sshd_effective(host) -> dict[str, str]:
    out = host.check_output("sshd -T -C user=nobody,host=localhost,addr=127.0.0.1 2>/dev/null")
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def test_bl_ssh_05_keys_only_and_modern_algorithms(host):
    cfg = sshd_effective(host)
    assert cfg["passwordauthentication"] == "no"
    assert cfg["kbdinteractiveauthentication"] == "no"
    assert cfg["permitemptypasswords"] == "no"
    assert cfg["authenticationmethods"] == "publickey"
    assert cfg["permitrootlogin"] == "no"
    assert cfg["x11forwarding"] == "no"
    assert cfg["allowtcpforwarding"] == "no"
    assert cfg["loglevel"] == "VERBOSE"
    algorithms = ",".join([cfg["kexalgorithms"], cfg["ciphers"], cfg["macs"]]).split(",")
    assert not [alg for alg in algorithms if any(mark in alg for mark in WEAK_SSH_MARKS)]
    assert all(mac.endswith("-etm@openssh.com") for mac in cfg["macs"].split(","))


def test_bl_ssh_02_only_named_groups_log_in(host):
    cfg = sshd_effective(host)
    assert cfg["allowgroups"] == "sshusers"
    assert host.group("sshusers").exists


def test_bl_ssh_05_config_is_root_only_and_live(host):
    config = host.file("/etc/ssh/sshd_config")
    assert config.user == "root" and config.mode == 0o600
    assert "Managed by localguard" in config.content_string
    assert host.service("ssh").is_running
    # The running daemon accepted the rendered file: a reload of a bad config would have failed.
    assert host.run("sshd -t").rc == 0


def test_bl_sys_02_sysctls_persisted(host):
    persisted = host.file("/etc/sysctl.d/60-localguard.conf").content_string
    for line in (
        "kernel.kptr_restrict = 2",
        "kernel.dmesg_restrict = 1",
        "net.ipv4.conf.all.rp_filter = 1",
        "net.ipv4.conf.all.accept_redirects = 0",
        "net.ipv4.conf.all.accept_source_route = 0",
    ):
        assert line in persisted


def test_bl_sys_01_02_network_sysctls_live_where_writable(host, hostenv):
    """BL-SYS-01 decides what this host lets us set at runtime; BL-SYS-02 sets it."""
    if not hostenv["proc_sys_net_writable"]:
        pytest.skip("/proc/sys is read-only here: the role only persists the settings (checked above)")
    assert host.sysctl("net.ipv4.conf.all.rp_filter") == 1
    assert host.sysctl("net.ipv4.conf.all.accept_redirects") == 0
    assert host.sysctl("net.ipv4.conf.default.send_redirects") == 0
    assert host.sysctl("net.ipv6.conf.all.accept_source_route") == 0


def test_bl_sys_02_kernel_sysctls_live_on_real_hosts(host, hostenv):
    if hostenv["in_container"]:
        pytest.skip("kernel.* sysctls are global: a container may not set them")
    assert host.sysctl("kernel.kptr_restrict") == 2
    assert host.sysctl("kernel.dmesg_restrict") == 1


def test_bl_upg_01_04_unattended_security_upgrades(host):
    """BL-UPG-01 installed, BL-UPG-02 run daily, BL-UPG-03 security origins only, BL-UPG-04 the apt
    timers enabled and running (Molecule's prepare turns them off first)."""
    assert host.package("unattended-upgrades").is_installed
    periodic = host.file("/etc/apt/apt.conf.d/20auto-upgrades").content_string
    assert 'APT::Periodic::Unattended-Upgrade "1";' in periodic
    origins = host.check_output("apt-config dump Unattended-Upgrade::Origins-Pattern")
    patterns = [line for line in origins.splitlines() if "Origins-Pattern::" in line]
    assert patterns, origins
    assert all("label=Debian-Security" in p for p in patterns), patterns
    for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        assert host.service(timer).is_enabled and host.service(timer).is_running


def test_bl_aud_01_02_auditd_and_its_rules_installed(host):
    assert host.package("auditd").is_installed
    rules = host.file("/etc/audit/rules.d/50-localguard.rules")
    assert rules.user == "root" and rules.mode == 0o640
    assert "-w /etc/shadow -p wa -k identity" in rules.content_string
    assert "-w /etc/ssh/sshd_config -p wa -k sshd" in rules.content_string


def test_bl_aud_03_rules_loaded_on_real_hosts(host, hostenv):
    if hostenv["in_container"]:
        pytest.skip("the audit subsystem is not namespaced: a container cannot run auditd")
    assert host.service("auditd").is_running
    assert "-k identity" in host.check_output("auditctl -l")


def test_bl_lst_01_unneeded_listener_removed(host):
    assert not host.package("rpcbind").is_installed
    assert not host.socket("tcp://0.0.0.0:111").is_listening
