"""Testinfra checks run against Molecule hosts or the live lab/fleet.

Under Molecule every command would go through Ansible (about 1.5 s each); a host reached with
`podman exec` answers in milliseconds, so podman-reachable hosts are swapped to the podman
backend. SSH behaviour itself is tested over real SSH in tests/lab.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import testinfra

ROOT = Path(__file__).resolve().parents[2]

PODMAN_CONNECTIONS = {"podman", "containers.podman.podman"}


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers",
        "molecule_only: reconfigures its host or drives a slow behaviour the role has the same on every "
        "host (a lockout, a ban's end); its role's Molecule scenario runs it, `make lab-test` leaves it out",
    )


def variables(testinfra_host) -> dict:
    backend = testinfra_host.backend
    return backend.ansible_runner.get_variables(backend.host) if backend.NAME == "ansible" else {}


def fast(testinfra_host):
    """The same host through `podman exec` where that reaches it (milliseconds, not seconds)."""
    hostvars = variables(testinfra_host)
    if hostvars.get("ansible_connection") in PODMAN_CONNECTIONS:
        return testinfra.get_host(f"podman://{hostvars.get('ansible_host', testinfra_host.backend.host)}")
    if "lab_container" in hostvars:
        return testinfra.get_host(f"podman://{hostvars['lab_container']}")
    return testinfra_host


@pytest.fixture(scope="module")
def host(_testinfra_host):
    return fast(_testinfra_host)


@pytest.fixture(scope="module")
def hostvars(_testinfra_host) -> dict:
    return variables(_testinfra_host)


@pytest.fixture(scope="session")
def first_host(request):
    """One of the hosts under test, for checks that run a whole playbook (once is enough): a GPU
    host where there is one, since every role runs there."""
    option = request.config.option
    hosts = testinfra.get_hosts(
        option.hosts.split(",") if option.hosts else [None],
        connection=option.connection,
        ansible_inventory=option.ansible_inventory,
    )

    def gpu_hosts_first(h) -> tuple[bool, str]:
        return "gpu_hosts" not in variables(h).get("group_names", []), h.backend.get_pytest_id()

    first = min(hosts, key=gpu_hosts_first)
    return fast(first), variables(first)


@pytest.fixture(scope="module")
def hostenv(host) -> dict:
    """The facts localguard_host_facts reports, read the same way on the host."""
    in_container = host.file("/run/.containerenv").exists or host.file("/run/systemd/container").exists
    net_writable = host.run("test -w /proc/sys/net/ipv4/conf/all/rp_filter").rc == 0
    return {"in_container": in_container, "proc_sys_net_writable": net_writable}


@pytest.fixture(scope="session")
def target(request) -> tuple[Path, Path]:
    """The playbook that converged these hosts and the inventory that reaches them."""
    inventory = Path(request.config.getoption("ansible_inventory"))
    scenario = os.environ.get("MOLECULE_SCENARIO_DIRECTORY")
    playbook = Path(scenario) / "converge.yml" if scenario else ROOT / "harden.yml"
    return playbook, inventory
