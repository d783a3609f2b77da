"""Fixtures for PKI checks that need the CA host beside the host under test."""

from __future__ import annotations

import pytest
import testinfra

PODMAN_CONNECTIONS = {"podman", "containers.podman.podman"}


@pytest.fixture(scope="module")
def ca_name(hostvars) -> str:
    return hostvars["groups"]["ca"][0]


@pytest.fixture(scope="module")
def ca_vars(_testinfra_host, ca_name) -> dict:
    backend = _testinfra_host.backend
    return backend.ansible_runner.get_variables(ca_name) if backend.NAME == "ansible" else {}


@pytest.fixture(scope="module")
def ca_host(_testinfra_host, ca_name, ca_vars):
    """The CA host through `podman exec` where that reaches it, as tests/infra/conftest.py does."""
    if ca_vars.get("ansible_connection") in PODMAN_CONNECTIONS:
        return testinfra.get_host(f"podman://{ca_vars.get('ansible_host', ca_name)}")
    if "lab_container" in ca_vars:
        return testinfra.get_host(f"podman://{ca_vars['lab_container']}")
    return _testinfra_host.backend.ansible_runner.get_host(ca_name)


@pytest.fixture(scope="module")
def first_gpu(hostvars) -> None:
    """Cross-host checks run once, from the first GPU host."""
    if hostvars["inventory_hostname"] != hostvars["groups"].get("gpu_hosts", [None])[0]:
        pytest.skip("cross-host PKI checks run from the first GPU host only")
