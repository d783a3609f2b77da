"""KR-04 with KEY-08 on the lab: the rotation controller's service (what localguard-key-rotation.timer
starts) rotates a due key. ctl runs playbooks/api_key_rotate.yml against the lab over SSH, sandboxed,
as localguard-rotate; the registry on ca1 then holds the key's next generation.

Driven from this machine over real SSH (the lab's admin key and host keys), as an operator would:
the service is started by hand rather than waiting for the timer's next elapse.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from playbook_runner import ROOT, run_playbook

pytestmark = pytest.mark.lab
INVENTORY = ROOT / "inventories" / "lab" / "hosts.yml"
PLAYBOOKS = ROOT / "playbooks"
SERVICE = "localguard-key-rotation.service"
NAME = "lab-timer"


def ssh(lab_hosts, lab_admin, host: str, command: str, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", "-i", lab_admin["key"], "-o", f"UserKnownHostsFile={lab_admin['known_hosts']}",
         "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
         "-o", "ConnectTimeout=10", f"{lab_admin['user']}@{lab_hosts[host]['ansible_host']}", command],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def generations(lab_hosts, lab_admin) -> dict[int, dict]:
    """lab-timer's records in the registry on ca1, by generation."""
    listed = ssh(lab_hosts, lab_admin, "ca1", "sudo /usr/local/sbin/localguard-keys list")
    assert listed.returncode == 0, listed.stderr
    records = json.loads(listed.stdout)["keys"]
    return {int(r["id"].rsplit(".", 1)[1]): r for r in records if r["name"] == NAME}


def test_kr_04_the_timers_service_on_ctl_rotates_a_due_key(lab_hosts, lab_admin):
    # Due one second after it is made (max_age 1s): the next rotation must replace it.
    issue = run_playbook(PLAYBOOKS / "api_key_issue.yml", INVENTORY, "-e", f"name={NAME}", "-e", "max_age=1s")
    assert issue.rc == 0, issue.failure_messages() or issue.stderr[-2000:]
    before = generations(lab_hosts, lab_admin)
    assert before, "api_key_issue.yml made no record"
    current = max(before)
    time.sleep(2)

    # `systemctl start` of a oneshot service returns once the run has finished.
    started = ssh(lab_hosts, lab_admin, "ctl", f"sudo systemctl start {SERVICE}", timeout=900)
    state = ssh(lab_hosts, lab_admin, "ctl", f"systemctl show -p Result -p ExecMainStatus {SERVICE}")
    if started.returncode != 0:
        log = ssh(lab_hosts, lab_admin, "ctl", f"sudo journalctl -u {SERVICE} -n 80 --no-pager")
        pytest.fail(f"{SERVICE} failed ({state.stdout.strip()}):\n{log.stdout[-4000:]}")
    assert "Result=success" in state.stdout and "ExecMainStatus=0" in state.stdout, state.stdout

    after = generations(lab_hosts, lab_admin)
    # On a fresh lab the issued key is generation 1 and the rotation makes generation 2.
    assert current + 1 in after, after
    successor = after[current + 1]
    assert successor["rotated_from"] == f"{NAME}.{current}"
    assert successor["status"] == "active"
