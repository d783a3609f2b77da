"""Baseline controls (BL-*), checked on the host itself. Runs under Molecule and on the lab."""

from __future__ import annotations

import pytest

WEAK_SSH_MARKS = ("-cbc", "sha1", "md5", "nistp", "3des", "arcfour")


def sshd_effective_for(host, user: str) -> dict[str, str]:
    out = host.check_output(f"sshd -T -C user={user},host=localhost,addr=127.0.0.1 2>/dev/null")
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def sshd_effective(host) -> dict[str, str]:
    return sshd_effective_for(host, "nobody")


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


def admin_users(hostvars) -> dict[str, dict]:
    admins = hostvars.get("baseline_ssh_admin_users") or {}
    if not admins:
        pytest.skip("this inventory lists no SSH admin accounts (baseline_ssh_admin_users)")
    return admins


def test_bl_ssh_06_listed_admins_get_in_with_exactly_their_keys(host, hostvars):
    """Every listed admin is in the allow group (sshd -T decides with the account's own groups) and
    its authorized_keys holds the listed keys and nothing else."""
    for name, entry in admin_users(hostvars).items():
        if entry.get("state", "present") != "present":
            continue
        assert host.user(name).exists, name
        allowed = sshd_effective_for(host, name)["allowgroups"].split()
        assert set(host.user(name).groups) & set(allowed), (name, host.user(name).groups)
        home = host.user(name).home
        keys = host.file(f"{home}/.ssh/authorized_keys")
        assert keys.user == name and keys.mode & 0o077 == 0
        assert keys.content_string.splitlines() == entry["authorized_keys"], name


def test_bl_ssh_07_admins_marked_absent_are_out_of_the_allow_groups(host, hostvars):
    absent = [name for name, entry in admin_users(hostvars).items() if entry.get("state") == "absent"]
    if not absent:
        pytest.skip("no admin account is marked absent in this inventory")
    allowed = sshd_effective(host)["allowgroups"].split()
    for name in absent:
        if host.user(name).exists:
            assert not set(host.user(name).groups) & set(allowed), (name, host.user(name).groups)


def test_bl_ssh_08_ed25519_and_rsa_4096_host_keys_only(host):
    """ssh-keygen -A (Debian's first boot, the lab image's too) makes a 3072-bit RSA key and an
    ECDSA one: sshd must offer Ed25519 and RSA of 4096 bits or more, nothing else."""
    hostkey_lines = host.check_output("sshd -T 2>/dev/null | grep '^hostkey '").splitlines()
    offered = [line.split()[1] for line in hostkey_lines]
    assert offered == ["/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_rsa_key"]
    for key in offered:
        private = host.file(key)
        assert private.user == "root" and private.mode == 0o600, key
    bits, _, _ = host.check_output("ssh-keygen -l -f /etc/ssh/ssh_host_rsa_key.pub").partition(" ")
    assert int(bits) >= 4096
    assert "ED25519" in host.check_output("ssh-keygen -l -f /etc/ssh/ssh_host_ed25519_key.pub")


def test_bl_ssh_09_post_quantum_only_kex_when_asked(host, hostvars):
    """OpenSSH 9.2 already offers the hybrid first, so only the opt-in PQ-only setting is checkable
    here (Molecule sets it; the lab checks it over real SSH in tests/lab/test_ssh_access.py)."""
    if not hostvars.get("baseline_ssh_kex_pq_only"):
        pytest.skip("baseline_ssh_kex_pq_only is off in this inventory")
    assert sshd_effective(host)["kexalgorithms"] == "sntrup761x25519-sha512@openssh.com"


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


FAMILY_PACKAGES = (
    *("libpam-pwquality", "cracklib-runtime", "kmod", "systemd-timesyncd"),
    *("aide", "acct", "needrestart", "debsums"),
)


@pytest.mark.parametrize("package", FAMILY_PACKAGES)
def test_bl_family_packages_installed(host, package):
    """BL-ACC-01, BL-MOD-01, BL-TIME-01, BL-AIDE-01 (and acct, needrestart, debsums): a fleet check.
    The lab image carries them (its hosts cannot download); a real host gets them from the role's
    one apt transaction."""
    assert host.package(package).is_installed


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
