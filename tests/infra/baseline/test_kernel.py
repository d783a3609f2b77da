"""Kernel modules (BL-MOD-*) and the kernel and IPv6 sysctls of issue 12 (BL-SYS-02), checked on
the host itself. Runs under Molecule and on the lab."""

from __future__ import annotations

import json

import pytest

# The modules a GPU server never needs, by the names people use (modprobe takes - and _ alike).
BLOCKED = ("cramfs", "dccp", "firewire-core", "freevxfs", "hfs", "hfsplus", "jffs2", "rds", "sctp", "tipc",
           "udf", "usb-storage")  # fmt: skip


def blocked(hostvars) -> list[str]:
    keep = {name.replace("-", "_") for name in hostvars.get("baseline_modules_keep", [])}
    return [name for name in BLOCKED if name.replace("-", "_") not in keep]


def test_bl_mod_02_every_load_of_a_blocked_module_runs_bin_false(host, hostvars):
    """modprobe's dry run reads the configuration as a real load does, here and in a container."""
    for module in blocked(hostvars):
        dry_run = host.run(f"modprobe --dry-run --verbose {module}")
        assert "install /bin/false" in dry_run.stdout, (module, dry_run.stdout, dry_run.stderr)
    config = host.check_output("modprobe --showconfig").splitlines()
    for module in blocked(hostvars):
        assert f"blacklist {module.replace('-', '_')}" in config, module


def test_bl_mod_02_03_blocked_modules_cannot_be_loaded(host, hostvars, hostenv):
    """A real load fails, and none of them is loaded afterwards (BL-MOD-03 unloaded any that was)."""
    if hostenv["in_container"]:
        pytest.skip(
            "kernel modules belong to the whole kernel: a container can neither load nor unload them, so "
            "only its modprobe configuration is checked (test above)"
        )
    for module in blocked(hostvars):
        load = host.run(f"modprobe {module}")
        assert load.rc != 0, f"{module} loaded"
    loaded = {line.split()[0] for line in host.file("/proc/modules").content_string.splitlines()}
    assert not loaded & {name.replace("-", "_") for name in blocked(hostvars)}, loaded


SYSCTLS = {
    "fs.protected_fifos": "2",
    "fs.protected_regular": "2",
    "kernel.kexec_load_disabled": "1",
    "kernel.yama.ptrace_scope": "2",
    "net.core.bpf_jit_harden": "2",
    "net.ipv6.conf.*.accept_ra": "0",
    "net.ipv6.conf.all.accept_ra": "0",
    "net.ipv6.conf.default.accept_ra": "0",
}


def test_bl_sys_02_kernel_and_router_advertisement_sysctls_persisted(host):
    persisted = host.file("/etc/sysctl.d/60-localguard.conf").content_string.splitlines()
    for key, value in SYSCTLS.items():
        assert f"{key} = {value}" in persisted, key


def test_bl_sys_02_router_advertisements_ignored_on_every_interface(host, hostenv):
    """accept_ra is read per interface, and "all" reaches none that exists: every interface there is
    now, and one made afterwards (from "default"), must refuse router advertisements."""
    if not hostenv["proc_sys_net_writable"]:
        pytest.skip("/proc/sys is read-only here: the role only persists the settings (checked above)")
    values = host.check_output("grep -H . /proc/sys/net/ipv6/conf/*/accept_ra").splitlines()
    assert values and all(line.endswith(":0") for line in values), values
    # A veth pair: built into every kernel that runs containers, unlike dummy.
    host.run("ip link delete lg-ra-test")
    host.check_output("ip link add lg-ra-test type veth peer name lg-ra-peer")
    try:
        assert host.check_output("cat /proc/sys/net/ipv6/conf/lg-ra-test/accept_ra") == "0"
    finally:
        host.run("ip link delete lg-ra-test")


def test_bl_sys_02_kernel_sysctls_live_on_real_hosts(host, hostenv):
    if hostenv["in_container"]:
        pytest.skip("kernel.*, fs.* and net.core.bpf_jit_harden are global: a container may not set them")
    for key, value in SYSCTLS.items():
        if "*" not in key:
            assert host.check_output(f"cat /proc/sys/{key.replace('.', '/')}") == value, key


# As an account without CAP_SYS_PTRACE: attach to its own child, which ptrace_scope 0 and 1 allow.
ATTACH_OWN_CHILD = """
import ctypes, json, os, signal, time
child = os.fork()
if child == 0:
    time.sleep(30)
    os._exit(0)
libc = ctypes.CDLL(None, use_errno=True)
rc = libc.ptrace(16, child, None, None)  # PTRACE_ATTACH
print(json.dumps({"rc": rc, "errno": ctypes.get_errno()}))
os.kill(child, signal.SIGKILL)
"""


def test_bl_sys_02_only_root_may_attach_a_debugger(host, hostenv):
    """kernel.yama.ptrace_scope=2: a foothold in the engine's or nginx's account cannot read another
    of its processes' memory (prompts, keys); the default lets a process attach to its children."""
    if hostenv["in_container"]:
        pytest.skip("kernel.yama.ptrace_scope is global: a container may not set it")
    attach = json.loads(host.check_output(f"runuser -u nobody -- python3 -c '{ATTACH_OWN_CHILD}'"))
    assert attach == {"rc": -1, "errno": 1}, attach  # EPERM
