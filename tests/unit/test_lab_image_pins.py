"""The lab image's rotation controller runs the ansible-core the project pins (pyproject.toml)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pins(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\[\]-]+)==([^\s;#]+).*", line)
        if match and not line.lstrip().startswith("#"):
            found[match[1].lower().split("[")[0]] = match[2]
    return found


def test_controller_venv_pins_ansible_core_like_pyproject():
    project = pins(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    controller = pins((ROOT / "lab" / "controller-requirements.txt").read_text().splitlines())
    assert controller["ansible-core"] == project["ansible-core"]
    # Its dependencies are the versions the project's own controller runs with, where pinned there.
    for name in controller.keys() & project.keys():
        assert controller[name] == project[name], name
