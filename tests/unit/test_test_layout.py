"""Test modules are collected by basename (no packages): `make test` runs tests/infra and tests/lab
in one pytest session, where two files of the same name stop collection before any test runs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_test_module_names_are_unique_across_infra_and_lab() -> None:
    modules = [*(ROOT / "tests" / "infra").rglob("test_*.py"), *(ROOT / "tests" / "lab").rglob("test_*.py")]
    names = Counter(path.name for path in modules)
    assert {name: count for name, count in names.items() if count > 1} == {}


def molecule_verified_files() -> set[Path]:
    """Test files some Molecule scenario's verifier runs: its directory and additional files."""
    files: set[Path] = set()
    for config in (ROOT / "molecule").glob("*/molecule.yml"):
        verifier = yaml.safe_load(config.read_text()).get("verifier", {})
        directory = Path(verifier["directory"].replace("${MOLECULE_PROJECT_DIRECTORY}", str(ROOT)))
        for entry in [
            directory,
            *(directory / extra for extra in verifier.get("additional_files_or_dirs", [])),
        ]:
            entry = entry.resolve()
            files |= set(entry.rglob("test_*.py")) if entry.is_dir() else {entry}
    return files


def test_every_molecule_only_test_runs_in_a_molecule_scenario() -> None:
    """`make lab-test` leaves molecule_only tests out: each must be in a file a scenario verifies."""
    marked = {
        path.resolve()
        for path in (ROOT / "tests" / "infra").rglob("test_*.py")
        if "@pytest.mark.molecule_only" in path.read_text()
    }
    assert marked, "no molecule_only test found: the marker's name changed?"
    assert marked - molecule_verified_files() == set()
