"""Run a playbook of this repository and read its outcome from the JSON callback.

Tests use it for the behaviours a recap shows: `--check` reporting nothing to change on a
converged host, bad variables failing before any task changes anything.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


# The task of BL-AIDE-04 that keeps, as evidence, what changed on a host since the last run.
AIDE_DRIFT_REPORT = "BL-AIDE-04 | Keep the report"


def task_named(task_name: str, prefix: str | tuple[str, ...]) -> bool:
    """Whether a task's own name starts with prefix (or one of them), whether it is reported bare
    or, as the JSON callback reports a role's tasks, as "role : name"."""
    return task_name.split(" : ", 1)[-1].startswith(prefix)


def is_aide_drift_report(task_name: str) -> bool:
    return task_named(task_name, AIDE_DRIFT_REPORT)


@dataclass
class PlaybookRun:
    rc: int
    stats: dict[str, dict[str, int]]
    plays: list[dict]
    stderr: str

    def total(self, key: str) -> int:
        return sum(host.get(key, 0) for host in self.stats.values())

    def changed_tasks(self) -> list[str]:
        return [
            f"{task['task']['name']} on {host}"
            for play in self.plays
            for task in play["tasks"]
            for host, result in task["hosts"].items()
            if result.get("changed")
        ]

    def task_messages(self, task_prefix: str) -> list[str]:
        """The `msg` of each host's result of the tasks whose name starts with task_prefix."""
        return [
            str(result.get("msg", ""))
            for play in self.plays
            for task in play["tasks"]
            if task_named(task["task"]["name"], task_prefix)
            for result in task["hosts"].values()
            if "msg" in result
        ]

    def host_changes(self) -> list[str]:
        """Changed tasks, less the AIDE drift reports (BL-AIDE-04): before a run changes anything it
        keeps, as evidence, what changed on the host since the last run (earlier tests' accounts and
        files included). A report written is not a change the run made to the host."""
        return [where for where in self.changed_tasks() if not is_aide_drift_report(where)]

    def ran_on(self, task_prefix: str) -> list[str]:
        """Hosts on which a task whose name starts with `task_prefix` ran (was not skipped)."""
        return sorted(
            host
            for play in self.plays
            for task in play["tasks"]
            if task_named(task["task"]["name"], task_prefix)
            for host, result in task["hosts"].items()
            if not result.get("skipped")
        )

    def failure_messages(self) -> list[str]:
        """Messages of failed results, looking inside loop items too."""
        failed = [
            result
            for play in self.plays
            for task in play["tasks"]
            for host_result in task["hosts"].values()
            for result in [host_result, *host_result.get("results", [])]
            if result.get("failed")
        ]
        return [str(result.get("msg", "")) for result in failed]


def run_playbook(
    playbook: Path,
    inventory: Path,
    *args: str,
    limit: str | None = None,
    timeout: int = 900,
    env: dict[str, str] | None = None,
) -> PlaybookRun:
    env = dict(
        os.environ,
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        **(env or {}),
    )
    cmd = ["ansible-playbook", "-i", str(inventory), str(playbook), *args]
    if limit:
        cmd += ["--limit", limit]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    try:
        report = json.loads(proc.stdout[proc.stdout.index("{") :])
    except ValueError as exc:
        raise AssertionError(
            f"no JSON report from ansible-playbook (rc={proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        ) from exc
    return PlaybookRun(proc.returncode, report["stats"], report["plays"], proc.stderr)
