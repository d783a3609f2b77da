"""Test modules are collected by basename (no packages): `make test` runs tests/infra and tests/lab
in one pytest session, where two files of the same name stop collection before any test runs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_test_module_names_are_unique_across_infra_and_lab() -> None:
    modules = [*(ROOT / "tests" / "infra").rglob("test_*.py"), *(ROOT / "tests" / "lab").rglob("test_*.py")]
    names = Counter(path.name for path in modules)
    assert {name: count for name, count in names.items() if count > 1} == {}
