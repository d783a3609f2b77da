"""Every task that enforces a control carries a tag named after its ID, so `--tags fw_04` runs it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONTROL_NAME = re.compile(r"^([A-Z]+(?:-[A-Z0-9]+)+) \|")
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
