"""GW-09 on the gateway host: fail2ban bans an address that keeps sending requests without a usable
key, by dropping its packets on the gateway ports, in fail2ban's own nftables table.

The banned client is another host of the inventory that reaches the gateway and is not on its
ignore list: the CA host under Molecule (molecule/gateway/molecule.yml gives short ban times); in
the lab, a client that is not exempt. Each check lifts its ban by command when it ends
(`fail2ban-client set localguard-gateway unbanip <address>`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import testinfra
from playbook_runner import run_playbook

JAIL = "localguard-gateway"
FILTER = f"/etc/fail2ban/filter.d/{JAIL}.conf"
LOG = "/var/log/nginx/localguard-gateway.json"
CONFIG = ["/etc/fail2ban/jail.d/localguard.local", "/etc/fail2ban/jail.d/localguard-action.local", FILTER,
          "/etc/fail2ban/fail2ban.d/localguard.local"]  # fmt: skip
# fail2ban's stock nftables action, as the jail names it (action.d/nftables.conf).
TABLE, CHAIN, SET = "inet f2b-table", "f2b-chain", f"addr-set-{JAIL}"
PODMAN_CONNECTIONS = {"podman", "containers.podman.podman"}
# A port the ban must not cover, served on the gateway host for the time of a check.
OTHER_PORT = 9445


@pytest.fixture(scope="module")
def gateway(hostvars):
    if "gpu_hosts" not in hostvars.get("group_names", []):
        pytest.skip("not a gateway host")
    if not hostvars.get("gateway_ban_enabled", True):
        pytest.skip("gateway_ban_enabled is off here")
    return hostvars["inventory_hostname"]


def setting(hostvars, name: str, default):
    """A variable as the inventory gives it; a template (Ansible resolves those, not this check) skips."""
    value = hostvars.get(name, default)
    if isinstance(value, str) and "{{" in value:
        pytest.skip(f"{name} is a template here")
    return value


@pytest.fixture(scope="module")
def jail(host, hostvars, gateway) -> dict[str, int]:
    """The running jail's threshold and ban time: the role's variables, as fail2ban has them."""
    running = {name: int(host.check_output(f"fail2ban-client get {JAIL} {name}")) for name in
               ("maxretry", "findtime", "bantime")}  # fmt: skip
    assert running == {
        "maxretry": int(setting(hostvars, "gateway_ban_max_failures", 10)),
        "findtime": int(setting(hostvars, "gateway_ban_find_seconds", 60)),
        "bantime": int(setting(hostvars, "gateway_ban_seconds", 600)),
    }
    return running


def wait_for(what: Callable[[], object], seconds: float, step: float = 0.2):
    """what()'s first true value within `seconds`, else its last one."""
    deadline = time.monotonic() + seconds
    while not (found := what()) and time.monotonic() < deadline:
        time.sleep(step)
    return found


def jail_status(host) -> dict[str, str]:
    """`fail2ban-client status localguard-gateway` as {"Total failed": "3", "Banned IP list": "...", ...}."""
    status = {}
    for line in host.check_output(f"fail2ban-client status {JAIL}").splitlines():
        name, sep, value = line.lstrip(" |`-").partition(":")
        if sep:
            status[name.strip()] = value.strip()
    return status


def banned(host) -> list[str]:
    return jail_status(host)["Banned IP list"].split()


def total_failed(host) -> int:
    return int(jail_status(host)["Total failed"])


@dataclass
class Client:
    """Another host that reaches the gateway: `host` runs commands there, `address` is what the
    gateway sees, `gateway` the gateway's address it connects to."""

    name: str
    host: object
    address: str
    gateway: str

    def status(self, key: str, timeout: int = 5) -> tuple[int, str]:
        """curl's exit code and the HTTP status of one request with this key (no certificate check:
        the ban is the point here, not TLS)."""
        command = ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--connect-timeout", str(timeout),
                   "-H", f"Authorization: Bearer {key}", f"https://{self.gateway}/v1/models"]  # fmt: skip
        result = self.host.run(shlex.join(command))
        return result.rc, result.stdout.strip()

    def connects(self, port: int, timeout: int = 2) -> bool:
        """A TCP handshake only: nothing reaches nginx's log."""
        return self.host.run(f"nc -z -w {timeout} {self.gateway} {port}").rc == 0


def inventory(_testinfra_host) -> dict[str, dict]:
    backend = _testinfra_host.backend
    if backend.NAME != "ansible":
        return {}
    runner = backend.ansible_runner
    return {name: runner.get_variables(name) for name in runner.get_hosts("all")}


def command_host(variables: dict):
    """The host through `podman exec`, as tests/infra/conftest.py reaches hosts; None if it cannot be."""
    if variables.get("ansible_connection") in PODMAN_CONNECTIONS:
        container = variables.get("ansible_host", variables["inventory_hostname"])
        return testinfra.get_host(f"podman://{container}")
    if "lab_container" in variables:
        return testinfra.get_host(f"podman://{variables['lab_container']}")
    return None


def ignored(host, address: str) -> bool:
    """On the jail's ignore list (names there, which fail2ban would resolve, are not expected)."""
    listed = re.findall(r"[|`]- (\S+)", host.check_output(f"fail2ban-client get {JAIL} ignoreip"))
    networks = [ipaddress.ip_network(n, strict=False) for n in listed if re.fullmatch(r"[0-9a-fA-F:./]+", n)]
    return any(ipaddress.ip_address(address) in network for network in networks)


@pytest.fixture(scope="module")
def client(host, gateway, _testinfra_host) -> Client:
    """The first other host (clients first) that reaches the gateway port and is not exempt."""
    hosts = inventory(_testinfra_host)
    own = host.check_output("hostname -I").split()
    candidates = sorted(
        (name for name, v in hosts.items() if "gpu_hosts" not in v.get("group_names", [])),
        key=lambda name: ("clients" not in hosts[name].get("group_names", []), name),
    )
    why = []
    for name in candidates:
        other = command_host(hosts[name])
        if other is None:
            continue
        for address in own:
            route = other.run(f"ip -o route get {address}")
            source = re.search(r"\bsrc (\S+)", route.stdout)
            if route.rc != 0 or source is None:
                continue
            candidate = Client(name, other, source.group(1), address)
            if ignored(host, candidate.address):
                why.append(f"{name} ({candidate.address}) is exempt")
            elif not candidate.connects(443):
                why.append(f"{name} does not reach {address}:443")
            else:
                return candidate
    reason = "no host to be banned: " + ("; ".join(why) or "no other host reachable by podman")
    # The scenario is built with one (its CA host): there, not finding it is a failure.
    if os.environ.get("MOLECULE_SCENARIO_DIRECTORY"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def clean_slate(host, client):
    """No ban of the client before a check, and none left after it."""
    host.run(f"fail2ban-client set {JAIL} unbanip {client.address}")
    yield
    host.run(f"fail2ban-client set {JAIL} unbanip {client.address}")


def other_tables(host) -> dict[str, str]:
    """Every nftables table but fail2ban's, as rules (no counters, no set elements)."""
    names = [" ".join(line.split()[1:]) for line in host.check_output("nft list tables").splitlines()]
    return {name: host.check_output(f"nft -s -t list table {name}") for name in names if name != TABLE}


WRONG_KEY = "lgk_wrong-key-for-the-ban-check-0123456789abcdef"


def ban(host, client: Client, max_failures: int) -> None:
    """max_failures wrong keys from the client; banned once fail2ban has read the last one.

    The checks leave no 401 of the client behind (after a ban they only try TCP handshakes), so
    each starts from no failure counted for it.
    """
    counted = total_failed(host)
    for _ in range(max_failures - 1):
        assert client.status(WRONG_KEY) == (0, "401")
    # One short of the threshold: counted, not banned.
    assert wait_for(lambda: total_failed(host) >= counted + max_failures - 1, 10), jail_status(host)
    assert client.address not in banned(host), "banned before max_failures (401s left from an earlier check?)"
    assert client.status(WRONG_KEY) == (0, "401")
    assert wait_for(lambda: client.address in banned(host), 10), jail_status(host)


@pytest.mark.molecule_only
def test_gw_09_wrong_keys_get_the_address_dropped_on_the_gateway_ports_only(host, jail, client, clean_slate):
    """After gateway_ban_max_failures 401s the next connection to the gateway port gets no answer
    at all (drop: curl times out, where a reject would be refused at once); the gateway still
    serves everyone else, the address still reaches other ports, and no other nftables table
    changed (the firewall's `inet localguard` among them)."""
    tables = other_tables(host)
    server = host.check_output(
        f"nohup python3 -m http.server {OTHER_PORT} --bind 0.0.0.0 >/dev/null 2>&1 & echo $!"
    )
    try:
        assert wait_for(lambda: host.socket(f"tcp://0.0.0.0:{OTHER_PORT}").is_listening, 5)
        other_port_open = client.connects(OTHER_PORT)
        ban(host, client, jail["maxretry"])

        started = time.monotonic()
        assert client.status("lgk_any", timeout=3)[0] == 28  # curl: connection timed out
        assert time.monotonic() - started >= 2.5
        assert not client.connects(443)
        # Only the gateway port: elsewhere the address is as the firewall treats it.
        if other_port_open:
            assert client.connects(OTHER_PORT)
        # The gateway itself still answers others (loopback here).
        assert host.run("curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1/v1/models").stdout == "401"

        elements = host.check_output(f"nft -j list set {TABLE} {SET}")
        assert client.address in json.dumps(json.loads(elements)), elements
        assert other_tables(host) == tables
        assert all(client.address not in host.check_output(f"nft list table {name}") for name in tables)
        # The ban is in the journal, through syslog (fail2ban's logtarget), for the collector.
        journal = host.check_output("journalctl -t fail2ban.actions -o cat --no-pager -n 50")
        assert re.search(rf"\[{JAIL}\] Ban {re.escape(client.address)}$", journal, re.MULTILINE), journal
    finally:
        host.run(f"kill {server}")


def ban_rule(hostvars, port: int) -> str:
    """The ban rule for a gateway on `port`: its mTLS port too when that tier is on."""
    ports = [str(port)]
    if setting(hostvars, "gateway_mtls_enabled", False):
        ports.append(str(setting(hostvars, "gateway_mtls_port", 8443)))
    dport = ports[0] if len(ports) == 1 else "{ " + ", ".join(ports) + " }"
    return f"tcp dport {dport} ip saddr @{SET} drop"


def test_gw_09_ban_rule_covers_every_gateway_port_and_drops(host, hostvars, jail, client, clean_slate):
    """The tier ports of this gateway, mTLS included when it is on, and nothing else."""
    ban(host, client, jail["maxretry"])
    chain = host.check_output(f"nft list chain {TABLE} {CHAIN}")
    assert ban_rule(hostvars, int(setting(hostvars, "gateway_port", 443))) in chain, chain


@pytest.mark.molecule_only
def test_gw_09_ban_ends_after_the_ban_time(host, jail, client, clean_slate):
    seconds = jail["bantime"]
    if seconds > 30:
        pytest.skip(f"gateway_ban_seconds is {seconds} here: the Molecule scenario checks the unban")
    ban(host, client, jail["maxretry"])
    banned_at = time.monotonic()
    assert client.status("lgk_any", timeout=1)[0] == 28
    assert wait_for(lambda: client.address not in banned(host), seconds + 10, step=0.5)
    assert time.monotonic() - banned_at >= seconds - 2
    # A handshake, not a request: a 401 now would count towards the next check's ban.
    assert wait_for(lambda: client.connects(443), 5)


# 401 lines as the gateway writes them (fields in GW-08's order), and lines the filter must pass
# over although an address or a 401 appears in what the client sent.
SAMPLE = [
    {"remote": "198.51.100.7", "status": 401, "path": '/x","remote":"203.0.113.9","status":401,',
     "user_agent": "203.0.113.10"},
    {"remote": "198.51.100.8", "status": 403, "user_agent": '"status":401, 203.0.113.11'},
    {"remote": "198.51.100.9", "status": 200, "key_id": "203.0.113.12"},
    {"remote": "198.51.100.10", "status": 429},
    {"remote": "2001:db8::7", "status": 401},
]  # fmt: skip


def log_line(time_text: str, remote: str, status: int, **fields) -> str:
    line = {"time": time_text, "request_id": "0" * 32, "remote": remote, "key_id": "", "method": "GET",
            "path": "/v1/models", "route": "models", "denied": "", "status": status, "bytes": 60,
            "request_bytes": 300, "request_time": 0.001, "upstream_time": "", "tls": "TLSv1.3",
            "client_cert": "", "user_agent": "curl/7.88.1"}  # fmt: skip
    line.update(fields)
    return json.dumps(line, separators=(",", ":"))


def test_gw_09_filter_reads_the_time_and_matches_401_lines_by_remote_address_only(host, gateway):
    lines = [log_line("2026-11-28T10:00:00+01:00", **sample) for sample in SAMPLE]
    # And a real line: the gateway's own 401 (from loopback, which the jail ignores).
    host.check_output("curl -sk -o /dev/null -A lg-filter-check https://127.0.0.1/v1/models")
    real = wait_for(lambda: host.check_output(f"grep -F lg-filter-check {LOG} | tail -n 1"), 3)
    real_time = json.loads(real)["time"]
    path = "/tmp/lg-verifier-filter.log"
    host.check_output(f"printf '%s\\n' {' '.join(shlex.quote(x) for x in [*lines, real])} >{path}")
    found = host.check_output(f"fail2ban-regex -o '<ip> <time>' {path} {FILTER}").splitlines()
    # 10:00 at +01:00 is 09:00 UTC: the offset is read, not dropped.
    sample_time = int(datetime(2026, 11, 28, 9, 0, tzinfo=UTC).timestamp())
    assert [line.split() for line in found] == [
        ["198.51.100.7", str(sample_time)],
        ["2001:db8::7", str(sample_time)],
        ["127.0.0.1", str(int(datetime.fromisoformat(real_time).timestamp()))],
    ]
    # Each time read from the line's leading "time" field (the filter's datepattern), not searched
    # for anywhere in a line whose other fields the client chose.
    report = host.check_output(f"fail2ban-regex {path} {FILTER}")
    hits = re.search(r"Date template hits:\n\|- \[# of hits\] date format\n((?:\|  .*\n)+)", report)
    assert hits and hits.group(1).split("\n")[:-1] == [
        f'|  [{len(lines) + 1}] ^\\{{"time":"(Year-Month-DayT24hour:Minute:SecondZone offset)"'
    ], report


def test_gw_09_fail2ban_logs_to_syslog_and_only_the_gateway_jail_runs(host, gateway):
    """Debian's sshd jail (iptables, beside the firewall) is off; the gateway's is on."""
    status = host.check_output("fail2ban-client status")
    assert re.search(r"Jail list:\s+localguard-gateway\s*$", status, re.MULTILINE), status
    assert host.check_output("fail2ban-client get logtarget").splitlines()[-1].strip(" |`-") == "SYSLOG"


def test_gw_09_loopback_admins_controllers_and_listed_networks_are_never_banned(
    host, hostvars, gateway, _testinfra_host
):
    """Read from the inventory here: every admin and controller with an address, loopback, and each
    entry of gateway_ban_ignore_networks is on the jail's ignore list."""
    listed = hostvars.get("gateway_ban_ignore_networks", [])
    # A template (the lab's names its client) is Ansible's to resolve: its entries are not checked here.
    exempt = ["127.0.0.1", "::1", *(map(str, listed) if isinstance(listed, list) else [])]
    for variables in inventory(_testinfra_host).values():
        if {"admins", "controllers"} & set(variables.get("group_names", [])):
            address = str(variables.get("localguard_address", variables.get("ansible_host", "")))
            try:
                exempt.append(str(ipaddress.ip_address(address)))
            except ValueError:
                continue  # a name: the role resolves it, this check does not
    for entry in exempt:
        assert ignored(host, str(ipaddress.ip_network(entry, strict=False).network_address)), entry


def server_pid(host) -> str:
    return host.check_output("systemctl show -p MainPID --value fail2ban.service")


def rules(host) -> list[str]:
    """The ban rules in fail2ban's chain (none while its action has not started)."""
    listed = host.run(f"nft list chain {TABLE} {CHAIN}").stdout
    return [line.strip() for line in listed.splitlines() if "@" in line]


@pytest.mark.molecule_only
def test_gw_09_changes_reach_the_running_jail_and_the_toggle_removes_it(
    host, hostvars, gateway, jail, target, first_host
):
    """Another gateway port makes the ban rule anew (fail2ban's reload alone would keep the rule its
    started action made, on the old port); gateway_ban_enabled false takes the jail and localguard's
    fail2ban files away; set again, the jail is back with its settings. All without restarting
    fail2ban: the same server all along. Three playbook runs: on one gateway of the fleet only."""
    if first_host[1].get("inventory_hostname") != gateway:
        pytest.skip("checked on one gateway only")
    playbook, inventory = target
    port = int(setting(hostvars, "gateway_port", 443))
    probe = "192.0.2.1"  # TEST-NET-1: a ban by command starts the action, so its rule exists
    pid = server_pid(host)
    host.check_output(f"fail2ban-client set {JAIL} banip {probe}")
    host.check_output(f"fail2ban-client set {JAIL} unbanip {probe}")
    assert rules(host) == [ban_rule(hostvars, port)]
    moved = json.dumps({"gateway_port": port + 1})
    run = run_playbook(playbook, inventory, "--tags", "gateway", "-e", moved, limit=gateway)
    try:
        assert run.rc == 0, run.failure_messages() or run.stderr[-2000:]
        assert not any(f"dport {port} " in rule for rule in rules(host)), rules(host)
        host.check_output(f"fail2ban-client set {JAIL} banip {probe}")
        assert rules(host) == [ban_rule(hostvars, port + 1)]
        host.check_output(f"fail2ban-client set {JAIL} unbanip {probe}")
        assert server_pid(host) == pid

        off = json.dumps({"gateway_ban_enabled": False})
        run = run_playbook(playbook, inventory, "--tags", "gateway", "-e", off, limit=gateway)
        assert run.rc == 0, run.failure_messages() or run.stderr[-2000:]
        assert JAIL not in host.check_output("fail2ban-client status")
        assert not any(host.file(path).exists for path in CONFIG)
        assert rules(host) == []
        assert server_pid(host) == pid
    finally:
        host.run(f"fail2ban-client set {JAIL} unbanip {probe}")
        back = run_playbook(playbook, inventory, "--tags", "gateway", limit=gateway)
    assert back.rc == 0, back.failure_messages() or back.stderr[-2000:]
    assert host.check_output(f"fail2ban-client get {JAIL} maxretry") == str(jail["maxretry"])
    assert server_pid(host) == pid
