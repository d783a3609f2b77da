"""PlaybookRun.host_changes() leaves out BL-AIDE-04's drift report, however the callback names it."""

from __future__ import annotations

from playbook_runner import AIDE_DRIFT_REPORT, PlaybookRun, is_aide_drift_report


def run_with_changed(*names: str) -> PlaybookRun:
    tasks = [{"task": {"name": name}, "hosts": {"gpu1": {"changed": True}}} for name in names]
    return PlaybookRun(rc=0, stats={}, plays=[{"tasks": tasks}], stderr="")


def test_the_drift_report_is_not_a_host_change_bare_or_under_its_role():
    run = run_with_changed(
        f"{AIDE_DRIFT_REPORT} of what changed",
        f"localguard.hardening.baseline : {AIDE_DRIFT_REPORT} of what changed",
        "localguard.hardening.baseline : BL-SSH-01 | Write sshd_config",
    )
    assert run.host_changes() == ["localguard.hardening.baseline : BL-SSH-01 | Write sshd_config on gpu1"]


def test_other_aide_tasks_and_names_that_only_mention_the_report_are_changes():
    assert not is_aide_drift_report("localguard.hardening.baseline : BL-AIDE-05 | Update the database")
    assert not is_aide_drift_report(f"BL-SSH-01 | {AIDE_DRIFT_REPORT}")
