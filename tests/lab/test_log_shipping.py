"""LS-*, LC-* and GW-09 on the hardened lab: logs leave every host over mutually authenticated
RELP/TLS, reach the collector's store and its alert rules, and survive a collector outage.

Requests go through the real gateways from the client hosts' network namespaces; what the
collector stored is read from its files, as an operator (group adm) would.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import secrets
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from netns import run_in_netns
from playbook_runner import ROOT
from probes import LAB_ENGINES, lab_group_vars, podman, tcp_probe

pytestmark = pytest.mark.lab
LAB = ROOT / ".lab"
CA_BUNDLE = LAB / "pki" / "ca.crt"
COLLECTOR = "lg-logs"
STORE = "/var/log/localguard"
COLLECTOR_PORT = 6514

# Requests through a gateway; each result carries the X-Request-ID the gateway answered with.
REQUESTS = r"""
import json, sys, time, httpx
args = json.load(sys.stdin)
results = []
with httpx.Client(verify=args["ca"], timeout=10) as client:
    for req in args["requests"]:
        sent = time.time()
        try:
            response = client.request(req["method"], req["url"], headers=req.get("headers", {}),
                                      json=req.get("json"))
            results.append({"status": response.status_code, "sent": sent, "done": time.time(),
                            "request_ids": response.headers.get_list("x-request-id"),
                            "request_id": response.headers.get("x-request-id")})
        except Exception as exc:
            results.append({"error": f"{type(exc).__name__}: {exc}", "sent": sent})
print(json.dumps(results))
"""

# A RELP session as a sender would open it: TLS with the given certificate (or none), `open`, then
# one syslog frame. "accepted" only when the collector acknowledged the frame with 200.
RELP_PROBE = r"""
import json, socket, ssl, sys
args = json.load(sys.stdin)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.load_verify_locations(args["ca"])
if args.get("cert"):
    ctx.load_cert_chain(args["cert"], args["key"])

def frame(txnr, command, data):
    return b"%d %s %d %s\n" % (txnr, command, len(data), data)

def reply(tls):
    data = b""
    while not data.endswith(b"\n"):
        chunk = tls.recv(4096)
        if not chunk:
            break
        data += chunk
    return data

try:
    with socket.create_connection((args["host"], args["port"]), timeout=5) as raw:
        with ctx.wrap_socket(raw) as tls:
            tls.sendall(frame(1, b"open", b"relp_version=0\nrelp_software=lab-probe\ncommands=syslog"))
            opened = reply(tls)
            if not opened.startswith(b"1 rsp") or b" 200 " not in opened[:24]:
                print(json.dumps({"outcome": "refused", "detail": opened[:200].decode(errors="replace")}))
                sys.exit()
            tls.sendall(frame(2, b"syslog", args["line"].encode()))
            acked = reply(tls)
            outcome = "accepted" if acked.startswith(b"2 rsp") and b" 200 " in acked[:24] else "refused"
            print(json.dumps({"outcome": outcome, "detail": acked[:200].decode(errors="replace")}))
except (OSError, ssl.SSLError) as exc:
    print(json.dumps({"outcome": "refused", "detail": f"{type(exc).__name__}: {exc}"}))
"""


@pytest.fixture(scope="module")
def ip(lab_hosts) -> dict[str, str]:
    return {name: vars_["ansible_host"] for name, vars_ in lab_hosts.items()}


def api_key() -> str:
    records = json.loads((LAB / "api-keys.json").read_text())
    return next(r["key"] for r in records if r["id"] == "lab-valid")


def through_gateway(client: str, url: str, requests: list[dict]) -> list[dict]:
    return run_in_netns(
        client,
        REQUESTS,
        {"ca": str(CA_BUNDLE), "requests": [{**r, "url": url + r["path"]} for r in requests]},
    )


def stored(pattern: str, host: str = "*", where: str = "hosts") -> list[dict]:
    """Stored JSON lines containing `pattern` (fixed string), from the collector's files."""
    path = f"{STORE}/{where}/{host}/*.log" if where == "hosts" else f"{STORE}/{where}/*.json"
    out = podman(
        COLLECTOR, "sh", "-c", f"cat {path} 2>/dev/null | grep -F -- {json.dumps(pattern)} || true"
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def wait_for(find, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        found = find()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(interval)


def alerts(rule: str, **fields) -> list[dict]:
    return [
        a
        for a in stored(f'"rule": "{rule}"', where="alerts")
        if all(a.get(k) == v for k, v in fields.items())
    ]


def test_ls_02_a_gateway_request_reaches_the_collector_store_quickly(ip):
    """LS-02/LC-02: a request through gpu1's gateway is stored under gpu1, as JSON with its fields."""
    [result] = through_gateway("lg-client", f"https://{ip['gpu1']}", [
        {"method": "GET", "path": "/v1/models", "headers": {"Authorization": f"Bearer {api_key()}"}},
    ])  # fmt: skip
    assert result.get("status") == 200 and len(result["request_ids"]) == 1, result
    lines = wait_for(lambda: stored(result["request_id"], "gpu1"), timeout=15)
    assert lines, "the request never reached the collector's store"
    [line] = lines
    gateway = line["gateway"]
    assert line["host"] == "gpu1" and gateway["path"] == "/v1/models" and gateway["status"] == 200
    assert (
        gateway["key_id"] == "lab-valid"
        and gateway["route"] == "models"
        and gateway["tls"].startswith("TLSv1.")
    )
    received = datetime.datetime.fromisoformat(line["received"]).timestamp()
    # Lab containers share this machine's clock: the collector's receive time is comparable.
    delay = received - result["done"]
    print(f"\nLS-02 request -> collector store: {delay * 1000:.0f} ms (goal < 2000 ms)")
    assert delay < 10, f"{delay:.1f} s from request to stored line"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory, ip) -> dict[str, tuple[str, str]]:
    """gpu1's own certificate (a managed host), a client certificate from our CA (not a managed
    host's name), and a certificate naming gpu1 from a CA of our own making."""
    out = tmp_path_factory.mktemp("relp")
    pems = {}
    for name, path in (
        ("gpu1.crt", "/etc/localguard/pki/server.crt"),
        ("gpu1.key", "/etc/localguard/pki/server.key"),
    ):
        pems[name] = podman("lg-gpu1", "cat", path).stdout
        assert pems[name].startswith("-----BEGIN"), f"could not read {path} on gpu1"
    client_cert = LAB / "pki" / "clients" / "lab-client.crt"
    client_key = LAB / "pki" / "clients" / "lab-client.key"
    assert client_cert.exists(), "no exported lab-client certificate: run make demo"

    other_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    other_ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not the localguard CA")])
    # Signed by a key of our own making: an issuer the collector has never trusted.
    names = x509.SubjectAlternativeName(
        [x509.DNSName("gpu1"), x509.IPAddress(ipaddress.ip_address(ip["gpu1"]))]
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gpu1")]))
        .issuer_name(other_ca_name).public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(names, critical=False)
        .sign(other_key, hashes.SHA256())
    )  # fmt: skip
    pems["other.crt"] = leaf.public_bytes(serialization.Encoding.PEM).decode()
    pems["other.key"] = leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    for name, pem in pems.items():
        (out / name).write_text(pem)
        (out / name).chmod(0o600)
    return {
        "managed": (str(out / "gpu1.crt"), str(out / "gpu1.key")),
        "our_ca_unmanaged_name": (str(client_cert), str(client_key)),
        "other_ca": (str(out / "other.crt"), str(out / "other.key")),
    }


def relp(ip, cert: tuple[str, str] | None, marker: str) -> dict:
    # RFC 5424, claiming to be ca1: a sender's claim must not decide where its line is filed.
    line = f"<13>1 {datetime.datetime.now(datetime.UTC).isoformat()} ca1 relp-probe - - - {marker}"
    payload = {"ca": str(CA_BUNDLE), "host": ip["logs"], "port": COLLECTOR_PORT, "line": line}
    if cert:
        payload |= {"cert": cert[0], "key": cert[1]}
    # From gpu1's network namespace: the firewall lets GPU hosts reach the collector port.
    return run_in_netns("lg-gpu1", RELP_PROBE, payload, timeout=30)


@pytest.mark.parametrize("case", ["no_certificate", "other_ca", "our_ca_unmanaged_name"])
def test_lc_01_the_collector_refuses_peers_it_cannot_authenticate(ip, certificates, case):
    """LC-01: no certificate, one from another CA (even naming gpu1), or one from our CA whose
    name is no managed host's: refused, nothing stored."""
    marker = f"relp-refused-{case}-{secrets.token_hex(4)}"
    result = relp(ip, certificates.get(case), marker)
    assert result["outcome"] == "refused", result
    time.sleep(1)
    assert not stored(marker), f"{case}: a refused peer's line was stored"


def test_lc_01_a_managed_host_is_accepted_and_filed_under_its_own_name(ip, certificates):
    """LC-01/LC-02, the allowed path beside the refusals: gpu1's certificate is accepted, and its
    line is filed under gpu1 although it claims to come from ca1."""
    marker = f"relp-accepted-{secrets.token_hex(4)}"
    result = relp(ip, certificates["managed"], marker)
    assert result["outcome"] == "accepted", result
    [line] = wait_for(lambda: stored(marker), timeout=10)
    assert line["host"] == "gpu1" and line["claimed_host"] == "ca1", line


def test_lc_02_the_store_is_readable_by_root_and_adm_only():
    listing = podman(
        COLLECTOR, "sh", "-c", f"stat -c '%n %U %G %a' {STORE}/hosts {STORE}/hosts/* {STORE}/hosts/*/*"
    ).stdout
    entries = [line.split() for line in listing.splitlines()]
    assert len(entries) > 3, listing
    for path, owner, group, mode in entries:
        assert (owner, group) == ("root", "adm"), path
        assert mode in {"750", "640"}, f"{path} is {mode}"
    # An account outside adm reads nothing, though the alert engine's may pass through the top.
    assert podman(COLLECTOR, "ls", f"{STORE}/hosts", user="nobody").returncode != 0
    assert podman(COLLECTOR, "ls", f"{STORE}/hosts/gpu1", user="nobody").returncode != 0


def collector_rsyslog(action: str) -> None:
    # syslog.socket would start rsyslog again at the collector's next local log line.
    result = podman(COLLECTOR, "systemctl", action, "syslog.socket", "rsyslog.service")
    assert result.returncode == 0, result.stderr


def test_ls_03_an_outage_of_the_collector_loses_nothing_and_duplicates_nothing(ip):
    """LS-03: 500 requests while the collector's rsyslog is stopped all arrive once it is back,
    each once."""
    run = secrets.token_hex(4)
    requests = [
        {
            "method": "GET",
            "path": f"/lg-outage-{run}-{i:03d}",
            "headers": {"Authorization": f"Bearer {api_key()}"},
        }
        for i in range(500)
    ]
    collector_rsyslog("stop")
    try:
        results = through_gateway("lg-client", f"https://{ip['gpu1']}", requests)
        assert all("status" in r for r in results), [r for r in results if "status" not in r][:3]
        time.sleep(3)  # the sender meets the closed session and queues
        assert not stored(f"lg-outage-{run}-"), "lines were stored while the collector was down"
    finally:
        collector_rsyslog("start")
    started = time.monotonic()
    wait_for(lambda: len(stored(f"lg-outage-{run}-", "gpu1")) >= 500, timeout=90, interval=1)
    time.sleep(2)  # a line sent twice would come right behind
    lines = stored(f"lg-outage-{run}-", "gpu1")
    paths = [line["gateway"]["path"] for line in lines]
    print(f"\nLS-03 backlog of {len(paths)} lines delivered {time.monotonic() - started:.1f} s after restart")
    assert len(set(paths)) == 500, f"{500 - len(set(paths))} of 500 lines lost"
    assert len(paths) == 500, f"{len(paths) - len(set(paths))} lines stored twice"


def test_ls_05_an_idle_host_first_line_after_a_collector_restart_arrives_within_two_heartbeats():
    """LS-05: the collector restarts. An idle host's next line goes into the session the collector
    closed, which RELP finds broken only when the host sends again; the heartbeat is that next
    line, so the probe arrives within two heartbeats, and heartbeat lines (MARK) reach the store."""
    sender, host = "lg-gpu3", "gpu3"
    heartbeat = lab_group_vars("all")["log_shipping_heartbeat_seconds"]
    marks_before = len(stored("-- MARK --", host))
    collector_rsyslog("stop")
    collector_rsyslog("start")
    probe = f"lg-heartbeat-{secrets.token_hex(4)}"
    sent = time.monotonic()
    assert podman(sender, "logger", "-t", "lgprobe", probe).returncode == 0
    arrived = wait_for(lambda: stored(probe, host), timeout=2 * heartbeat + 10, interval=1)
    waited = time.monotonic() - sent
    assert arrived, f"{host}'s first line after the collector restart still missing after {waited:.0f} s"
    print(f"\nLS-05 first line after a collector restart: {waited:.1f} s (heartbeat {heartbeat} s)")
    marked = wait_for(lambda: len(stored("-- MARK --", host)) > marks_before, 2 * heartbeat, interval=1)
    assert marked, f"no heartbeat line from {host} within {2 * heartbeat} s"


def test_gw_09_wrong_keys_ban_the_address_and_the_ban_lifts(ip):
    """GW-09 and the address_banned alert: ten wrong keys from client2, then its next connection
    to the gateway port is dropped; after the ban time it connects again."""
    assert tcp_probe("lg-client2", ip["gpu1"], 443) == "open", (
        "client2 must reach the gateway before the test"
    )
    since = time.time()
    wrong = [
        {"method": "GET", "path": "/v1/models", "headers": {"Authorization": "Bearer lgk_" + "w" * 43}}
    ] * 10
    results = through_gateway("lg-client2", f"https://{ip['gpu1']}", wrong)
    assert [r.get("status") for r in results] == [401] * 10, results
    banned = wait_for(lambda: tcp_probe("lg-client2", ip["gpu1"], 443) == "timeout", timeout=10, interval=0.2)
    assert banned, "client2 could still connect after ten wrong keys"
    assert tcp_probe("lg-client", ip["gpu1"], 443) == "open", "only the offending address is banned"
    alert = wait_for(
        lambda: [
            a
            for a in alerts("address_banned", host="gpu1", address=ip["client2"])
            if datetime.datetime.fromisoformat(a["time"]).timestamp() >= since - 1
        ],
        timeout=15,
    )
    assert alert, "no address_banned alert on the collector"
    lifted = wait_for(lambda: tcp_probe("lg-client2", ip["gpu1"], 443) == "open", timeout=40, interval=1)
    assert lifted, "client2 still banned after the ban time"


def test_lc_04_an_admin_route_call_is_alerted_with_key_and_route(ip):
    """GW-08 + LC-04: /api/pull through gpu2's gateway is refused, and the collector alerts
    naming the key id and the route; the operator's hook receives the same alert."""
    pull = {"method": "POST", "path": "/api/pull", "json": {"model": "standin-model:latest"},
            "headers": {"Authorization": f"Bearer {api_key()}"}}  # fmt: skip
    [result] = through_gateway("lg-client", f"https://{ip['gpu2']}", [pull])
    assert result.get("status") == 403 and result.get("request_id"), result
    # Alerts queue behind every line the earlier tests made (the auth matrix alone raises dozens),
    # and Molecule runs beside the lab in `make test`: minutes, not seconds, on 2 busy cores.
    found = wait_for(lambda: alerts("admin_route", request_id=result["request_id"]), timeout=240, interval=1)
    assert found, "no admin_route alert on the collector"
    [alert] = found
    assert (alert["host"], alert["key_id"], alert["path"], alert["status"]) == (
        "gpu2",
        "lab-valid",
        "/api/pull",
        403,
    )
    # The hook runs right after the alert is written.
    hook = "/var/lib/localguard-alerts/hook-received.json"
    assert wait_for(lambda: result["request_id"] in podman(COLLECTOR, "cat", hook).stdout, timeout=10), (
        "the alert hook did not receive the alert"
    )
    # Beside it, an allowed route with the same key raises no admin_route alert.
    [allowed] = through_gateway(
        "lg-client", f"https://{ip['gpu2']}", [{**pull, "method": "GET", "path": "/api/tags", "json": None}]
    )
    assert allowed.get("status") == 200, allowed
    assert wait_for(lambda: stored(allowed["request_id"], "gpu2"), timeout=15)
    assert not alerts("admin_route", request_id=allowed["request_id"])


def test_lc_04_an_engine_account_egress_attempt_is_alerted(ip):
    """FW-04/FW-10 + LC-04: the engine account's connection is dropped, and its drop line reaches
    the collector as an engine_egress alert."""
    port = 40000 + secrets.randbelow(20000)
    account = LAB_ENGINES["gpu1"].account
    assert podman("lg-gpu1", "nc", "-z", "-w", "1", ip["ca1"], str(port), user=account).returncode != 0
    found = wait_for(lambda: alerts("engine_egress", host="gpu1", dport=port), timeout=20)
    assert found, "no engine_egress alert on the collector"
    assert found[0]["dst"] == ip["ca1"]


@pytest.mark.run_last
def test_ls_04_nothing_secret_in_what_the_collector_stored(ip):
    """After the other lab tests: no API key, no prompt text and no CA passphrase anywhere in the
    collector's store, alert state or shipping queues."""
    prompt = f"lg-secret-prompt-{secrets.token_hex(8)}"
    chat = {
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": {"Authorization": f"Bearer {api_key()}"},
        "json": {"model": "lab", "max_tokens": 4, "messages": [{"role": "user", "content": prompt}]},
    }
    for gpu in ("gpu1", "gpu2"):
        [result] = through_gateway("lg-client", f"https://{ip[gpu]}", [chat])
        assert result.get("status") == 200, result
        assert wait_for(lambda rid=result["request_id"], g=gpu: stored(rid, g), timeout=15), (
            f"{gpu}: chat not stored"
        )
    keys = [record["key"] for record in json.loads((LAB / "api-keys.json").read_text())]
    delivered = podman(
        "lg-ca1", "sh", "-c", "cat /etc/localguard/keys/delivery/*.key 2>/dev/null"
    ).stdout.split()
    secrets_ = {
        **{f"api key {i}": key for i, key in enumerate(keys + delivered)},
        "CA passphrase": (LAB / "ca.passphrase").read_text().strip(),
        "prompt": prompt,
    }
    # Patterns on stdin, never in a command line; any lgk_ key shape counts, listed or not.
    script = (
        "import json, os, re, sys\n"
        "secrets = json.load(sys.stdin)\n"
        "shape = re.compile(rb'lgk_[A-Za-z0-9_-]{43}')\n"
        "found = {}\n"
        "for top in sys.argv[1:]:\n"
        "    for root, _, files in os.walk(top):\n"
        "        for name in files:\n"
        "            data = open(os.path.join(root, name), 'rb').read()\n"
        "            hits = [label for label, value in secrets.items() if value.encode() in data]\n"
        "            hits += ['an lgk_ key'] if shape.search(data) else []\n"
        "            if hits:\n"
        "                found[os.path.join(root, name)] = hits\n"
        "print(json.dumps(found))\n"
    )
    proc = subprocess.run(
        ["podman", "exec", "-i", COLLECTOR, "python3", "-c", script,
         STORE, "/var/lib/localguard-alerts", "/var/spool/rsyslog"],
        input=json.dumps(secrets_), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {}, proc.stdout
    size = podman(COLLECTOR, "du", "-sh", STORE).stdout.split()[0]
    print(f"\nLS-04 searched {size} of stored logs for {len(secrets_)} secrets and the lgk_ key shape")
