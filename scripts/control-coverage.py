#!/usr/bin/env python3
"""List the control IDs of the README's table that no test carries, and fail if there are any.

A test carries an ID when the ID appears in its file, literally (`FW-08`, in a docstring or a
check's name) or in a test function's name (`test_fw_08_...`, `test_gw_02_03_...`). Ranges in the
table (`BL-SSH-01..05`) stand for each ID in them.

Usage: scripts/control-coverage.py [README] [TESTS_DIR]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^\|\s*([A-Z]+(?:-[A-Z]+)?)-(\d\d)(?:\.\.(\d\d))?\s*\|")


def readme_ids(readme: str) -> list[str]:
    ids = []
    for line in readme.splitlines():
        match = ROW.match(line)
        if match:
            family, first, last = match.group(1), int(match.group(2)), int(match.group(3) or match.group(2))
            ids.extend(f"{family}-{n:02d}" for n in range(first, last + 1))
    return ids


def carried(control: str, sources: str) -> bool:
    """`FW-08` anywhere, or a test named test_fw_08_..., test_gw_02_03_... (a run of numbers)."""
    family, number = control.lower().rsplit("-", 1)
    named = rf"def test_{family.replace('-', '_')}(?:_\d\d)*_{number}(?:_|\()"
    return control in sources or re.search(named, sources) is not None


def uncovered(readme: str, sources: str) -> list[str]:
    return [control for control in readme_ids(readme) if not carried(control, sources)]


def main(argv: list[str]) -> int:
    readme = Path(argv[1]) if len(argv) > 1 else ROOT / "README.md"
    tests = Path(argv[2]) if len(argv) > 2 else ROOT / "tests"
    sources = "\n".join(path.read_text() for path in sorted(tests.rglob("*.py")))
    ids = readme_ids(readme.read_text())
    missing = uncovered(readme.read_text(), sources)
    print(f"control-coverage: {len(ids) - len(missing)} of {len(ids)} README control IDs carried by a test")
    for control in missing:
        print(f"control-coverage: no test carries {control}", file=sys.stderr)
    return 1 if missing or not ids else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
