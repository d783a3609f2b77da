"""Fixtures for PKI checks that need the CA host beside the host under test."""

from __future__ import annotations

import pytest
import testinfra

PODMAN_CONNECTIONS = {"podman", "containers.podman.podman"}


@pytest.fixture(scope="module")
def ca_name(hostvars) -> str:
    return hostvars["groups"]["ca"][0]


def reach(_testinfra_host, name: str):
    """A host of the inventory through `podman exec` where that reaches it, as tests/infra/conftest.py
    does for the host under test."""
    backend = _testinfra_host.backend
    hostvars = backend.ansible_runner.get_variables(name) if backend.NAME == "ansible" else {}
    if hostvars.get("ansible_connection") in PODMAN_CONNECTIONS:
        return testinfra.get_host(f"podman://{hostvars.get('ansible_host', name)}")
    if "lab_container" in hostvars:
        return testinfra.get_host(f"podman://{hostvars['lab_container']}")
    return backend.ansible_runner.get_host(name)


@pytest.fixture(scope="module")
def ca_host(_testinfra_host, ca_name):
    return reach(_testinfra_host, ca_name)


@pytest.fixture(scope="module")
def fleet(_testinfra_host, hostvars) -> list:
    """Every managed host, for checks that must leave the whole fleet as they found it."""
    groups = hostvars["groups"]
    names = sorted({*groups.get("gpu_hosts", []), *groups.get("log_collectors", []), *groups.get("ca", [])})
    return [reach(_testinfra_host, name) for name in names]


@pytest.fixture(scope="module")
def first_gpu(hostvars) -> None:
    """Cross-host checks run once, from the first GPU host."""
    if hostvars["inventory_hostname"] != hostvars["groups"].get("gpu_hosts", [None])[0]:
        pytest.skip("cross-host PKI checks run from the first GPU host only")
