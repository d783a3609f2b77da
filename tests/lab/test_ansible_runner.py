"""harden.yml run the way AWX runs a job: through ansible-runner, on the already hardened lab.

AWX hands each job to ansible-runner and reads the outcome from its artifacts; this test does the
same with ansible-runner's Python API: `status`, `rc`, and each host's recap from the
playbook_on_stats event under artifacts/<ident>/job_events/. On the hardened lab every managed
host must report no failure, no unreachable and nothing changed but the AIDE records of what
earlier tests changed behind the playbook's back, so this is also the lab's idempotence check;
afterwards AIDE finds nothing, so the next run would report none of localguard's own changes.

The private data dir is a temp dir removed when the test ends (the artifacts hold the job's
environment and output); a failure shows only statuses, counts, task names and their (no_log
censored) messages. Like AWX, ansible-runner turns host key checking off unless told otherwise:
here it is told to keep ansible.cfg's.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import ansible_runner
import pytest
import yaml
from playbook_runner import ROOT, is_aide_drift_report, task_named
from probes import podman

pytestmark = pytest.mark.lab
INVENTORY = ROOT / "inventories" / "lab" / "hosts.yml"
PLAYBOOK = "harden.yml"
IDENT = "harden"
RECAP_KEYS = {"ok": "ok", "changed": "changed", "failures": "failures", "dark": "unreachable"}
AIDE_RECORDS = ("BL-AIDE-04 |", "BL-AIDE-05 |")


def play_hosts(lab_inventory: dict, play_name_prefix: str) -> set[str]:
    """The lab hosts of harden.yml's play whose name starts with play_name_prefix."""
    plays = yaml.safe_load((ROOT / "playbooks" / "harden.yml").read_text())
    [pattern] = [play["hosts"] for play in plays if play["name"].startswith(play_name_prefix)]
    groups = pattern.split(":")
    assert all(g.isidentifier() for g in groups), f"not a plain union of groups: {pattern}"
    children = lab_inventory["all"]["children"]
    return {host for group in groups for host in (children.get(group, {}).get("hosts") or {})}


def job_events(artifacts: Path) -> list[dict]:
    files = (artifacts / "job_events").glob("*.json")
    return [json.loads(p.read_text()) for p in sorted(files, key=lambda p: int(p.name.split("-", 1)[0]))]


def host_recaps(stats: dict) -> dict[str, dict[str, int]]:
    """playbook_on_stats holds one host -> count map per outcome; turned into one recap per host."""
    hosts = {host for key in RECAP_KEYS for host in stats.get(key) or {}}
    return {
        host: {name: (stats.get(key) or {}).get(host, 0) for key, name in RECAP_KEYS.items()}
        for host in hosts
    }


def task_outcomes(events: list[dict]) -> tuple[list[str], list[str]]:
    """Tasks that changed something, and tasks that failed or could not reach their host."""
    changed, failed = [], []
    for event in events:
        data = event.get("event_data", {})
        where = f"{data.get('task', '?')} on {data.get('host', '?')}"
        if event["event"] == "runner_on_ok" and data.get("res", {}).get("changed"):
            changed.append(where)
        elif event["event"] == "runner_on_failed" and not data.get("ignore_errors"):
            failed.append(f"{where}: {str(data.get('res', {}).get('msg', ''))[:300]}")
        elif event["event"] == "runner_on_unreachable":
            failed.append(f"{where}: unreachable: {str(data.get('res', {}).get('msg', ''))[:300]}")
    return changed, failed


def test_harden_through_ansible_runner_on_the_hardened_lab_changes_nothing(lab_inventory, lab_hosts) -> None:
    # The preflight runs on every host harden.yml manages; the AIDE database is kept on the hosts
    # of the file-integrity play (the controller has none).
    managed = play_hosts(lab_inventory, "Preflight")
    aide_hosts = play_hosts(lab_inventory, "File integrity")
    assert managed, "no managed host in the lab inventory"
    venv_bin = Path(sys.executable).parent
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lg-runner-") as private:
        ansible_runner.run(
            private_data_dir=private,
            project_dir=str(ROOT),
            playbook=PLAYBOOK,
            inventory=str(INVENTORY),
            ident=IDENT,
            quiet=True,
            timeout=1500,
            envvars={
                "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
                "ANSIBLE_HOST_KEY_CHECKING": "True",
                "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            },
        )
        artifacts = Path(private) / "artifacts" / IDENT
        status = (artifacts / "status").read_text().strip()
        rc = int((artifacts / "rc").read_text().strip())
        events = job_events(artifacts)
    elapsed = time.monotonic() - started

    changed, failed = task_outcomes(events)
    stats = [e["event_data"] for e in events if e["event"] == "playbook_on_stats"]
    assert status == "successful" and rc == 0, (
        f"status {status}, rc {rc} after {elapsed:.0f} s; failed: {failed}"
    )
    assert len(stats) == 1, f"{len(stats)} playbook_on_stats events in the artifacts"
    recaps = host_recaps(stats[0])
    assert set(recaps) == managed, f"recap hosts {sorted(recaps)}, managed hosts {sorted(managed)}"
    for host, recap in sorted(recaps.items()):
        assert recap["ok"] > 0, f"{host}: ran no task: {recap}"
        assert recap["failures"] == 0 and recap["unreachable"] == 0, f"{host}: {recap}; {failed}"
    # Earlier lab tests change hosts behind the playbook's back (test accounts in /etc/passwd, a
    # file under /etc): BL-AIDE-04 reports that drift and BL-AIDE-05 takes it into the database.
    # Those two record outside changes; any other change is the playbook's own and not idempotent.
    drifted = {where.rsplit(" on ", 1)[1] for where in changed if is_aide_drift_report(where)}
    own = [
        where for where in changed
        if not (task_named(where, AIDE_RECORDS) and where.rsplit(" on ", 1)[1] in drifted)
    ]  # fmt: skip
    not_idempotent = {host: recap["changed"] for host, recap in recaps.items() if recap["changed"]}
    assert not own, f"changed on the hardened lab: {not_idempotent}; tasks: {changed}"
    # What AIDE would report at the start of the next run: nothing, localguard's changes included.
    assert aide_hosts <= managed and aide_hosts, f"AIDE hosts {sorted(aide_hosts)}"
    for host in sorted(aide_hosts):
        check = podman(lab_hosts[host]["lab_container"], "aide", "--config", "/etc/aide/aide.conf", "--check")
        assert check.returncode == 0, f"{host}: AIDE reports changes after the run:\n{check.stdout[-3000:]}"
    print(f"harden.yml via ansible-runner: {status}, rc {rc}, {len(recaps)} hosts, {elapsed:.1f} s")
