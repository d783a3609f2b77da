"""File integrity (BL-AIDE-*): AIDE records the host, the daily check reports what changed, and the
role's run reports changes made behind its back before taking its own into the database.

The tests that run the role work on one host (first_host) and make their own baseline first: tests
that ran before them (PAM's test account, for one) changed /etc since the last converge.
"""

from __future__ import annotations

import json
import shlex

import pytest
from playbook_runner import PlaybookRun, run_playbook

CONFIG = "/etc/aide/aide.conf"
DATABASE = "/var/lib/aide/aide.db"
REPORTS = "/var/lib/localguard/aide"
# Under /etc and managed by no role: a comment line changes nothing that reads it.
PROBE = "/etc/host.conf"
UPDATE_SCAN = "BL-AIDE-05 | Compare the host with the AIDE database after"


def daily_check(host) -> str:
    """Start the unit the daily timer starts and return the report it wrote."""
    # The unit allows one start per two hours (StartLimitBurst=1); reset-failed resets that count.
    host.run("systemctl reset-failed dailyaidecheck.service")
    started = host.run("systemctl start dailyaidecheck.service")
    assert started.rc == 0, started.stderr
    return host.check_output("cat /var/log/aide/aide.log")


def take_in(target, hostvars, *extra: str) -> PlaybookRun:
    """The role's AIDE path as an operator runs it: compare, report, update."""
    playbook, inventory = target
    return run_playbook(
        playbook,
        inventory,
        "--tags",
        "aide",
        *extra,
        limit=hostvars.get("inventory_hostname"),
    )


def newest_report(host) -> str:
    """The latest report BL-AIDE-04 kept of changes found before a run."""
    return host.file(host.check_output(f"ls -t {REPORTS}/drift-*.txt | head -n1")).content_string


def test_bl_aide_02_records_configuration_binaries_and_models(host, hostvars):
    config = host.file(CONFIG)
    assert config.user == "root" and config.mode == 0o644
    assert "Managed by localguard" in config.content_string
    assert host.run(f"aide --config-check --config {CONFIG}").rc == 0
    # What the database holds, not what the configuration says: Debian's own aide.conf records the
    # whole file system, and a database made from it would miss nothing and prove nothing here.
    recorded = host.check_output(f"zcat {DATABASE} | cut -d' ' -f1")
    for path in ("/etc/ssh/sshd_config", "/etc/systemd/system", "/usr/bin/sudo", "/usr/sbin/sshd"):
        assert f"\n{path}\n" in f"\n{recorded}\n", path
    models = hostvars.get("baseline_aide_model_dirs", ["/opt/models"])
    for model_dir in models:
        if host.file(model_dir).is_directory:
            assert f"\n{model_dir}\n" in f"\n{recorded}\n", model_dir
    # Not the whole file system: logs and spools change every minute.
    assert "\n/var/log" not in f"\n{recorded}"


def test_bl_aide_03_daily_check_runs_by_timer_and_sees_every_file(host, hostenv):
    timer = host.service("dailyaidecheck.timer")
    assert timer.is_enabled and timer.is_running
    user = host.check_output("systemctl show --property=User --value dailyaidecheck.service")
    # In a container the _aide account lacks the capability to read root-only files.
    assert user == ("root" if hostenv["in_container"] else "_aide")


@pytest.mark.molecule_only
def test_bl_aide_03_04_05_a_changed_file_is_reported_then_taken_in(first_host, target):
    """The issue's case: a file under /etc changed by hand is in the daily check's report; the
    role's next run reports it before changing anything, keeps the report, and updates the
    database, after which the daily check reports nothing."""
    host, hostvars = first_host
    original = host.file(PROBE).content_string
    baseline = take_in(target, hostvars, "-e", json.dumps({"baseline_aide_fail_on_drift": False}))
    assert baseline.rc == 0, baseline.failure_messages() or baseline.stderr[-2000:]
    assert "found NO differences" in daily_check(host)
    try:
        host.run(f"echo '# localguard AIDE test' >> {PROBE}")
        report = daily_check(host)
        assert "found differences" in report
        assert f": {PROBE}\n" in report, report
    finally:
        host.run(f"printf %s {shlex.quote(original)} > {PROBE}")
    assert host.file(PROBE).content_string == original

    run = take_in(target, hostvars)
    assert run.rc == 0, run.failure_messages() or run.stderr[-2000:]
    # The message lists the first 20 differences (earlier tests may have made more); the report
    # it names lists them all.
    reported = run.task_messages("BL-AIDE-04 | Report")
    assert any(f"Report: {REPORTS}/drift-" in m for m in reported), reported
    assert f": {PROBE}\n" in newest_report(host)
    assert "found NO differences" in daily_check(host)


@pytest.mark.molecule_only
def test_bl_aide_04_drift_fails_the_run_before_the_database_moves(first_host, target):
    host, hostvars = first_host
    original = host.file(PROBE).content_string
    strict = ("-e", json.dumps({"baseline_aide_fail_on_drift": True}))
    database = host.file(DATABASE).sha256sum
    try:
        host.run(f"echo '# localguard AIDE test' >> {PROBE}")
        failed = take_in(target, hostvars, *strict)
    finally:
        host.run(f"printf %s {shlex.quote(original)} > {PROBE}")
    assert failed.rc != 0
    assert any(f"Report: {REPORTS}/drift-" in m for m in failed.failure_messages()), failed.failure_messages()
    assert f": {PROBE}\n" in newest_report(host)
    # The report is written (the one change), nothing else: the database still holds the old file.
    assert all("BL-AIDE-04" in task for task in failed.changed_tasks()), failed.changed_tasks()
    assert host.file(DATABASE).sha256sum == database
    # Once reviewed, the operator takes the change in; the strict run then passes.
    accepted = take_in(target, hostvars, "-e", json.dumps({"baseline_aide_fail_on_drift": False}))
    assert accepted.rc == 0, accepted.failure_messages()
    assert accepted.ran_on(UPDATE_SCAN) == [hostvars["inventory_hostname"]]
    clean = take_in(target, hostvars, *strict)
    assert clean.rc == 0, clean.failure_messages()
    assert clean.total("changed") == 0, clean.changed_tasks()
    # Nothing under AIDE's paths changed since the database was written: its second scan is skipped.
    assert clean.ran_on(UPDATE_SCAN) == []


def test_bl_aide_04_05_reports_are_root_only(host):
    reports = host.file(REPORTS)
    assert reports.user == "root" and reports.mode == 0o700
