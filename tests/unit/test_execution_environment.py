"""The execution environment AWX runs holds what CI tests.

`ansible-builder create` generates the build context of execution-environment.yml (no image is
built: there is no registry here to pull the base image from). Its Python requirements must be
pyproject.toml's runtime dependencies exactly, its collections requirements.yml, its
ansible-runner the dev pin the lab's ansible-runner test runs, and its interpreter a Python
pyproject allows. The drift tests edit a temp copy of the project and expect each check to fail.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT_FILES = ("execution-environment.yml", "pyproject.toml", "requirements.yml")


def _key(line: str) -> tuple:
    req = Requirement(line)
    return canonicalize_name(req.name), str(req.specifier), tuple(sorted(req.extras)), str(req.marker or "")


def _requirement_keys(lines: list[str]) -> list[tuple]:
    return sorted(_key(line) for line in lines)


def _pin(requirements: list[str], name: str) -> str:
    """The requirement string for `name` in a pyproject list, e.g. 'ansible-runner==2.4.3'."""
    matches = [r for r in requirements if canonicalize_name(Requirement(r).name) == name]
    assert len(matches) == 1, f"{name}: {len(matches)} entries in {requirements}"
    return matches[0]


def build_context(project: Path, dest: Path) -> Path:
    context = dest / "context"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ansible_builder",
            "create",
            "--file",
            str(project / "execution-environment.yml"),
            "--context",
            str(context),
            "--output-filename",
            "Containerfile",
        ],
        cwd=project,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return context


def containerfile_args(containerfile: str) -> dict[str, str]:
    return dict(re.findall(r'^ARG (\w+)="([^"]*)"$', containerfile, flags=re.M))


def context_problems(project: Path, context: Path) -> list[str]:
    """What in the generated build context differs from what CI installs; empty when none."""
    problems: list[str] = []
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    runtime = pyproject["dependencies"]
    dev = pyproject["optional-dependencies"]["dev"]

    containerfile_path = context / "Containerfile"
    if not containerfile_path.is_file():
        return [f"no Containerfile in {context}"]
    containerfile = containerfile_path.read_text()
    if not re.search(r"^RUN .*ansible-galaxy collection install .*-r requirements\.yml", containerfile, re.M):
        problems.append("the Containerfile installs no collections from requirements.yml")
    if "COPY _build/requirements.txt requirements.txt" not in containerfile or not re.search(
        r"introspect .*--user-pip=requirements\.txt", containerfile
    ):
        problems.append("the Containerfile installs no Python requirements from _build/requirements.txt")

    build = context / "_build"
    pip_file = build / "requirements.txt"
    if not pip_file.is_file():
        problems.append("no _build/requirements.txt in the context")
    else:
        lines = [
            line.split("#", 1)[0].strip()
            for line in pip_file.read_text().splitlines()
            if line.split("#", 1)[0].strip()
        ]
        if _requirement_keys(lines) != _requirement_keys(runtime):
            problems.append(
                f"the EE's Python requirements {sorted(lines)} are not pyproject's runtime dependencies "
                f"{sorted(runtime)}"
            )

    galaxy_file = build / "requirements.yml"
    if not galaxy_file.is_file():
        problems.append("no _build/requirements.yml in the context")
    elif yaml.safe_load(galaxy_file.read_text()) != yaml.safe_load(
        (project / "requirements.yml").read_text()
    ):
        problems.append("the EE's galaxy requirements are not requirements.yml")

    args = containerfile_args(containerfile)
    refs = args.get("ANSIBLE_INSTALL_REFS", "").split()
    for name, source in (("ansible-core", runtime), ("ansible-runner", dev)):
        wanted = _pin(source, name)
        got = [r for r in refs if canonicalize_name(Requirement(r).name) == name]
        if [_key(r) for r in got] != [_key(wanted)]:
            problems.append(f"the EE installs {got or 'no ' + name}, pyproject pins {wanted}")

    python = re.fullmatch(r".*python(\d+\.\d+)", args.get("PYCMD", ""))
    if not python or not SpecifierSet(pyproject["requires-python"]).contains(python[1]):
        problems.append(
            f"the EE's interpreter {args.get('PYCMD')!r} is not pyproject's {pyproject['requires-python']}"
        )

    base = args.get("EE_BASE_IMAGE", "")
    registry, _, rest = base.partition("/")
    if not ("." in registry or ":" in registry) or not rest or not re.search(r"[:@][^/]+$", rest):
        problems.append(f"base image {base!r} is not a fully qualified name with a tag or digest")
    return problems


@pytest.fixture
def project(tmp_path) -> Path:
    """A temp copy of the files the EE is generated from."""
    copy = tmp_path / "project"
    copy.mkdir()
    for name in PROJECT_FILES:
        shutil.copy(ROOT / name, copy / name)
    return copy


def test_execution_environment_matches_what_ci_installs(tmp_path) -> None:
    context = build_context(ROOT, tmp_path)
    assert context_problems(ROOT, context) == []
    # An SSH client for the controller side, from bindep.
    assert "openssh-clients" in (context / "_build" / "bindep.txt").read_text()


def _edit_ee(project: Path, change) -> None:
    path = project / "execution-environment.yml"
    definition = yaml.safe_load(path.read_text())
    change(definition["dependencies"])
    path.write_text(yaml.safe_dump(definition, sort_keys=False))


def _problems_after(project: Path, tmp_path: Path) -> list[str]:
    return context_problems(project, build_context(project, tmp_path))


def _bump(requirement: str) -> str:
    req = Requirement(requirement)
    return f"{req.name}{','.join([*map(str, req.specifier), '!=0.0.1'])}"


def test_drift_python_requirement_changed_in_ee_fails(project, tmp_path) -> None:
    _edit_ee(project, lambda deps: deps["python"].__setitem__(0, _bump(deps["python"][0])))
    assert any("not pyproject's runtime dependencies" in p for p in _problems_after(project, tmp_path))


def test_drift_runtime_dependency_added_to_pyproject_fails(project, tmp_path) -> None:
    path = project / "pyproject.toml"
    text = path.read_text()
    assert "\ndependencies = [\n" in text
    path.write_text(text.replace("\ndependencies = [\n", '\ndependencies = [\n  "requests==2.32.3",\n', 1))
    assert any("not pyproject's runtime dependencies" in p for p in _problems_after(project, tmp_path))


def test_drift_dev_tool_in_ee_requirements_fails(project, tmp_path) -> None:
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    _edit_ee(project, lambda deps: deps["python"].append(_pin(dev, "pytest")))
    assert any("not pyproject's runtime dependencies" in p for p in _problems_after(project, tmp_path))


def test_drift_galaxy_requirements_inline_fails(project, tmp_path) -> None:
    collections = yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]
    _edit_ee(project, lambda deps: deps.__setitem__("galaxy", {"collections": collections[:-1]}))
    assert "the EE's galaxy requirements are not requirements.yml" in _problems_after(project, tmp_path)


def test_drift_ansible_runner_pin_fails(project, tmp_path) -> None:
    path = project / "pyproject.toml"
    dev = tomllib.loads(path.read_text())["project"]["optional-dependencies"]["dev"]
    path.write_text(path.read_text().replace(f'"{_pin(dev, "ansible-runner")}"', '"ansible-runner==0.0.1"'))
    assert any("pyproject pins ansible-runner==0.0.1" in p for p in _problems_after(project, tmp_path))


def test_drift_interpreter_fails(project, tmp_path) -> None:
    _edit_ee(project, lambda deps: deps["python_interpreter"].update(python_path="/usr/bin/python3.9"))
    assert any("interpreter" in p for p in _problems_after(project, tmp_path))
