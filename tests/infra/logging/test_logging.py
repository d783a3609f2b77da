"""LS-* on every host that ships its logs, LC-* on the collector: the configuration each role
leaves, and lines that really travel from a sender to the collector's store and its alert engine.

The end-to-end checks through real gateways (outage, bans, refusals of foreign certificates) are
in tests/lab/test_log_shipping.py.
"""

from __future__ import annotations

import json
import secrets
import time

import pytest
import testinfra
from playbook_runner import run_playbook

SHIPPING_CONF = "/etc/rsyslog.d/60-localguard-shipping.conf"
COLLECTOR_CONF = "/etc/rsyslog.d/40-localguard-collector.conf"
STORE = "/var/log/localguard"
GATEWAY_LOG = "/var/log/nginx/localguard-gateway.json"


@pytest.fixture(scope="module")
def role(hostvars) -> str:
    groups = hostvars["group_names"]
    return (
        "collector" if "log_collectors" in groups else "sender" if {"gpu_hosts", "ca"} & set(groups) else ""
    )


@pytest.fixture(scope="module")
def collector(_testinfra_host, hostvars):
    """The first collector, through `podman exec` (its container's name, in Molecule its inventory name)."""
    name = hostvars["groups"]["log_collectors"][0]
    runner = _testinfra_host.backend.ansible_runner
    collector_vars = runner.get_variables(name)
    return name, testinfra.get_host(f"podman://{collector_vars.get('lab_container', name)}")


def wait_for(find, timeout: float = 15, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while not (found := find()) and time.monotonic() < deadline:
        time.sleep(interval)
    return found


def stored(collector_host, host: str, marker: str) -> list[dict]:
    out = collector_host.run(
        f"cat {STORE}/hosts/{host}/*.log 2>/dev/null | grep -F -- '{marker}' || true"
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_ls_01_rsyslog_ships_over_mutually_authenticated_relp(host, role, hostvars):
    if role != "sender":
        pytest.skip("not a log sender (log_shipping runs on gpu_hosts and ca)")
    assert host.service("rsyslog").is_running and host.service("rsyslog").is_enabled
    conf = host.file(SHIPPING_CONF)
    assert (conf.user, conf.group, conf.mode) == ("root", "root", 0o644)
    text = conf.content_string
    for collector_name in hostvars["groups"]["log_collectors"]:
        assert f'tls.permittedPeer=["{collector_name}"]' in text
    assert 'tls="on"' in text and 'tls.authMode="name"' in text and "MinProtocol=TLSv1.2" in text
    # LS-03: disk-assisted (a queue file name) and kept across restarts.
    assert 'queue.filename="lg_ship_' in text and 'queue.saveOnShutdown="on"' in text
    assert 'action.resumeRetryCount="-1"' in text, "a collector outage must never drop lines"


def test_ls_02_a_line_logged_here_is_stored_under_this_hosts_name(host, role, hostvars, collector):
    if role != "sender":
        pytest.skip("not a log sender")
    marker = f"lg-infra-{secrets.token_hex(6)}"
    host.run_expect([0], f"logger -t lg-infra-probe {marker}")
    _, collector_host = collector
    lines = wait_for(lambda: stored(collector_host, hostvars["inventory_hostname"], marker))
    assert lines, f"{marker} never reached the collector's store"
    assert lines[0]["tag"] == "lg-infra-probe" and lines[0]["msg"] == marker


def test_lc_01_the_collector_listens_for_managed_hosts_only(host, role, hostvars):
    if role != "collector":
        pytest.skip("not a collector")
    assert host.service("rsyslog").is_running
    assert host.socket("tcp://0.0.0.0:6514").is_listening
    text = host.file(COLLECTOR_CONF).content_string
    senders = sorted(hostvars["groups"].get("gpu_hosts", []) + hostvars["groups"].get("ca", []))
    assert f"tls.permittedPeer=[{', '.join(json.dumps(s) for s in senders)}]" in text
    assert 'tls.authMode="name"' in text
    peers = json.loads(host.file("/etc/localguard/collector/peers.json").content_string)
    assert sorted({entry["value"] for entry in peers["table"]}) == senders


def test_lc_02_store_is_per_host_per_day_and_root_adm_only(host, role):
    if role != "collector":
        pytest.skip("not a collector")
    top = host.file(STORE)
    assert (top.user, top.group, top.mode) == ("root", "adm", 0o751)
    hosts = host.file(f"{STORE}/hosts")
    assert (hosts.user, hosts.group, hosts.mode) == ("root", "adm", 0o750)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    files = host.run(f"stat -c '%n %U %G %a' {STORE}/hosts/*/{today}.log").stdout.splitlines()
    assert files, "nothing stored today"
    for line in files:
        assert line.split()[1:] == ["root", "adm", "640"], line
    assert host.run(f"runuser -u nobody -- ls {STORE}/hosts").rc != 0


def test_lc_03_retention_deletes_only_what_is_older_than_the_retention(host, role):
    if role != "collector":
        pytest.skip("not a collector")
    assert host.service("localguard-log-retention.timer").is_enabled
    unit = host.file("/etc/systemd/system/localguard-log-retention.service").content_string
    days = int(unit.split("-mmin +", 1)[1].split()[0]) // 1440
    old, fresh = f"{STORE}/hosts/retention-probe/old.log", f"{STORE}/hosts/retention-probe/fresh.log"
    host.run_expect([0], f"mkdir -p {STORE}/hosts/retention-probe && touch {fresh} && "
                         f"touch -d '{days + 1} days ago' {old}")  # fmt: skip
    host.run_expect([0], "systemctl start localguard-log-retention.service")
    assert not host.file(old).exists, "a file older than the retention survived"
    assert host.file(fresh).exists, "retention deleted a fresh file"
    host.run_expect([0], f"rm -r {STORE}/hosts/retention-probe")


def test_lc_04_an_admin_route_line_raises_an_alert_and_runs_the_hook(host, role, hostvars, collector):
    """LC-04/LC-05: the alert engine runs as lg-alerts, writes an alert line and runs the hook."""
    if role != "sender" or "gpu_hosts" not in hostvars["group_names"]:
        pytest.skip("gateway lines come from GPU hosts")
    if host.file("/etc/nginx/conf.d/localguard-gateway.conf").exists:
        pytest.skip("a real gateway: tests/lab/test_log_shipping.py sends it a real /api/pull")
    request_id = secrets.token_hex(16)
    line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()), "request_id": request_id,
            "remote": "198.18.0.99", "key_id": "infra-probe", "method": "POST", "path": "/api/pull",
            "route": "", "denied": "admin", "status": 403}  # fmt: skip
    host.run_expect([0], f"mkdir -p /var/log/nginx && echo '{json.dumps(line)}' >> {GATEWAY_LOG}")
    _, collector_host = collector
    found = wait_for(
        lambda: collector_host.run(f"grep -h -F {request_id} {STORE}/alerts/*.json || true").stdout
    )
    assert found, "no alert for the admin route line"
    alert = json.loads(found.splitlines()[0])
    assert (alert["rule"], alert["key_id"], alert["path"]) == ("admin_route", "infra-probe", "/api/pull")
    assert alert["host"] == hostvars["inventory_hostname"]
    engine = collector_host.run("ps -o user= -C python3").stdout.split()
    assert "lg-alerts" in engine, "the alert engine must run as lg-alerts, not root"
    hook = wait_for(lambda: request_id in collector_host.run(
        "cat /var/lib/localguard-alerts/hook-received.json 2>/dev/null || true").stdout)  # fmt: skip
    assert hook, "the alert hook did not receive the alert"


def test_fw_10_drop_lines_reach_the_journal_from_the_hosts_network_namespace(host):
    """FW-10 where the firewall role ran: a dropped packet's line reaches this host's journal
    through NFLOG and ulogd2 (a kernel log line would not, in a container)."""
    if not host.file("/etc/localguard/firewall/active.nft").exists:
        pytest.skip("the firewall role did not run here")
    assert host.service("ulogd2").is_running
    port = 40000 + secrets.randbelow(20000)
    since = host.check_output("date +%s")
    # Egress to an unused lab address no set allows; drop lines are rate-limited (FW-05), so the
    # packet is sent again each second until its line shows.
    journal = f"journalctl -t ulogd --since @{since} --no-pager -o cat"

    def logged() -> bool:
        host.run(f"timeout 1 bash -c 'echo > /dev/udp/198.18.10.254/{port}'")
        return f"DPT={port}" in host.run(journal).stdout

    assert wait_for(logged, timeout=20, interval=1), "the drop line never reached the journal"
    assert "localguard-output-drop" in next(
        line for line in host.run(journal).stdout.splitlines() if f"DPT={port}" in line
    )


@pytest.mark.parametrize(
    ("group", "values", "expected"),
    [
        ("log_shipping", {"log_shipping_queue_max_disk": "plenty"}, "LS-00 | log_shipping_queue_max_disk"),
        (
            "log_collector",
            {"log_collector_alert_key_hours": {"*": "25:00-26:00"}},
            "LC-00 | log_collector_alert_key_hours",
        ),
    ],
)
def test_ls_00_lc_00_bad_values_stop_the_run_before_any_change(hostvars, target, group, values, expected):
    """LS-00/LC-00 (PRE-09/PRE-08 in harden.yml): what argument specs cannot check (sizes, time
    windows) stops the run on the hosts of the role, naming the variable, before anything changes."""
    playbook, inventory = target
    hosts = hostvars["groups"]["log_collectors" if group == "log_collector" else "gpu_hosts"]
    if hostvars["inventory_hostname"] != hosts[0]:
        pytest.skip(f"checked once, on {hosts[0]}")
    # Only the log roles (and the checks every run makes): the other roles' work is not the point.
    tags = ("--tags", "log_shipping,log_collector")
    run = run_playbook(playbook, inventory, *tags, "-e", json.dumps(values), limit=hosts[0])
    assert run.rc != 0
    assert run.total("changed") == 0, run.changed_tasks()
    assert any(expected in message for message in run.failure_messages()), run.failure_messages()
