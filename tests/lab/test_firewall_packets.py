"""FW-* with real packets between lab hosts: who may reach whom, counters, and the lockout rollback.

Every blocked path is tried and must fail; an allowed path beside it is tried and must work, so
a test cannot pass because everything is broken. Probes run inside the source host's own network
namespace (`podman exec`); 1 s timeouts, since a dropped SYN waits its whole timeout.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from playbook_runner import ROOT, run_playbook
from probes import LAB_ENGINES, controller_tcp_open, lab_group_vars, lab_ssh, podman, tcp_open

pytestmark = pytest.mark.lab
INVENTORY = ROOT / "inventories" / "lab" / "hosts.yml"
ENGINE_PORTS = {gpu: spec.port for gpu, spec in LAB_ENGINES.items()}
ENGINE_ACCOUNTS = {gpu: spec.account for gpu, spec in LAB_ENGINES.items()}


def udp_send(src: str, address: str, port: int, count: int, user: str | None = None) -> None:
    """Exactly `count` datagrams, one packet each (a TCP probe's retransmits would blur counts)."""
    script = (
        "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"for _ in range({count}):\n"
        "    try:\n"
        f"        s.sendto(b'probe', ('{address}', {port}))\n"
        "    except OSError:\n"
        "        pass  # EPERM: our own output chain dropped it\n"
    )
    podman(src, "python3", "-c", script, user=user)


def counter(container: str, name: str) -> int:
    out = podman(container, "nft", "-j", "list", "counter", "inet", "localguard", name).stdout
    return next(i["counter"]["packets"] for i in json.loads(out)["nftables"] if "counter" in i)


@contextmanager
def listener(container: str, port: int) -> Iterator[None]:
    """A TCP listener for the length of a test, so 'reachable' means a real accepted connection.

    A port a service already listens on (the collector's rsyslog on 6514) is used as it is."""
    if podman(container, "ss", "-Htln", f"sport = :{port}").stdout.strip():
        yield
        return
    podman(container, "systemd-run", f"--unit=lab-listen-{port}", "--", "nc", "-lk", str(port))
    try:
        deadline = time.monotonic() + 5
        while not podman(container, "ss", "-Htln", f"sport = :{port}").stdout.strip():
            assert time.monotonic() < deadline, f"listener on {container}:{port} did not start"
            time.sleep(0.1)
        yield
    finally:
        podman(container, "systemctl", "stop", f"lab-listen-{port}")


@pytest.fixture(scope="module")
def ip(lab_hosts) -> dict[str, str]:
    return {name: vars_["ansible_host"] for name, vars_ in lab_hosts.items()}


def test_fw_02_untrusted_host_reaches_neither_ssh_nor_engines(ip):
    for gpu, port in ENGINE_PORTS.items():
        assert not tcp_open("lg-untrusted", ip[gpu], 22), f"untrusted reached SSH on {gpu}"
        assert not tcp_open("lg-untrusted", ip[gpu], port), f"untrusted reached the engine on {gpu}"
    # Beside it, the same ports answer inside the host: the services are up, the firewall drops.
    assert tcp_open("lg-gpu1", "127.0.0.1", ENGINE_PORTS["gpu1"])


def test_fw_02_admin_source_reaches_ssh_on_every_host(ip):
    for name in ("gpu1", "gpu2", "gpu3", "logs", "ca1"):
        assert controller_tcp_open(ip[name], 22), f"admin could not reach SSH on {name}"


def test_fw_02_client_reaches_only_the_gateway_port(ip):
    with listener("lg-gpu1", 443):
        assert tcp_open("lg-client", ip["gpu1"], 443)
        assert not tcp_open("lg-untrusted", ip["gpu1"], 443)
        assert not tcp_open("lg-client", ip["gpu1"], 22)
        assert not tcp_open("lg-client", ip["gpu1"], ENGINE_PORTS["gpu1"])


def test_fw_02_collector_port_only_from_managed_hosts(ip):
    with listener("lg-logs", 6514):
        assert tcp_open("lg-gpu2", ip["logs"], 6514)
        assert tcp_open("lg-ca1", ip["logs"], 6514), "the CA host ships its logs too"
        assert not tcp_open("lg-untrusted", ip["logs"], 6514)
        assert not tcp_open("lg-client", ip["logs"], 6514)


def test_fw_03_gpu_egress_allowlist(ip):
    with listener("lg-untrusted", 8443), listener("lg-logs", 6514), listener("lg-ca1", 53):
        assert controller_tcp_open(ip["untrusted"], 8443), "the arbitrary peer must be reachable at all"
        assert not tcp_open("lg-gpu1", ip["untrusted"], 8443)
        assert tcp_open("lg-gpu1", ip["logs"], 6514), "collector must be reachable"
        assert tcp_open("lg-gpu1", ip["ca1"], 53), "configured resolver must be reachable"


@pytest.mark.parametrize("gpu", ["gpu1", "gpu2", "gpu3"])
def test_fw_04_engine_account_reaches_nothing_but_loopback(ip, gpu):
    account = ENGINE_ACCOUNTS[gpu]
    with listener("lg-logs", 6514), listener("lg-ca1", 53):
        assert tcp_open(f"lg-{gpu}", ip["logs"], 6514), "root reaches the collector"
        assert not tcp_open(f"lg-{gpu}", ip["logs"], 6514, user=account)
        assert not tcp_open(f"lg-{gpu}", ip["ca1"], 53, user=account)
    # Loopback stays open to it (the gateway's port; its own engine port is FW-08's).
    assert tcp_open(f"lg-{gpu}", "127.0.0.1", 443, user=account), "loopback stays open"


@pytest.mark.parametrize("gpu", ["gpu1", "gpu2", "gpu3"])
def test_fw_08_only_the_gateway_and_root_reach_the_engine_on_loopback(gpu):
    port, before = ENGINE_PORTS[gpu], counter(f"lg-{gpu}", "engine_local_drop")
    # A local account refused, counted once per attempt...
    assert not tcp_open(f"lg-{gpu}", "127.0.0.1", port, user="nobody")
    assert counter(f"lg-{gpu}", "engine_local_drop") > before
    # ...while root and the gateway's account (nginx workers) connect beside it.
    assert tcp_open(f"lg-{gpu}", "127.0.0.1", port)
    assert tcp_open(f"lg-{gpu}", "127.0.0.1", port, user="www-data")


def test_fw_08_a_local_account_cannot_pull_a_model_with_no_key():
    pull = '{"model": "standin-model:latest", "stream": false}'
    request = ["curl", "-s", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}", "-d", pull,
               f"http://127.0.0.1:{ENGINE_PORTS['gpu2']}/api/pull"]  # fmt: skip
    assert podman("lg-gpu2", *request, user="nobody").stdout == "000"
    assert podman("lg-gpu2", *request).stdout == "200", "root still reaches the engine"


def test_fw_05_counters_count_each_dropped_packet(ip):
    before = {
        "input": counter("lg-gpu1", "input_drop"),
        "output": counter("lg-gpu1", "output_drop"),
        "engine": counter("lg-gpu1", "engine_egress_drop"),
    }
    udp_send("lg-untrusted", ip["gpu1"], 9999, 7)
    udp_send("lg-gpu1", ip["untrusted"], 9999, 5)
    udp_send("lg-gpu1", ip["logs"], 6514, 3, user="llama")
    assert counter("lg-gpu1", "input_drop") - before["input"] == 7
    assert counter("lg-gpu1", "output_drop") - before["output"] == 5
    assert counter("lg-gpu1", "engine_egress_drop") - before["engine"] == 3


def lab_rollback_seconds() -> int:
    return int(lab_group_vars("all")["firewall_rollback_seconds"])


def test_fw_06_lockout_rolls_back_by_itself(ip):
    host, address = "gpu3", ip["gpu3"]
    before = podman("lg-gpu3", "nft", "-s", "list", "table", "inet", "localguard").stdout
    assert controller_tcp_open(address, 22)
    rollback = lab_rollback_seconds()
    run = run_playbook(
        ROOT / "harden.yml",
        INVENTORY,
        "--tags",
        "firewall",
        "-e",
        json.dumps({"firewall_input_rules_host": {"100 ssh from admins": None}}),
        limit=host,
    )
    # The rollback was armed before the apply, which came before the play ended.
    play_ended = time.monotonic()
    assert run.rc != 0
    assert any("cut the controller off" in m for m in run.failure_messages()), run.failure_messages()
    # The bad ruleset really is live for a while: SSH is cut...
    assert not controller_tcp_open(address, 22)
    # ...and the host restores the previous ruleset by itself within the rollback window.
    while not controller_tcp_open(address, 22):
        assert time.monotonic() - play_ended < rollback + 5, "host did not roll back in its window"
        time.sleep(1)
    assert podman("lg-gpu3", "nft", "-s", "list", "table", "inet", "localguard").stdout == before


FOREIGN_TABLE = """table inet foreign {
    chain c {
        type filter hook input priority 10;
        tcp dport 9999 counter
    }
}"""


def table_hash(container: str) -> str:
    return podman(container, "sh", "-c", "nft -s list table inet localguard | sha256sum").stdout.split()[0]


def applied_hash(container: str) -> str:
    """What the role recorded as confirmed and applied."""
    return podman(container, "cat", "/var/lib/localguard/firewall/applied.sha256").stdout.strip()


@pytest.mark.parametrize(
    "sequence",
    [
        ["systemctl restart nftables"],
        ["systemctl stop nftables"],
        # What a boot does: an empty ruleset, then both units in either order.
        ["systemctl stop localguard-firewall nftables", "nft flush ruleset",
         "systemctl start nftables", "systemctl start localguard-firewall"],
        ["systemctl stop localguard-firewall nftables", "nft flush ruleset",
         "systemctl start localguard-firewall", "systemctl start nftables"],
    ],
    ids=["restart", "stop", "boot-nftables-first", "boot-localguard-first"],
)  # fmt: skip
def test_fw_09_nftables_service_never_leaves_the_host_without_the_table(ip, sequence):
    applied = applied_hash("lg-gpu1")
    assert table_hash("lg-gpu1") == applied
    for command in sequence:
        assert podman("lg-gpu1", *command.split()).returncode == 0, command
    assert table_hash("lg-gpu1") == applied
    # Still enforced, not merely listed: the untrusted host reaches nothing, the client the gateway.
    assert not tcp_open("lg-untrusted", ip["gpu1"], 22)
    assert not tcp_open("lg-untrusted", ip["gpu1"], 443)
    assert tcp_open("lg-client", ip["gpu1"], 443)


def test_fw_06_rollback_that_fires_before_the_confirmation_fails_loudly(ip):
    """More hosts than forks and a window shorter than arm -> disarm: the hosts roll back, and
    the play must say so instead of recording the reverted table as applied."""
    hosts = ("gpu1", "gpu2", "gpu3", "logs", "ca1")
    before = {h: (table_hash(f"lg-{h}"), applied_hash(f"lg-{h}")) for h in hosts}
    extra_rule = {"950 rollback race probe": {"proto": "tcp", "dport": 9, "saddr_set": "admins"}}
    # One batch of GPU hosts, so three of them share the two forks (the canary batch has one host).
    probe = {
        "firewall_input_rules_host": extra_rule,
        "firewall_rollback_seconds": 1,
        "localguard_serial": "100%",
    }
    run = run_playbook(
        ROOT / "harden.yml", INVENTORY, "--tags", "firewall", "--forks", "2", "-e", json.dumps(probe)
    )
    assert run.rc != 0, "a rollback that fired before the confirmation passed silently"
    rolled_back = [m for m in run.failure_messages() if "fired before the controller confirmed" in m]
    assert rolled_back, run.failure_messages()
    time.sleep(2)
    for h in hosts:
        live, applied = table_hash(f"lg-{h}"), applied_hash(f"lg-{h}")
        if any(f"rollback on {h} " in m for m in rolled_back):
            # The previous ruleset runs, and nothing claims the new one was applied.
            assert (live, applied) == before[h], h
        else:
            assert applied == live, f"{h}: recorded hash is not the live table"
    # The next normal run puts every host back on its configured ruleset and records it truthfully.
    again = run_playbook(ROOT / "harden.yml", INVENTORY, "--tags", "firewall")
    assert again.rc == 0, again.failure_messages()
    # Disarmed for real, not merely "no timer running": past the window the table is still the one
    # confirmed (the hosts this run re-applied armed a fresh rollback).
    time.sleep(lab_rollback_seconds() + 2)
    for h in hosts:
        assert table_hash(f"lg-{h}") == before[h][0] == applied_hash(f"lg-{h}"), h


def test_fw_01_a_foreign_table_survives_an_apply():
    """Someone else's table (Docker's, podman's, an operator's) comes through an apply intact: the
    role replaces its own table, never the ruleset."""
    assert podman("lg-gpu1", "sh", "-c", f"echo '{FOREIGN_TABLE}' | nft -f -").returncode == 0
    try:
        # A drifted live table makes the next run apply for real.
        podman("lg-gpu1", "rm", "-f", "/var/lib/localguard/firewall/applied.sha256")
        run = run_playbook(ROOT / "harden.yml", INVENTORY, "--tags", "firewall", limit="gpu1")
        assert run.rc == 0, run.failure_messages()
        assert run.ran_on("FW-06 | Load the candidate") == ["gpu1"], "no apply ran"
        survivor = podman("lg-gpu1", "nft", "list", "table", "inet", "foreign")
        assert "tcp dport 9999 counter" in survivor.stdout, survivor.stdout + survivor.stderr
    finally:
        podman("lg-gpu1", "nft", "delete", "table", "inet", "foreign")


def test_fw_03_a_session_open_before_the_first_ruleset_keeps_working(ip, lab_admin):
    """The first apply on a host no ruleset tracked yet: an SSH session already open, whose next
    packet goes out (the host speaks first), must not freeze at the egress allowlist."""
    container, restore = "lg-logs", "nft -f /etc/localguard/firewall/active.nft"
    applied = applied_hash(container)
    # Whatever happens below, the host gets its ruleset back within the minute.
    podman(container, "systemd-run", "--unit=lab-pickup-restore", "--on-active=60", "sh", "-c", restore)
    session = None
    try:
        assert podman(container, "nft", "delete", "table", "inet", "localguard").returncode == 0
        session = subprocess.Popen(
            [*lab_ssh(lab_admin, ip["logs"]), "for i in $(seq 60); do echo tick; sleep 0.2; done"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert session.stdout.readline() == "tick\n", "the session did not start"
        ticks: list[str] = []
        threading.Thread(target=lambda: ticks.extend(session.stdout), daemon=True).start()
        assert podman(container, "sh", "-c", restore).returncode == 0
        loaded_with = len(ticks)
        time.sleep(3)
        # Five lines a second: a live session prints about 15 more, a frozen one none.
        assert len(ticks) - loaded_with >= 8, f"the open session froze when the ruleset loaded: {ticks}"
        assert counter(container, "egress_pickup") > 0, "no packet met the pickup rule: nothing was tested"
    finally:
        if session:
            session.kill()
        podman(container, "systemctl", "stop", "lab-pickup-restore.timer")
        podman(container, "sh", "-c", restore)
    assert table_hash(container) == applied
