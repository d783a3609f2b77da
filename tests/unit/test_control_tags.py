"""Every task that enforces a control carries a tag named after its ID, so `--tags fw_04` runs it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONTROL_NAME = re.compile(r"^([A-Z]+(?:-[A-Z0-9]+)+) \|")
CONTROL_TAG = re.compile(r"^[a-z]+(?:_[a-z0-9]+)+$")
TASK_FILES = sorted([*ROOT.glob("roles/*/tasks/*.yml"), *ROOT.glob("playbooks/*.yml")])


def tasks(items: list | None) -> Iterator[dict]:
    for item in items or []:
        if not isinstance(item, dict):
            continue
        yield item
        for section in ("block", "rescue", "always", "tasks", "pre_tasks", "post_tasks", "handlers"):
            yield from tasks(item.get(section))


def control_tasks() -> list[tuple[str, str, list[str]]]:
    found = []
    for path in TASK_FILES:
        for task in tasks(yaml.safe_load(path.read_text())):
            match = CONTROL_NAME.match(str(task.get("name", "")))
            if match:
                found.append(
                    (f"{path.relative_to(ROOT)}: {task['name']}", match.group(1), task.get("tags", []))
                )
    return found


def test_the_walk_finds_the_controls() -> None:
    ids = {control for _, control, _ in control_tasks()}
    assert {"FW-04", "BL-SSH-03", "PKI-07", "GW-09", "PRE-01"} <= ids


@pytest.mark.parametrize(
    ("where", "control", "tags"), control_tasks(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_control_task_is_tagged_with_its_id(where: str, control: str, tags: list[str]) -> None:
    expected = control.lower().replace("-", "_")
    assert expected in tags, f"{where} lacks tags: [{expected}]"


# A task that reads another task's registered result needs it under its own tags too: otherwise
# `--tags <its id>` runs it alone and it fails on an undefined variable. Reads guarded by
# `| default(` or `is defined` are fine.
SECTIONS = ("block", "rescue", "always")
IMPORT = ("ansible.builtin.import_tasks", "import_tasks")


def role_tasks(
    items: list | None, inherited: frozenset[str], here: Path
) -> Iterator[tuple[dict, frozenset[str]]]:
    """Each task a role runs statically from `items`, with the tags it inherits from blocks and imports."""
    for task in items or []:
        tags = inherited | set(task.get("tags") or [])
        imported = next((task[key] for key in IMPORT if key in task), None)
        if imported:
            path = here / imported
            yield from role_tasks(yaml.safe_load(path.read_text()), tags, path.parent)
        elif any(section in task for section in SECTIONS):
            for section in SECTIONS:
                yield from role_tasks(task.get(section), tags, here)
        else:
            yield task, tags


def unguarded_read(name: str, text: str) -> bool:
    guarded = r"(?!\s*\|\s*default\b|\s+is\s+(?:not\s+)?defined\b)"
    return re.search(rf"\b{re.escape(name)}\b{guarded}", text) is not None


def registered_reads() -> list[tuple[str, str, list[str]]]:
    """(reader, writer, control tags the writer lacks) for every read of a registered result."""
    found = []
    for main in sorted(ROOT.glob("roles/*/tasks/main.yml")):
        role = main.parents[1]
        walked = list(role_tasks(yaml.safe_load(main.read_text()), frozenset(), main.parent))
        writers = [(task, tags) for task, tags in walked if "register" in task]
        # Role vars built from a registered result read it too (baseline_login_user from baseline_login).
        role_vars_file = role / "vars" / "main.yml"
        role_vars = yaml.safe_load(role_vars_file.read_text()) or {} if role_vars_file.exists() else {}
        reads_of = {task["register"]: {task["register"]} for task, _ in writers}
        for _ in range(len(role_vars)):
            for name, body in role_vars.items():
                text = yaml.safe_dump(body)
                for aliases in reads_of.values():
                    if any(unguarded_read(alias, text) for alias in aliases):
                        aliases.add(name)
        for reader, reader_tags in walked:
            body = yaml.safe_dump({k: v for k, v in reader.items() if k not in ("name", "register", "tags")})
            for writer, writer_tags in writers:
                if writer is reader or "always" in writer_tags:
                    continue
                if any(unguarded_read(alias, body) for alias in reads_of[writer["register"]]):
                    missing = sorted(tag for tag in reader_tags - writer_tags if CONTROL_TAG.match(tag))
                    found.append((f"{role.name}: {reader.get('name')}", str(writer.get("name")), missing))
    return found


def test_the_walk_finds_registered_reads() -> None:
    readers = {reader for reader, _, _ in registered_reads()}
    assert any("BL-SSH-04" in reader for reader in readers)
    assert any("FW-06" in reader for reader in readers)


@pytest.mark.parametrize(
    ("reader", "writer", "missing"), registered_reads(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_a_control_run_alone_has_the_results_it_reads(reader: str, writer: str, missing: list[str]) -> None:
    assert not missing, f"{reader} reads what '{writer}' registers, which lacks tags: {missing}"
