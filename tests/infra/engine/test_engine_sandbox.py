"""Engine controls (EN-*): own account, loopback only, strict sandbox, telemetry off."""

from __future__ import annotations

import re

import pytest
from localguard_engines import engine

MAX_EXPOSURE = 2.5


@pytest.fixture(scope="module")
def spec(hostvars):
    if "localguard_engine" not in hostvars:
        pytest.skip("no engine on this host")
    return engine(hostvars["localguard_engine"])


@pytest.fixture(scope="module")
def main_pid(host, spec) -> int:
    pid = int(host.check_output(f"systemctl show -p MainPID --value {spec.unit}"))
    assert pid > 0, f"{spec.unit} is not running"
    return pid


def test_en_01_engine_runs_as_its_own_account(host, spec, main_pid):
    assert host.check_output(f"ps -o user= -p {main_pid}").strip() == spec.account
    assert host.user(spec.account).shell == "/usr/sbin/nologin"


def test_en_02_engine_listens_on_loopback_only(host, spec, main_pid):
    listening = host.check_output(f"ss -Htlnp 'sport = :{spec.port}'")
    addresses = re.findall(r"LISTEN\s+\d+\s+\d+\s+(\S+):\d+", listening)
    assert addresses == ["127.0.0.1"], listening
    # ...and answers there: the lockdown did not just break it.
    assert host.run(f"curl -sf -o /dev/null -m 5 http://127.0.0.1:{spec.port}/v1/models").rc == 0


def test_en_02_sandbox_exposure_at_most_2_5(host, spec, capsys):
    report = host.check_output(f"systemd-analyze security --no-pager {spec.unit}")
    exposure = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", report).group(1))
    with capsys.disabled():  # shown in the CI log, not only on failure
        print(f"\n{host.backend.get_pytest_id()} {spec.unit}: systemd-analyze security exposure {exposure}")
    assert exposure <= MAX_EXPOSURE, report


def unit_properties(host, unit: str, *names: str) -> dict[str, str]:
    out = host.check_output(f"systemctl show {unit} " + " ".join(f"-p {name}" for name in names))
    return dict(line.split("=", 1) for line in out.splitlines())


def test_en_03_unit_reaches_loopback_only_and_holds_no_capability(host, spec):
    props = unit_properties(host, spec.unit, "IPAddressDeny", "IPAddressAllow", "CapabilityBoundingSet")
    assert set(props["IPAddressDeny"].split()) == {"0.0.0.0/0", "::/0"}
    assert "127.0.0.0/8" in props["IPAddressAllow"].split()
    assert props["CapabilityBoundingSet"] == ""


def test_en_02_models_read_only_and_localguard_secrets_hidden(host, spec):
    props = unit_properties(host, spec.unit, "ReadOnlyPaths", "InaccessiblePaths", "ProtectSystem")
    assert props["ProtectSystem"] == "strict"
    assert "/opt/models" in props["ReadOnlyPaths"]
    assert "/etc/localguard" in props["InaccessiblePaths"]


def test_en_04_telemetry_and_downloads_off(host, spec, main_pid):
    lines = host.check_output(f"tr '\\0' '\\n' < /proc/{main_pid}/environ").splitlines()
    environ = dict(line.split("=", 1) for line in lines if "=" in line)
    for name, value in spec.telemetry_env:
        assert environ.get(name) == value, name


def test_en_04_no_secret_on_the_engine_command_line(host, main_pid):
    cmdline = host.check_output(f"tr '\\0' ' ' < /proc/{main_pid}/cmdline")
    assert not re.search(r"(?i)(api[_-]?key|token|secret|password)", cmdline), cmdline
