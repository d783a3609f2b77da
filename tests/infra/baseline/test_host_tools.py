"""Small host tools (BL-ACCT, BL-NRS, BL-DEBS) and the apt sources check (BL-UPG-05).

The tests that run the role use one host (first_host) and the tags of one control.
"""

from __future__ import annotations

import json
import shlex

import pytest
from playbook_runner import PlaybookRun, run_playbook

# A package file nothing reads, and the configuration-less kind debsums checks by default.
DEBSUMS_PROBE = "/usr/share/doc/debsums/README"
# Outside /tmp, /run and /dev/shm, which needrestart ignores.
NRS_LIB_DIR = "/usr/local/lib/localguard-nrs-test"
NRS_UNIT = "localguard-nrs-test"
SECURITY_SOURCES = "/etc/apt/sources.list.d/localguard-test-security"


def run_control(target, hostvars, tag: str, variables: dict | None = None) -> PlaybookRun:
    playbook, inventory = target
    extra = ("-e", json.dumps(variables)) if variables else ()
    return run_playbook(playbook, inventory, "--tags", tag, *extra, limit=hostvars.get("inventory_hostname"))


def test_bl_acct_01_02_process_accounting_records_commands(host, hostenv):
    if hostenv["in_container"]:
        pytest.skip("process accounting is switched on for the whole kernel (CAP_SYS_PACCT)")
    assert host.package("acct").is_installed
    service = host.service("acct")
    assert service.is_enabled and service.is_running
    host.run("/usr/bin/true")
    assert host.file("/var/log/account/pacct").size > 0


def test_bl_nrs_02_upgrades_list_services_rather_than_restart_them(host, hostvars):
    # needrestart.conf reads conf.d itself: evaluating it gives the setting needrestart runs with.
    restart = host.check_output(
        "perl -e 'our %nrconf; our $LOGPREF = q(); do q(/etc/needrestart/needrestart.conf);"
        " print $nrconf{restart} // q(unset)'"
    )
    modes = {"list": "l", "automatic": "a", "interactive": "i"}
    assert restart == modes[hostvars.get("baseline_needrestart_restart", "list")]


@pytest.mark.molecule_only
def test_bl_nrs_03_a_service_on_a_replaced_library_is_reported_and_left_running(first_host, target):
    host, hostvars = first_host
    library = f"{NRS_LIB_DIR}/libz.so.1"
    host.run(f"mkdir -p {NRS_LIB_DIR} && cp /usr/lib/x86_64-linux-gnu/libz.so.1 {library}")
    try:
        started = host.run(f"systemd-run --unit={NRS_UNIT} -E LD_PRELOAD={library} /usr/bin/sleep 600")
        assert started.rc == 0, started.stderr
        pid = host.check_output(f"systemctl show --property=MainPID --value {NRS_UNIT}")
        # An upgrade replaces the file; the running service keeps the old, deleted one mapped.
        host.run(f"rm {library} && cp /usr/lib/x86_64-linux-gnu/libz.so.1 {library}")
        run = run_control(target, hostvars, "bl_nrs_03")
        assert run.rc == 0, run.failure_messages()
        reported = run.task_messages("BL-NRS-03 | Report")
        assert any(f"{NRS_UNIT}.service" in m for m in reported), reported
        assert host.check_output(f"systemctl show --property=MainPID --value {NRS_UNIT}") == pid
    finally:
        host.run(f"systemctl stop {NRS_UNIT}; rm -rf {NRS_LIB_DIR}")


@pytest.mark.molecule_only
def test_bl_debs_01_02_a_changed_package_file_is_found(first_host, target):
    host, hostvars = first_host
    assert host.package("debsums").is_installed
    original = host.file(DEBSUMS_PROBE).content_string
    strict = {"baseline_debsums_fail_on_changed": True}
    try:
        host.run(f"echo 'changed by hand' >> {DEBSUMS_PROBE}")
        found = run_control(target, hostvars, "bl_debs_02", strict)
    finally:
        host.run(f"printf %s {shlex.quote(original)} > {DEBSUMS_PROBE}")
    assert found.rc != 0
    assert any(DEBSUMS_PROBE in m for m in found.failure_messages()), found.failure_messages()
    clean = run_control(target, hostvars, "bl_debs_02", strict)
    assert clean.rc == 0, clean.failure_messages()


def names_security_suite(host) -> bool:
    suites = host.check_output("apt-get indextargets --no-release-info --format '$(TARGET_OF) $(RELEASE)'")
    return any(line.startswith("deb ") and line.endswith("-security") for line in suites.splitlines())


# The same security suite, in each format of apt sources.
SECURITY_ENTRIES = {
    ".sources": "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: {codename}-security\n"
    "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
    ".list": "deb http://deb.debian.org/debian-security {codename}-security main\n",
}


@pytest.mark.molecule_only
def test_bl_upg_05_apt_sources_must_name_a_security_suite(first_host, target):
    """Without a security suite the strict run fails and says why; with one, in either format
    of apt sources (deb822 .sources, one-line .list), it passes. The lab's image is offline and
    names none."""
    host, hostvars = first_host
    strict = {"baseline_upgrades_fail_on_missing_security_suite": True}
    if names_security_suite(host):
        pytest.skip("this host's apt sources already name a security suite: nothing to take away")
    missing = run_control(target, hostvars, "bl_upg_05", strict)
    assert missing.rc != 0
    assert any("No apt source names a security suite" in m for m in missing.failure_messages())
    codename = host.check_output(". /etc/os-release && echo $VERSION_CODENAME")
    for suffix, entry in SECURITY_ENTRIES.items():
        host.run(f"printf %s {shlex.quote(entry.format(codename=codename))} > {SECURITY_SOURCES}{suffix}")
        try:
            present = run_control(target, hostvars, "bl_upg_05", strict)
        finally:
            host.run(f"rm -f {SECURITY_SOURCES}{suffix}")
        assert present.rc == 0, (suffix, present.failure_messages())
