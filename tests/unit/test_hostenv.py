from pathlib import Path

import pytest
from ansible_collections.localguard.hardening.plugins.module_utils.localguard_hostenv import (
    CAP_AUDIT_CONTROL,
    container_type,
    decide,
    effective_capabilities,
    has_capability,
    probe,
)

FULL_CAPS = (1 << 41) - 1
PODMAN_DEFAULT_CAPS = 0x00000000800405FB  # no CAP_AUDIT_CONTROL, CAP_NET_ADMIN, CAP_SYS_ADMIN
LAB_CAPS = PODMAN_DEFAULT_CAPS | 1 << 12 | 1 << 13  # podman run --cap-add NET_ADMIN,NET_RAW


@pytest.mark.parametrize(
    ("systemd", "environ", "containerenv", "dockerenv", "expected"),
    [
        ("podman\n", b"", False, False, "podman"),
        (None, b"HOME=/\0container=lxc\0", False, False, "lxc"),
        (None, b"", True, False, "podman"),
        (None, b"", False, True, "docker"),
        (None, b"HOME=/\0TERM=linux\0", False, False, ""),
        ("  \n", b"", False, False, ""),
    ],
)
def test_container_type_sources(systemd, environ, containerenv, dockerenv, expected):
    assert container_type(systemd, environ, containerenv, dockerenv) == expected


def test_effective_capabilities_parses_capeff():
    status = "Name:\tpython3\nCapInh:\t0000000000000000\nCapEff:\t00000000800405fb\n"
    assert effective_capabilities(status) == PODMAN_DEFAULT_CAPS
    assert effective_capabilities("Name:\tx\n") == 0


def test_has_capability():
    assert has_capability(FULL_CAPS, CAP_AUDIT_CONTROL)
    assert not has_capability(PODMAN_DEFAULT_CAPS, CAP_AUDIT_CONTROL)
    assert not decide("podman", PODMAN_DEFAULT_CAPS, False).can_manage_nftables


def test_real_host_gets_every_control():
    env = decide("", FULL_CAPS, proc_sys_net_writable=True)
    assert env.can_set_kernel_sysctls and env.can_audit and env.can_manage_nftables
    assert env.can_load_modules and env.can_account_processes and env.can_set_clock
    assert not env.in_container


def test_container_never_sets_global_sysctls_or_audit_even_with_all_caps():
    env = decide("podman", FULL_CAPS, proc_sys_net_writable=True)
    assert env.in_container and env.proc_sys_net_writable
    assert not env.can_set_kernel_sysctls
    assert not env.can_audit
    assert not (env.can_load_modules or env.can_account_processes or env.can_set_clock)


def test_real_host_without_a_capability_skips_its_control():
    env = decide("", FULL_CAPS & ~(1 << 16) & ~(1 << 20) & ~(1 << 25), proc_sys_net_writable=True)
    assert not (env.can_load_modules or env.can_account_processes or env.can_set_clock)
    assert env.can_audit


def test_read_only_proc_sys_blocks_every_sysctl():
    env = decide("", FULL_CAPS, proc_sys_net_writable=False)
    assert not env.proc_sys_net_writable and not env.can_set_kernel_sysctls


def test_probe_reads_a_fake_tree(tmp_path: Path):
    (tmp_path / "run/systemd").mkdir(parents=True)
    (tmp_path / "run/systemd/container").write_text("podman\n")
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/status").write_text(f"CapEff:\t{LAB_CAPS:016x}\n")
    env = probe(tmp_path)
    assert env.container_type == "podman"
    assert env.can_manage_nftables and not env.can_audit
    # No /proc/sys/net in the fake tree: nothing is writable.
    assert not env.proc_sys_net_writable
    assert env.as_facts()["localguard_in_container"] is True
