"""BL-CORE on the lab: the engine aborts, leaves no core file anywhere, and its unit brings it back.

A core file is the engine's memory on disk: the model's weights, the prompts and replies it held.
The lab's kernel is this machine's (core_pattern "core", a file in the crashing process's working
directory), so only the limits stand between an abort and a core: the engine unit's LimitCORE=0
(EN-02) and the baseline's DefaultLimitCORE=0 (BL-CORE-03).
"""

from __future__ import annotations

import time

import pytest
from probes import LAB_ENGINES, podman

pytestmark = pytest.mark.lab

GPU = "gpu1"
CONTAINER = f"lg-{GPU}"
ENGINE = LAB_ENGINES[GPU]
# The engine's working directory is its state directory on /; /tmp, /var/tmp and /run may be
# filesystems of their own, which `find -xdev` from / would not enter.
SEARCHED = ("/", "/tmp", "/var/tmp", "/run")


def sh(script: str) -> str:
    result = podman(CONTAINER, "sh", "-c", script)
    assert result.returncode == 0, (script, result.stderr)
    return result.stdout.strip()


def main_pid() -> int:
    return int(sh(f"systemctl show --property=MainPID --value {ENGINE.unit}"))


def core_limits(pid: int) -> list[str]:
    """Soft and hard core size limits of a running process."""
    return sh(f"grep '^Max core file size' /proc/{pid}/limits").split()[4:6]


def serves() -> bool:
    url = f"http://127.0.0.1:{ENGINE.port}/v1/models"
    return podman(CONTAINER, "curl", "-sf", "-o", "/dev/null", "-m", "5", url).returncode == 0


def test_bl_core_03_an_aborted_engine_leaves_no_core_file_and_comes_back():
    pid = main_pid()
    assert pid > 0, f"{ENGINE.unit} is not running"
    assert core_limits(pid) == ["0", "0"]
    # What the engine itself (or a library in it) could do before it crashes: raise its soft core
    # limit to the hard one. Done from outside as its own account; without the controls the hard
    # limit is unlimited and the abort below writes a core file.
    hard = core_limits(pid)[1]
    raised = podman(CONTAINER, "prlimit", f"--pid={pid}", f"--core={hard}:", user=ENGINE.account)
    assert raised.returncode == 0, raised.stderr
    marker = sh("mktemp /root/lab-coredump.XXXXXX")
    since = sh("date +%s")
    try:
        sh(f"kill -ABRT {pid}")
        deadline = time.monotonic() + 180
        while main_pid() in (0, pid) or not serves():
            assert time.monotonic() < deadline, f"{ENGINE.unit} did not come back after the abort"
            time.sleep(2)
        journal = sh(f"journalctl --unit={ENGINE.unit} --since=@{since} --no-pager --output=cat")
        assert "status=6/ABRT" in journal, journal
        found = sh(
            f"find {' '.join(SEARCHED)} -xdev -newer {marker} -type f "
            r"\( -name core -o -name 'core.[0-9]*' \) 2>/dev/null; true"
        )
        assert found == "", f"core files written: {found}"
        if sh("command -v coredumpctl || true"):
            listed = podman(
                CONTAINER, "coredumpctl", "--no-pager", "--no-legend", "list", f"--since=@{since}"
            )
            assert f" {pid} " not in listed.stdout, listed.stdout
    finally:
        sh(f"rm -f {marker}")
