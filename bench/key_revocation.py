#!/usr/bin/env python3
"""Revocation latency on the lab's gateways: by pull (the CA host re-signs the list, gateways
fetch it every few seconds) and by push (playbooks/api_key_revoke.yml over SSH, with every
gateway's pull stopped so only the push can deliver it).

For each path: issue a fresh key (playbooks/api_key_issue.yml), check it works everywhere, revoke
it, and time from the revocation's start until every gateway answers 401 (a request loop from the
client host's network namespace). The push's cost per gateway is the difference between pushing
the list to one gateway and to all of them; the pull's does not depend on the fleet size. Prints
the numbers measured in this one run; asserts nothing. Needs the hardened lab (make demo).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from netns import run_in_netns
from playbook_runner import run_playbook
from test_api_key_lifecycle import STATUS_PROBE

ROOT = Path(__file__).resolve().parent.parent

INVENTORY = ROOT / "inventories" / "lab" / "hosts.yml"
CA_BUNDLE = ROOT / ".lab" / "pki" / "ca.crt"


def podman(container: str, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", "exec", container, *cmd], capture_output=True, text=True, timeout=60)


def issue(name: str) -> str:
    run = run_playbook(ROOT / "playbooks" / "api_key_issue.yml", INVENTORY, "-e", f"name={name}")
    if run.rc != 0:
        raise SystemExit(f"issuing {name} failed: {run.failure_messages()}")
    return podman("lg-ca1", "cat", f"/etc/localguard/keys/delivery/{name}.key").stdout.strip()


def until_refused(urls: dict[str, str], key: str, result: dict) -> None:
    payload = {
        "urls": urls,
        "key": key,
        "path": "/v1/models",
        "ca": str(CA_BUNDLE),
        "until": 401,
        "timeout": 120,
    }
    result.update(run_in_netns("lg-client", STATUS_PROBE, payload))


def timed_revocation(urls: dict[str, str], key: str, revoke) -> tuple[float, float, dict]:
    """Seconds from the revocation's start to 401 everywhere, and the revoking step's own time."""
    result: dict = {}
    watcher = threading.Thread(target=until_refused, args=(urls, key, result))
    watcher.start()
    time.sleep(0.5)  # the watcher is polling before the revocation starts
    start = time.monotonic()
    revoke()
    took = time.monotonic() - start
    watcher.join()
    return result["seconds"] - 0.5, took, result["statuses"]


def main() -> int:
    hosts = yaml.safe_load(INVENTORY.read_text())["all"]["children"]["gpu_hosts"]["hosts"]
    urls = {name: f"https://{vars_['ansible_host']}" for name, vars_ in sorted(hosts.items())}
    stamp = time.strftime("%H%M%S")

    pull_key = issue(f"bench-pull-{stamp}")
    pull, pull_step, pull_statuses = timed_revocation(
        urls, pull_key, lambda: podman("lg-ca1", "localguard-keys", "revoke", "--name", f"bench-pull-{stamp}")
    )

    for gpu in urls:
        podman(f"lg-{gpu}", "systemctl", "stop", "localguard-keys-fetch")
    try:
        push_key = issue(f"bench-push-{stamp}")
        revoke_play = ROOT / "playbooks" / "api_key_revoke.yml"
        push, push_step, push_statuses = timed_revocation(
            urls, push_key, lambda: run_playbook(revoke_play, INVENTORY, "-e", f"name=bench-push-{stamp}")
        )
    finally:
        for gpu in urls:
            podman(f"lg-{gpu}", "systemctl", "start", "localguard-keys-fetch")

    # The push's cost per gateway: the same push to one gateway and to all of them.
    push_play = ROOT / "playbooks" / "key_list_push.yml"
    pushes = {}
    for limit in (f"ca1,{min(urls)}", None):
        start = time.monotonic()
        run_playbook(push_play, INVENTORY, limit=limit)
        pushes[1 if limit else len(urls)] = time.monotonic() - start
    per_gateway = (pushes[len(urls)] - pushes[1]) / (len(urls) - 1)

    print(f"gateways: {len(urls)}")
    print(f"pull: revoked on the CA host -> 401 on all in {pull:.2f} s ({pull_statuses})")
    print(f"push: revoke playbook start -> 401 on all in {push:.2f} s; the playbook took {push_step:.2f} s "
          f"({push_statuses})")  # fmt: skip
    print(f"push of the list alone: {pushes[1]:.2f} s to 1 gateway, {pushes[len(urls)]:.2f} s to "
          f"{len(urls)}: {per_gateway:.2f} s more per gateway (within one batch of forks)")  # fmt: skip
    print(f"ratio push/pull: {push / pull:.2f}")
    summary = {"gateways": len(urls), "pull_s": pull, "push_s": push, "push_playbook_s": push_step,
               "push_per_gateway_s": per_gateway}  # fmt: skip
    print(json.dumps({name: round(value, 3) for name, value in summary.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
