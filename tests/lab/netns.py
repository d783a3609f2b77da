"""Run this machine's Python inside a lab host's network namespace.

Lab hosts have no network access to install clients into; the machine's venv has httpx and the
official openai client. Entering only the network namespace of a lab container (`nsenter -n`)
makes the traffic come from that host's address, through its firewall, as a client there would.
"""

from __future__ import annotations

import json
import subprocess
import sys


def container_pid(container: str) -> int:
    out = subprocess.run(
        ["podman", "inspect", "-f", "{{.State.Pid}}", container], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


def run_in_netns(container: str, code: str, payload: object = None, timeout: int = 300) -> object:
    """Run `code` (which reads JSON from stdin and prints JSON) in the container's netns."""
    proc = subprocess.run(
        ["nsenter", "-t", str(container_pid(container)), "-n", sys.executable, "-c", code],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"probe in {container} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)
