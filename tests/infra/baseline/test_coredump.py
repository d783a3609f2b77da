"""Core dumps off (BL-CORE-*): a core file is the process's memory on disk, model weights, prompts
and keys included. Runs under Molecule and on the lab; tests/lab/test_coredump.py aborts the engine."""

from __future__ import annotations

import pytest
from systemd_config import effective_settings


def hard_core_limit(host, user: str) -> str:
    """The hard core limit a session of `user` gets through PAM (pam_limits), as sudo, su, cron and
    SSH logins do."""
    return host.check_output(f"runuser -u {user} -- sh -c 'ulimit -H -c'")


def test_bl_core_01_login_sessions_get_a_hard_core_limit_of_0(host):
    """Started from a process with no limit (podman exec, Testinfra's own): without the control the
    session keeps `unlimited`. pam_limits' `*` does not cover root, so root is checked too."""
    assert hard_core_limit(host, "nobody") == "0"
    assert hard_core_limit(host, "root") == "0"


def test_bl_core_02_systemd_coredump_would_store_nothing(host):
    """Checked through systemd's own view of its configuration, whether or not systemd-coredump is
    installed (Debian's default is Storage=external)."""
    settings = effective_settings(host.check_output("systemd-analyze cat-config systemd/coredump.conf"))
    assert settings.get("Storage") == "none", settings
    assert settings.get("ProcessSizeMax") == "0", settings


def test_bl_core_03_services_cannot_raise_their_core_limit(host):
    """A service whose launcher asks for core files (`ulimit -c unlimited`) is refused: systemd gives
    every service a hard limit of 0. Without the control its default is 0 soft, unlimited hard."""
    assert host.check_output("systemctl show --property=DefaultLimitCORE --value") == "0"
    launcher = "ulimit -c unlimited 2>/dev/null; ulimit -H -c; ulimit -c"
    limits = host.check_output(f"systemd-run --quiet --pipe --wait --collect -- sh -c '{launcher}'")
    assert limits.split() == ["0", "0"], limits


def test_bl_core_03_an_aborting_service_leaves_no_core_file(host):
    """The same launcher, then an abort, in a directory of its own: no core file there."""
    workdir = host.check_output("mktemp -d /var/tmp/lg-core-test.XXXXXX")
    unit = f"lg-core-test-{workdir.rsplit('.', 1)[-1]}"
    try:
        # $$$$: systemd turns $$ into $, so the shell sees $$ (its own PID).
        host.run(
            f"systemd-run --quiet --wait --unit={unit} --property=WorkingDirectory={workdir} -- "
            "sh -c 'ulimit -c unlimited 2>/dev/null; kill -ABRT $$$$'"
        )
        result = host.check_output(f"systemctl show --property=Result --value {unit}")
        assert result in ("signal", "core-dump"), f"the service did not abort: {result}"
        # "core-dump" on a real host: the kernel pipes the core to /bin/false, which stores nothing.
        assert host.check_output(f"ls -A {workdir}") == ""
    finally:
        host.run(f"systemctl reset-failed {unit}; rm -rf {workdir}")


def test_bl_sys_02_kernel_pipes_cores_to_nothing(host, hostenv):
    """BL-CORE's kernel side, set by the sysctl family: a pipe to /bin/false stores nothing, whatever
    a process's limits; setuid programs never dump."""
    persisted = host.file("/etc/sysctl.d/60-localguard.conf").content_string
    assert "kernel.core_pattern = |/bin/false\n" in persisted
    assert "fs.suid_dumpable = 0\n" in persisted
    if hostenv["in_container"]:
        pytest.skip("kernel.core_pattern is global: a container may not set it (persisted for a real boot)")
    assert host.check_output("cat /proc/sys/kernel/core_pattern") == "|/bin/false"
    assert host.sysctl("fs.suid_dumpable") == 0
