"""The per-stage summary fails `make test` when a stage ran no test, and names failed tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("test_summary", ROOT / "scripts" / "test-summary.py")
summary = importlib.util.module_from_spec(spec)
spec.loader.exec_module(summary)

REPORT = (
    '<testsuites><testsuite name="pytest" tests="{tests}" failures="0" errors="0" skipped="{skipped}"/>'
    "</testsuites>"
)


def test_a_stage_without_report_or_with_only_skips_fails_the_run(tmp_path):
    (tmp_path / "unit.xml").write_text(REPORT.format(tests=12, skipped=2))
    (tmp_path / "molecule-empty.xml").write_text(REPORT.format(tests=3, skipped=3))
    lines, problems = summary.summarize(tmp_path, ["unit", "molecule-empty", "molecule-missing"])
    assert "10 passed or failed" in lines[0]
    assert problems == [
        "molecule-empty: ran no test",
        "molecule-missing: no test report (did its runner find any tests?)",
    ]
    assert summary.main(["x", str(tmp_path), "unit"]) == 0
    assert summary.main(["x", str(tmp_path), "unit", "molecule-missing"]) == 1


def test_failed_tests_are_named_with_their_message_and_fail_the_run(tmp_path):
    (tmp_path / "lab.xml").write_text(
        '<testsuites><testsuite tests="3" failures="1" errors="1" skipped="0">'
        '<testcase classname="tests.lab.test_gateway" name="test_ok"/>'
        '<testcase classname="tests.lab.test_gateway" name="test_gw_01[gpu1]">'
        '<failure message="AssertionError: 401 != 200&#10;more">trace</failure></testcase>'
        '<testcase classname="tests.lab.test_pki" name="test_setup"><error>fixture broke</error></testcase>'
        "</testsuite></testsuites>"
    )
    lines, problems = summary.summarize(tmp_path, ["lab"])
    assert lines[1:] == [
        "    FAILED tests.lab.test_gateway::test_gw_01[gpu1]: AssertionError: 401 != 200",
        "        more",
        "    FAILED tests.lab.test_pki::test_setup: fixture broke",
    ]
    assert problems == ["lab: 2 failed"]
    assert summary.main(["x", str(tmp_path), "lab"]) == 1


def test_the_first_failures_show_the_end_of_their_message(tmp_path):
    """A playbook's stderr sits at the end of the assertion message: it is shown for the first
    DETAILED_SHOWN failures, its last DETAIL_LINES non-blank lines, and not for later ones."""
    stderr = "&#10;".join(f"stderr line {n}" for n in range(40))
    cases = "".join(
        f'<testcase classname="t" name="test_{n}"><failure message="no JSON report (rc=250):&#10;&#10;'
        f'{stderr}">trace</failure></testcase>'
        for n in range(summary.DETAILED_SHOWN + 1)
    )
    (tmp_path / "molecule-engine.xml").write_text(
        f'<testsuites><testsuite tests="4" failures="4">{cases}</testsuite></testsuites>'
    )
    lines, _ = summary.summarize(tmp_path, ["molecule-engine"])
    tail = [f"        stderr line {n}" for n in range(40 - summary.DETAIL_LINES, 40)]
    first = ["    FAILED t::test_0: no JSON report (rc=250):", *tail]
    assert lines[1 : 2 + summary.DETAIL_LINES] == first
    assert lines[-1] == f"    FAILED t::test_{summary.DETAILED_SHOWN}: no JSON report (rc=250):"
    assert len(lines) == 1 + summary.DETAILED_SHOWN * (1 + summary.DETAIL_LINES) + 1
