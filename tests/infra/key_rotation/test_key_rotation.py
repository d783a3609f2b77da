"""KR-01..KR-05 on a controller host: the rotation account, the installed project, the fleet's SSH
key and host keys, the sandboxed service and timer, and the alert a failed run leaves.

Every check runs where the host is in `controllers`. The ones that start the service run only in
the key_rotation Molecule scenario, whose test playbook stands in for api_key_rotate.yml (the lab's
timer test, tests/lab/test_key_rotation_timer.py, rotates a real key instead).
"""

from __future__ import annotations

import json
import os
import time

import pytest
import testinfra
from playbook_runner import run_playbook

USER = "localguard-rotate"
SERVICE = "localguard-key-rotation.service"
TIMER = "localguard-key-rotation.timer"
ALERT = f"localguard-rotation-alert@{SERVICE}.service"
CONFIG = "/etc/localguard-rotate"
STATE = "/var/lib/localguard-rotate"
PROBE = "/etc/localguard-rotate-test/probe"
FAIL_FLAG = "/var/tmp/localguard-rotation-fail"


@pytest.fixture(scope="module", autouse=True)
def controller(hostvars) -> None:
    if "controllers" not in hostvars.get("group_names", []):
        pytest.skip("key rotation checks run on hosts in `controllers`")


@pytest.fixture(scope="module")
def project_dir(hostvars) -> str:
    return hostvars.get(
        "key_rotation_project_dir", "/opt/localguard/ansible_collections/localguard/hardening"
    )


@pytest.fixture(scope="module")
def scenario() -> None:
    if os.environ.get("MOLECULE_SCENARIO_NAME") != "key_rotation":
        pytest.skip("needs the key_rotation scenario (its test playbook, its converge)")


@pytest.fixture(scope="module")
def molecule_target(scenario, hostvars):
    """The scenario's SSH target, through `podman exec`."""
    return testinfra.get_host(f"podman://{hostvars['groups']['rotation_targets'][0]}")


def test_kr_01_rotation_account_is_a_system_account_without_a_shell(host):
    user = host.user(USER)
    assert user.exists and user.uid < 1000
    assert user.shell == "/usr/sbin/nologin"
    assert user.home == STATE
    assert host.file(STATE).mode == 0o700 and host.file(STATE).user == USER


def test_kr_02_project_installed_root_owned_without_byte_code_or_lab_files(host, project_dir):
    for part in ("ansible.cfg", "roles/key_rotation/tasks/main.yml", "plugins/modules", "playbooks"):
        assert host.file(f"{project_dir}/{part}").exists, part
    root_owned = host.run(f"find {project_dir} ! -user root")
    assert root_owned.rc == 0 and root_owned.stdout == ""
    writable = host.run(f"find {project_dir} -perm /022")
    assert writable.rc == 0 and writable.stdout == ""
    names = ("__pycache__", "*.pyc", ".lab", ".git", ".venv", ".cache")
    leaked = host.run(f"find {project_dir} " + " -o ".join(f"-name '{name}'" for name in names))
    assert leaked.rc == 0 and leaked.stdout == "", leaked.stdout
    assert host.run(f"grep -rl molecule-planted- {project_dir}").stdout == ""


def test_kr_03_ssh_key_readable_by_the_rotation_account_only(host):
    key = host.file(f"{CONFIG}/ssh/fleet.key")
    assert (key.user, key.group, key.mode) == (USER, USER, 0o600)
    assert key.content_string.endswith("PRIVATE KEY-----\n")
    for path in (CONFIG, f"{CONFIG}/inventory", f"{CONFIG}/ssh"):
        item = host.file(path)
        assert (item.user, item.group, item.mode) == ("root", USER, 0o750), path
    known = host.file(f"{CONFIG}/ssh/known_hosts")
    assert (known.user, known.mode) == ("root", 0o640)


def test_kr_03_service_gets_the_installed_key_and_host_keys(host):
    extra = json.loads(host.file(f"{CONFIG}/extra-vars.json").content_string)
    assert extra["ansible_ssh_private_key_file"] == f"{CONFIG}/ssh/fleet.key"
    args = extra["ansible_ssh_common_args"]
    assert f"UserKnownHostsFile={CONFIG}/ssh/known_hosts" in args
    assert "StrictHostKeyChecking=yes" in args


def test_kr_04_units_verify_and_the_timer_is_scheduled(host):
    units = " ".join(
        f"/etc/systemd/system/{unit}" for unit in (SERVICE, TIMER, "localguard-rotation-alert@.service")
    )
    check = host.run(f"systemd-analyze verify {units}")
    assert check.rc == 0 and not check.stderr.strip(), check.stderr
    assert host.service(TIMER).is_enabled and host.service(TIMER).is_running
    timer = host.check_output(f"systemctl show -p Persistent -p RandomizedDelayUSec {TIMER}")
    assert "Persistent=yes" in timer


def test_kr_04_service_runs_as_the_rotation_account_in_a_sandbox(host):
    props = dict(
        line.split("=", 1)
        for line in host.check_output(
            f"systemctl show -p User -p Type -p ProtectSystem -p NoNewPrivileges -p PrivateTmp "
            f"-p CapabilityBoundingSet -p OnFailure -p RestrictAddressFamilies {SERVICE}"
        ).splitlines()
    )
    assert props["User"] == USER and props["Type"] == "oneshot"
    assert props["ProtectSystem"] == "strict"
    assert props["NoNewPrivileges"] == "yes" and props["PrivateTmp"] == "yes"
    assert props["CapabilityBoundingSet"] == ""
    assert props["OnFailure"] == ALERT


def journal_since(host, cursor: str, *args: str) -> str:
    return host.check_output(f"journalctl --no-pager --after-cursor '{cursor}' {' '.join(args)}")


def alerts_since(host, cursor: str) -> list[dict]:
    records = journal_since(host, cursor, "-p", "err", "-o", "json").splitlines()
    return [r for r in map(json.loads, records) if str(r.get("MESSAGE", "")).startswith("localguard-alert:")]


def start_rotation(host) -> tuple[int, str]:
    """Start the service; also returns the journal's cursor just before, so a check reads this run's
    lines only (a time in whole seconds would take in the end of the previous run)."""
    cursor = host.check_output("journalctl -n 0 --show-cursor -q").split("cursor: ", 1)[1].strip()
    return host.run(f"timeout 300 systemctl start {SERVICE}").rc, cursor


def test_kr_04_starting_the_service_runs_the_playbook_over_ssh(host, molecule_target):
    before = molecule_target.run("cat ~rotator/rotation-runs.ini").stdout
    rc, since = start_rotation(host)
    log = journal_since(host, since, "-u", SERVICE)
    assert rc == 0, log[-3000:]
    # The project's own module (plugins/modules) and community.general (the controller's
    # collections) both ran against the target, over SSH with the installed key and host keys.
    after = molecule_target.run("cat ~rotator/rotation-runs.ini").stdout
    assert "last = " in after and after != before
    assert "ok: [mol-key_rotation-target]" in log
    assert host.service(SERVICE).is_running is False
    assert host.file(f"{STATE}/facts").is_directory


def test_kr_04_sandbox_keeps_the_system_read_only_for_a_file_the_account_owns(host, molecule_target):
    host.check_output(f"install -d -m 0755 {PROBE.rsplit('/', 1)[0]}")
    host.check_output(f"install -o {USER} -g {USER} -m 0600 /dev/null {PROBE}")
    # Outside the sandbox the account can write its own file...
    assert host.run(f"runuser -u {USER} -- sh -c 'echo outside >> {PROBE}'").rc == 0
    # ...inside the service it cannot.
    rc, since = start_rotation(host)
    log = journal_since(host, since, "-u", SERVICE)
    assert rc == 0, log[-3000:]
    assert "rotation-test: probe rc=2" in log and "Read-only file system" in log, log[-3000:]
    assert host.file(PROBE).content_string == "outside\n"


def test_kr_05_a_failed_run_leaves_one_alert_line_at_priority_err(host, molecule_target):
    molecule_target.check_output(f"touch {FAIL_FLAG}")
    try:
        rc, since = start_rotation(host)
    finally:
        molecule_target.check_output(f"rm -f {FAIL_FLAG}")
    assert rc != 0
    deadline = time.monotonic() + 30
    alerts: list[dict] = []
    while time.monotonic() < deadline and not alerts:
        time.sleep(0.5)
        alerts = alerts_since(host, since)
    assert len(alerts) == 1, alerts
    assert alerts[0]["PRIORITY"] == "3"
    assert alerts[0]["MESSAGE"].startswith(f"localguard-alert: {SERVICE} failed")
    assert alerts[0].get("_SYSTEMD_UNIT") == ALERT
    # A run that succeeds again raises no alert.
    rc, since = start_rotation(host)
    assert rc == 0
    time.sleep(2)
    assert alerts_since(host, since) == []


def test_kr_00_settings_systemd_refuses_stop_the_role_before_any_change(host, scenario, target):
    playbook, inventory = target
    units = host.check_output("sha256sum /etc/systemd/system/localguard-key-rotation.*")
    run = run_playbook(playbook, inventory, "-e", "key_rotation_on_calendar=every-other-tuesday")
    assert run.rc != 0
    assert any("key_rotation_on_calendar (every-other-tuesday)" in m for m in run.failure_messages()), (
        run.failure_messages()
    )
    assert not run.host_changes(), run.host_changes()
    assert host.check_output("sha256sum /etc/systemd/system/localguard-key-rotation.*") == units
