#!/usr/bin/env python3
"""Print how many tests each stage of `make test` ran, name the failed ones, and fail when a
stage ran none or failed.

Every pytest run of `make test` (unit, each Molecule scenario's Testinfra verifier, the lab)
writes JUnit XML to one directory. Molecule's verifier only warns "no tests found" and passes
when its directory matches nothing; here such a stage has no file, or a file with no tests, and
the whole run fails. It runs even when a stage failed, so the end of a CI log (often the only
part one gets to read) names what failed, whichever stage printed it minutes earlier, and shows
the end of the first failures' messages (a failed playbook's stderr, say).

Usage: scripts/test-summary.py <junit-dir> <stage> [<stage> ...]
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

COUNTS = ("tests", "failures", "errors", "skipped")
# A failed stage names at most this many of its failed tests; the rest are counted.
FAILED_SHOWN = 15
# Of the first few, the last lines of the message too: often the only trace of the cause.
DETAILED_SHOWN = 3
DETAIL_LINES = 15


def stage_counts(path: Path) -> dict[str, int]:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    return {key: sum(int(suite.get(key, 0)) for suite in suites) for key in COUNTS}


def failed_tests(path: Path) -> list[tuple[str, list[str]]]:
    """For each failed or erroring test case, `classname::name: first line of the message` and the
    message's last DETAIL_LINES lines after the first."""
    failed = []
    for case in ET.parse(path).getroot().iter("testcase"):
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is None:
            continue
        message = (problem.get("message") or problem.text or "").strip().splitlines()
        name = f"{case.get('classname', '')}::{case.get('name', '')}".lstrip(":")
        headline = f"{name}: {message[0][:200] if message else problem.tag}"
        detail = [line[:200] for line in message[1:] if line.strip()][-DETAIL_LINES:]
        failed.append((headline, detail))
    return failed


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
        failed = failed_tests(path)
        for shown, (headline, detail) in enumerate(failed[:FAILED_SHOWN]):
            lines.append(f"    FAILED {headline}")
            if shown < DETAILED_SHOWN:
                lines.extend(f"        {line}" for line in detail)
        if len(failed) > FAILED_SHOWN:
            lines.append(f"    ... and {len(failed) - FAILED_SHOWN} more")
        if failed:
            problems.append(f"{stage}: {len(failed)} failed")
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
