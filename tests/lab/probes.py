"""Probes run from lab hosts or this machine: commands in a host, TCP reachability."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import yaml
from ansible_collections.localguard.hardening.plugins.module_utils.localguard_engines import engine

# The lab's GPU hosts and their engines, as scripts/lab.py builds them.
LAB_ENGINES = {"gpu1": engine("llama_cpp"), "gpu2": engine("ollama"), "gpu3": engine("vllm")}
LAB_GROUP_VARS = Path(__file__).resolve().parents[2] / "inventories" / "lab" / "group_vars"


def lab_group_vars(group: str) -> dict:
    """The lab inventory's settings for one group (inventories/lab/group_vars/<group>.yml)."""
    return yaml.safe_load((LAB_GROUP_VARS / f"{group}.yml").read_text())


def podman(container: str, *cmd: str, user: str | None = None) -> subprocess.CompletedProcess:
    prefix = ["runuser", "-u", user, "--"] if user else []
    return subprocess.run(
        ["podman", "exec", container, *prefix, *cmd], capture_output=True, text=True, timeout=30
    )


def tcp_open(src: str, address: str, port: int, user: str | None = None) -> bool:
    return podman(src, "nc", "-z", "-w", "1", address, str(port), user=user).returncode == 0


def controller_tcp_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def tcp_probe(src: str, address: str, port: int) -> str:
    """'open', 'refused' (a RST: nothing listens, nothing filters) or 'timeout' (dropped), as seen
    from inside lab host `src`; a probe that breaks says so instead of passing as 'closed'."""
    script = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('{address}', {port}), timeout=1).close(); print('open')\n"
        "except ConnectionRefusedError:\n"
        "    print('refused')\n"
        "except TimeoutError:\n"
        "    print('timeout')\n"
    )
    result = podman(src, "python3", "-c", script)
    assert result.returncode == 0 and result.stdout.strip(), f"probe from {src} broke: {result.stderr}"
    return result.stdout.strip()


def lab_ssh(lab_admin: dict, address: str, *options: str) -> list[str]:
    """OpenSSH from this machine as the lab's admin, key only, no config file: argv up to the
    command, which the caller appends."""
    return ["ssh", "-F", "none", "-i", lab_admin["key"], "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={lab_admin['known_hosts']}", "-o", "StrictHostKeyChecking=yes",
            *options, f"{lab_admin['user']}@{address}"]  # fmt: skip
