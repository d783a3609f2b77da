"""The collection as operators get it: built, installed into a new venv, run by its FQCN.

`ansible-galaxy collection build` packs what galaxy.yml ships; a venv with only pyproject's
runtime dependencies installs it, and `ansible-playbook localguard.hardening.harden`, run from an
empty directory (none of this repository's ansible.cfg, roles or plugins paths), converges a lab
GPU host that drifted, then reports nothing to change on the next run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
from playbook_runner import ROOT
from probes import podman

pytestmark = pytest.mark.lab

INVENTORY = ROOT / "inventories" / "lab" / "hosts.yml"
HOST = "gpu2"
# What a drift on the host looks like: an edited sshd_config and a removed sysctl drop-in.
DRIFT = "echo 'MaxAuthTries 6' >> /etc/ssh/sshd_config && rm -f /etc/sysctl.d/60-localguard.conf"


def operator_env(**extra: str) -> dict[str, str]:
    """The environment of an operator's shell: none of this repository's Ansible settings."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}, **extra}


def run(*cmd: str | Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("collection")
    run(
        ROOT / ".venv" / "bin" / "ansible-galaxy",
        "collection",
        "build",
        "--output-path",
        work,
        ROOT,
        cwd=ROOT,
    )
    (tarball,) = work.glob("localguard-hardening-*.tar.gz")
    venv = work / "venv"
    run(sys.executable, "-m", "venv", venv)
    runtime = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    run(venv / "bin" / "pip", "install", "-q", *runtime)
    collections = work / "collections"
    run(
        venv / "bin" / "ansible-galaxy",
        "collection",
        "install",
        "--no-deps",
        # Installed in the operator's home already or not, this run's tarball is the one tested.
        "--force",
        "-p",
        collections,
        tarball,
        cwd=work,
        env=operator_env(),
    )
    operator = work / "operator"
    operator.mkdir()
    (operator / "ansible.cfg").write_text(
        f"[defaults]\ncollections_path = {collections}\ninterpreter_python = /usr/bin/python3\n"
        "forks = 20\n\n[ssh_connection]\npipelining = true\n"
    )
    return {"tarball": tarball, "venv": venv, "collections": collections, "operator": operator}


def harden(installed: dict) -> dict:
    env = operator_env(
        ANSIBLE_CONFIG=str(installed["operator"] / "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
    )
    proc = subprocess.run(
        [
            installed["venv"] / "bin" / "ansible-playbook",
            "-i",
            INVENTORY,
            "localguard.hardening.harden",
            "--limit",
            HOST,
        ],
        cwd=installed["operator"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return json.loads(proc.stdout)["stats"][HOST]


def test_tarball_ships_the_collection_and_not_the_lab(installed) -> None:
    with tarfile.open(installed["tarball"]) as tar:
        names = set(tar.getnames())
    assert {
        "MANIFEST.json",
        "meta/runtime.yml",
        "playbooks/harden.yml",
        "roles/gateway/tasks/main.yml",
    } <= names
    assert "plugins/modules/localguard_api_key.py" in names
    kept_home = (
        "molecule/",
        "lab/",
        "bench/",
        ".lab/",
        ".venv/",
        ".cache/",
        "tests/lab/",
        "tests/infra/",
        "tests/unit/",
    )
    assert not [name for name in names if name.startswith(kept_home)]


def test_installed_collection_converges_a_drifted_host_then_changes_nothing(installed, lab_hosts) -> None:
    podman(lab_hosts[HOST]["lab_container"], "sh", "-c", DRIFT).check_returncode()
    first = harden(installed)
    assert first["changed"] >= 1, first
    sshd = podman(lab_hosts[HOST]["lab_container"], "cat", "/etc/ssh/sshd_config")
    sshd.check_returncode()
    assert "MaxAuthTries 6" not in sshd.stdout
    second = harden(installed)
    assert second["changed"] == 0 and second["failures"] == 0, second
