"""harden.yml run the way AWX runs a job: through ansible-runner, outcome read from its artifacts.

AWX hands each job to ansible-runner and reads the outcome from its artifacts; this does the same
with ansible-runner's Python API: `status`, `rc`, and each host's recap from the
playbook_on_stats event under artifacts/<ident>/job_events/.

The private data dir is a temp dir removed when the job ends (the artifacts hold the job's
environment and output); a failure shows only statuses, counts, task names and their (no_log
censored) messages. Like AWX, ansible-runner turns host key checking off unless told otherwise:
here it is told to keep ansible.cfg's.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import ansible_runner
import yaml
from playbook_runner import ROOT

IDENT = "harden"
RECAP_KEYS = {"ok": "ok", "changed": "changed", "failures": "failures", "dark": "unreachable"}


@dataclass
class Job:
    status: str
    rc: int
    events: list[dict]
    seconds: float

    def stats(self) -> list[dict]:
        return [e["event_data"] for e in self.events if e["event"] == "playbook_on_stats"]

    def outcomes(self) -> tuple[list[str], list[str]]:
        """Tasks that changed something, and tasks that failed or could not reach their host."""
        changed, failed = [], []
        for event in self.events:
            data = event.get("event_data", {})
            where = f"{data.get('task', '?')} on {data.get('host', '?')}"
            if event["event"] == "runner_on_ok" and data.get("res", {}).get("changed"):
                changed.append(where)
            elif event["event"] == "runner_on_failed" and not data.get("ignore_errors"):
                failed.append(f"{where}: {str(data.get('res', {}).get('msg', ''))[:300]}")
            elif event["event"] == "runner_on_unreachable":
                failed.append(f"{where}: unreachable: {str(data.get('res', {}).get('msg', ''))[:300]}")
        return changed, failed


def run_job(inventory: Path, *args: str) -> Job:
    """harden.yml against inventory (a file or an inventory directory), extra ansible-playbook args."""
    venv_bin = Path(sys.executable).parent
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lg-runner-") as private:
        ansible_runner.run(
            private_data_dir=private,
            project_dir=str(ROOT),
            playbook="harden.yml",
            inventory=str(inventory),
            cmdline=shlex.join(args) if args else None,
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
        files = sorted((artifacts / "job_events").glob("*.json"), key=lambda p: int(p.name.split("-", 1)[0]))
        events = [json.loads(p.read_text()) for p in files]
    return Job(status, rc, events, time.monotonic() - started)


def host_recaps(stats: dict) -> dict[str, dict[str, int]]:
    """playbook_on_stats holds one host -> count map per outcome; turned into one recap per host."""
    hosts = {host for key in RECAP_KEYS for host in stats.get(key) or {}}
    return {
        host: {name: (stats.get(key) or {}).get(host, 0) for key, name in RECAP_KEYS.items()}
        for host in hosts
    }


def play_hosts(hosts_yml: Path, play_name_prefix: str) -> set[str]:
    """The hosts of hosts_yml in harden.yml's play whose name starts with play_name_prefix."""
    plays = yaml.safe_load((ROOT / "playbooks" / "harden.yml").read_text())
    [pattern] = [play["hosts"] for play in plays if play["name"].startswith(play_name_prefix)]
    groups = pattern.split(":")
    assert all(g.isidentifier() for g in groups), f"not a plain union of groups: {pattern}"
    children = yaml.safe_load(hosts_yml.read_text())["all"]["children"]
    return {host for group in groups for host in (children.get(group, {}).get("hosts") or {})}
