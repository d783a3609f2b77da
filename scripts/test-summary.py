#!/usr/bin/env python3
"""Print how many tests each stage of `make test` ran, and fail when one ran none.

Every pytest run of `make test` (unit, each Molecule scenario's Testinfra verifier, the lab)
writes JUnit XML to one directory. Molecule's verifier only warns "no tests found" and passes
when its directory matches nothing; here such a stage has no file, or a file with no tests, and
the whole run fails.

Usage: scripts/test-summary.py <junit-dir> <stage> [<stage> ...]
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

COUNTS = ("tests", "failures", "errors", "skipped")


def stage_counts(path: Path) -> dict[str, int]:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    return {key: sum(int(suite.get(key, 0)) for suite in suites) for key in COUNTS}


def summarize(junit_dir: Path, stages: list[str]) -> tuple[list[str], list[str]]:
    """Lines to print, and the problems that fail the run."""
    lines, problems = [], []
    for stage in stages:
        path = junit_dir / f"{stage}.xml"
        if not path.exists():
            lines.append(f"{stage:<24} no result")
            problems.append(f"{stage}: no test report (did its runner find any tests?)")
            continue
        counts = stage_counts(path)
        ran = counts["tests"] - counts["skipped"]
        lines.append(
            f"{stage:<24} {ran:>4} passed or failed, {counts['skipped']:>3} skipped,"
            f" {counts['failures'] + counts['errors']:>3} failed"
        )
        if ran == 0:
            problems.append(f"{stage}: ran no test")
    return lines, problems


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    lines, problems = summarize(Path(argv[1]), argv[2:])
    print("\n".join(["tests per stage:", *lines]))
    for problem in problems:
        print(f"test-summary: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
