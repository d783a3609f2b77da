"""Fixtures for checks run from this machine against the lab fleet over its network."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / ".lab"


@pytest.fixture(scope="session")
def lab_inventory() -> dict:
    path = ROOT / "inventories" / "lab" / "hosts.yml"
    if not path.exists():
        pytest.fail("no lab inventory: run `make lab` first")
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="session")
def lab_hosts(lab_inventory) -> dict[str, dict]:
    """Managed lab hosts by name, with their address and container."""
    groups = lab_inventory["all"]["children"]
    return {
        name: vars_
        for group, body in groups.items()
        if group != "admins"
        for name, vars_ in body["hosts"].items()
    }


@pytest.fixture(scope="session")
def lab_admin(lab_inventory) -> dict[str, str]:
    vars_ = lab_inventory["all"]["vars"]
    return {
        "user": vars_["ansible_user"],
        "key": vars_["ansible_ssh_private_key_file"],
        "password": (LAB / f"{vars_['ansible_user']}.password").read_text().strip(),
        "known_hosts": str(LAB / "ssh" / "known_hosts"),
    }


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "fresh_lab: needs lab hosts never hardened yet; run before `make demo` (make lab-test)"
    )
    config.addinivalue_line("markers", "run_last: checks what the other tests left behind (moved to the end)")


def pytest_collection_modifyitems(items) -> None:
    items.sort(key=lambda item: item.get_closest_marker("run_last") is not None)
