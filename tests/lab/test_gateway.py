"""GW-* and PKI-* with real TLS from the client lab host, through its firewall, to each gateway.

Requests run in the `client` host's network namespace with this machine's httpx and openai
client (tests/lab/netns.py), verified against the CA bundle the pki role exported.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from pathlib import Path

import pytest
from dangerous_routes import NEVER_ALLOWED
from netns import container_pid, openai_completion, run_in_netns
from playbook_runner import ROOT, run_playbook
from probes import LAB_ENGINES, lab_group_vars, podman

pytestmark = pytest.mark.lab
LAB = ROOT / ".lab"
CA_BUNDLE = LAB / "pki" / "ca.crt"
CLIENTS = LAB / "pki" / "clients"
INVENTORY = ROOT / "inventories" / "lab" / "hosts.yml"
KEY_STATES = ("none", "wrong", "expired", "revoked", "valid")
# One body that every route's request model accepts (extra fields are ignored).
BODY = {"model": "lab", "messages": [{"role": "user", "content": "Say hi."}], "prompt": "Say hi.",
        "input": "hi", "text": "hi", "tokens": [1], "max_tokens": 4, "stream": False}  # fmt: skip

HTTP_PROBE = r"""
import json, ssl, sys, time, httpx
results = {}
for req in json.load(sys.stdin):
    time.sleep(req.get("pace", 0))  # stay under the per-address rate where a test is not about it
    verify = req.get("verify", True)
    if req.get("cert"):  # mTLS: present a client certificate
        verify = ssl.create_default_context(cafile=req["verify"])
        verify.load_cert_chain(*req["cert"])
    try:
        with httpx.Client(verify=verify, timeout=req.get("timeout", 60)) as client:
            response = client.request(req["method"], req["url"], headers=req.get("headers", {}),
                                      json=req.get("json"))
        results[req["id"]] = {"status": response.status_code, "body": response.text[:300]}
    except Exception as exc:
        results[req["id"]] = {"error": f"{type(exc).__name__}: {exc}"}
print(json.dumps(results))
"""


def lab_keys() -> dict[str, str]:
    records = json.loads((LAB / "api-keys.json").read_text())
    keys = {record["id"].removeprefix("lab-"): record["key"] for record in records}
    keys["wrong"] = "lgk_" + "x" * 43
    return keys


def headers_for(state: str) -> dict[str, str]:
    return {} if state == "none" else {"Authorization": f"Bearer {lab_keys()[state]}"}


def matrix_cases() -> list[tuple[str, str, str, str, int]]:
    cases = []
    for gpu, spec in LAB_ENGINES.items():
        for route, allowed in [(r, True) for r in spec.allowed_routes] + [
            (r, False) for r in spec.blocked_routes
        ]:
            method, path = route.split(" ", 1)
            for state in KEY_STATES:
                expected = 401 if state != "valid" else (200 if allowed else 403)
                cases.append((gpu, method, path, state, expected))
    return cases


CASES = matrix_cases()


@pytest.fixture(scope="module")
def gateway_url(lab_hosts):
    return lambda gpu, port=443: f"https://{lab_hosts[gpu]['ansible_host']}:{port}"


@pytest.fixture(scope="module")
def matrix(gateway_url) -> dict[str, dict]:
    requests = [
        {
            "id": "|".join(map(str, case)),
            "method": case[1],
            "url": gateway_url(case[0]) + case[2],
            "headers": headers_for(case[3]),
            "json": BODY if case[1] in {"POST", "PUT", "DELETE"} else None,
            "verify": str(CA_BUNDLE),
            # Unauthenticated requests count against the per-address rate too (20/s in the lab).
            "pace": 0.06,
        }
        for case in CASES
    ]
    return run_in_netns("lg-client", HTTP_PROBE, requests)


@pytest.mark.parametrize(
    ("gpu", "method", "path", "state", "expected"), CASES, ids=["-".join(map(str, c)) for c in CASES]
)
def test_gw_auth_matrix(matrix, gpu, method, path, state, expected):
    result = matrix["|".join(map(str, (gpu, method, path, state, expected)))]
    assert result.get("status") == expected, result


def test_gw_openai_client_gets_a_real_completion_with_the_ca_bundle(gateway_url):
    reply = openai_completion("lg-client", gateway_url("gpu1"), lab_keys()["valid"], str(CA_BUNDLE))
    assert reply["content"].strip() and reply["tokens"] > 0


def test_gw_without_the_ca_bundle_verification_fails(gateway_url):
    code = r"""
import json, sys, httpx, openai
args = json.load(sys.stdin)
client = openai.OpenAI(base_url=args["url"] + "/v1", api_key=args["key"], max_retries=0,
                       http_client=httpx.Client(timeout=10))
try:
    client.models.list()
    print(json.dumps("connected"))
except openai.APIConnectionError as exc:
    print(json.dumps(repr(exc.__cause__)))
"""
    outcome = run_in_netns("lg-client", code, {"url": gateway_url("gpu2"), "key": lab_keys()["valid"]})
    assert "CERTIFICATE_VERIFY_FAILED" in outcome, outcome


def test_gw_plain_http_is_refused(lab_hosts):
    address = lab_hosts["gpu2"]["ansible_host"]
    requests = [
        {
            "id": "tls-port",
            "method": "GET",
            "url": f"http://{address}:443/api/tags",
            "headers": headers_for("valid"),
        },
        {
            "id": "port-80",
            "method": "GET",
            "url": f"http://{address}:80/api/tags",
            "headers": headers_for("valid"),
        },
    ]
    results = run_in_netns("lg-client", HTTP_PROBE, [{**request, "timeout": 3} for request in requests])
    # nginx answers plain HTTP on its TLS port with 400 and forwards nothing; port 80 is closed.
    assert results["tls-port"].get("status") == 400, results
    assert "error" in results["port-80"], results


@pytest.fixture(scope="module")
def revoked_client() -> str:
    """`make demo` issued lab-client-revoked; revoke it the way an operator would, by listing it in
    pki_revoked_clients. That the revocation holds once the name is no longer listed is
    test_pki_08 (tests/lab/test_client_cert_lifecycle.py)."""
    name = "lab-client-revoked"
    revoke = run_playbook(
        ROOT / "harden.yml", INVENTORY, "--tags", "pki", "-e", json.dumps({"pki_revoked_clients": [name]})
    )
    assert revoke.rc == 0, revoke.failure_messages()
    return name


@pytest.mark.parametrize(
    ("client_cert", "expected"),
    [(None, 400), ("lab-client-revoked", 400), ("lab-client", 200)],
    ids=["no-client-cert", "revoked-client-cert", "valid-client-cert"],
)
def test_gw_mtls_tier(gateway_url, revoked_client, client_cert, expected):
    """GW-04's mTLS tier with PKI-03 client certificates and the PKI-04 CRL, through the firewall's
    mTLS port (opened because gateway_mtls_enabled is on)."""
    cert = [str(CLIENTS / f"{client_cert}.crt"), str(CLIENTS / f"{client_cert}.key")] if client_cert else None
    request = {"id": "mtls", "method": "GET", "url": gateway_url("gpu3", 8443) + "/v1/models",
               "headers": headers_for("valid"), "verify": str(CA_BUNDLE), "cert": cert}  # fmt: skip
    result = run_in_netns("lg-client", HTTP_PROBE, [request])["mtls"]
    assert result.get("status") == expected, result
    if expected == 400:
        assert "SSL certificate" in result["body"], result


def client_handshake(address: str, *options: str) -> subprocess.CompletedProcess:
    """An OpenSSL handshake from the client host's network namespace, verified against our CA."""
    command = [
        "openssl",
        "s_client",
        "-connect",
        f"{address}:443",
        "-CAfile",
        str(CA_BUNDLE),
        "-verify_return_error",
    ]
    return subprocess.run(
        ["nsenter", "-t", str(container_pid("lg-client")), "-n", *command, *options],
        input="", capture_output=True, text=True, timeout=15,
    )  # fmt: skip


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_gw_serves_tls_1_2_and_1_3(lab_hosts, version):
    """The served set. (TLS 1.0/1.1 cannot be shown refused from here: OpenSSL 3 and the AEAD-only
    cipher list refuse them with or without the gateway's setting; test_gw_nginx_offers_no_tls_below_1_2
    reads the configuration nginx loaded instead.)"""
    handshake = client_handshake(lab_hosts["gpu2"]["ansible_host"], version)
    assert handshake.returncode == 0, handshake.stderr[-500:]


def test_gw_hashes_only_no_plaintext_key_on_gateways_or_in_ansible_output(lab_hosts):
    keys = [key for name, key in lab_keys().items() if name != "wrong"]
    for gpu in LAB_ENGINES:
        for key in keys:
            found = podman(f"lg-{gpu}", "grep", "-rlF", key, "/etc", "/var/log")
            assert found.stdout == "", f"plaintext key found on {gpu}: {found.stdout}"
    stored = podman("lg-gpu1", "stat", "-c", "%U:%G %a", "/etc/localguard/gateway/static-keys.json")
    assert stored.stdout.strip() == "root:lg-keys 640"
    verbose = subprocess.run(
        [str(ROOT / ".venv/bin/ansible-playbook"), "-i", str(INVENTORY), str(ROOT / "harden.yml"),
         "--tags", "gateway,pki", "--limit", "gpu1", "-vvv"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert verbose.returncode == 0, verbose.stdout[-3000:]
    output = verbose.stdout + verbose.stderr
    assert [key for key in keys if key in output] == []
    passphrase = (LAB / "ca.passphrase").read_text().strip()
    assert passphrase not in output


def serial(host: str) -> str:
    return podman(
        f"lg-{host}", "openssl", "x509", "-noout", "-serial", "-in", "/etc/localguard/pki/server.crt"
    ).stdout


def test_pki_renewal_by_remaining_validity():
    before = {host: serial(host) for host in ("gpu2", "gpu3")}
    # 90-day certificates are inside a 100-day threshold: gpu2's must be renewed...
    renew = run_playbook(ROOT / "harden.yml", INVENTORY, "--tags", "pki", "-e", "pki_renew_before_days=100",
                         limit="gpu2")  # fmt: skip
    assert renew.rc == 0, renew.failure_messages()
    assert serial("gpu2") != before["gpu2"]
    # ...while a run with the normal threshold leaves fresh certificates alone.
    again = run_playbook(ROOT / "harden.yml", INVENTORY, "--tags", "pki", limit="gpu2,gpu3,ca1")
    assert again.rc == 0 and again.total("changed") == 0, again.changed_tasks()
    assert serial("gpu3") == before["gpu3"]


def test_gw_json_access_log_has_key_ids_not_keys_or_bodies(matrix):
    log = podman("lg-gpu2", "tail", "-n", "200", "/var/log/nginx/localguard-gateway.json").stdout
    entries = [json.loads(line) for line in log.splitlines()]
    assert {entry["key_id"] for entry in entries} >= {"lab-valid", ""}
    assert "Say hi." not in log
    assert not re.search(r"lgk_[A-Za-z0-9_-]{20,}", log)


def test_gw_server_certificate_names_the_host(lab_hosts):
    pki = "/etc/localguard/pki"
    out = podman(
        "lg-gpu1", "openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", f"{pki}/server.crt"
    ).stdout
    assert "DNS:gpu1" in out and f"IP Address:{lab_hosts['gpu1']['ansible_host']}" in out
    assert not Path(ROOT / ".lab" / "pki" / "ca.key").exists()
    assert podman("lg-gpu1", "test", "-e", "/etc/localguard/ca/ca.key").returncode != 0, (
        "CA key on a GPU host"
    )


# Back-to-back requests on one keep-alive connection: a burst takes a fraction of a second, so
# only the bursts (10 per key, 40 per address in the lab) decide what is refused.
BURST_PROBE = r"""
import json, sys, httpx
args = json.load(sys.stdin)
with httpx.Client(verify=args["ca"], timeout=30) as client:
    statuses = [client.get(args["url"], headers={"Authorization": f"Bearer {key}"} if key else {}).status_code
                for key in args["keys"]]
print(json.dumps(statuses))
"""


def burst(url: str, keys: list[str | None]) -> list[int]:
    statuses = run_in_netns("lg-client", BURST_PROBE, {"url": url, "keys": keys, "ca": str(CA_BUNDLE)})
    time.sleep(3)  # let the buckets refill for the tests after this one
    return statuses


def test_gw_rate_limit_is_per_key(gateway_url):
    """Key A runs out of its own budget while key B, from the same address whose budget is far
    from spent, still gets through."""
    keys = lab_keys()
    statuses = burst(gateway_url("gpu2") + "/api/tags", [keys["valid"]] * 30 + [keys["second"]])
    assert statuses[0] == 200 and 429 in statuses[:30], statuses
    assert statuses[30] == 200, statuses


def test_gw_body_limit_just_below_and_above_the_configured_size(gateway_url):
    limit = int(lab_group_vars("gpu_hosts")["gateway_max_body_size"].removesuffix("k")) * 1024
    assert limit != 1024 * 1024, "use a value other than nginx's default, or this proves nothing"
    common = {"method": "POST", "url": gateway_url("gpu2") + "/api/generate", "headers": headers_for("valid"),
              "verify": str(CA_BUNDLE), "pace": 0.1}  # fmt: skip
    below = {
        "id": "below",
        "json": {"model": "lab", "stream": False, "prompt": "x" * (limit - 4096)},
        **common,
    }
    above = {
        "id": "above",
        "json": {"model": "lab", "stream": False, "prompt": "x" * (limit + 1024)},
        **common,
    }
    results = run_in_netns("lg-client", HTTP_PROBE, [below, above])
    assert results["below"].get("status") == 200, results["below"]
    assert results["above"].get("status") == 413, results["above"]


def standin_log(container: str, unit: str, marker: str = "", wait: float = 0.0) -> list[dict]:
    """The requests the engine stand-in received, from its one-JSON-line-per-request journal; with a
    marker, those whose path carries it, waiting up to `wait` s for one (the stand-in logs a request
    after replying, and journald may lag a little)."""
    deadline = time.monotonic() + wait
    while True:
        out = podman(container, "journalctl", "-u", unit, "-o", "cat", "--no-pager", "-n", "2000").stdout
        entries = [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"path"' in line]
        entries = [entry for entry in entries if marker in entry["path"]]
        if entries or time.monotonic() > deadline:
            return entries
        time.sleep(0.5)


def test_ollama_standin_refuses_a_non_local_host_like_ollama():
    curl = [
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-m",
        "3",
        "http://127.0.0.1:11434/api/tags",
    ]
    assert podman("lg-gpu2", *curl, "-H", "Host: gpu2.localguard.test").stdout == "403"
    assert podman("lg-gpu2", *curl, "-H", "Host: localhost:11434").stdout == "200"


def test_gw_engine_sees_a_loopback_host_the_peer_address_and_no_key(lab_hosts, gateway_url):
    """A client that named the gateway by DNS still reaches Ollama, whose Host check refuses any
    non-local name; the engine learns the caller from the gateway, not from headers it sent."""
    marker = secrets.token_hex(8)
    spoofed = {"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9", "Forwarded": "for=203.0.113.9"}
    request = {"id": "dns", "method": "GET", "url": gateway_url("gpu2") + f"/api/tags?probe={marker}",
               "headers": {**headers_for("valid"), "Host": "gpu2.localguard.test", **spoofed},
               "verify": str(CA_BUNDLE)}  # fmt: skip
    result = run_in_netns("lg-client", HTTP_PROBE, [request])["dns"]
    assert result.get("status") == 200, result
    [seen] = standin_log("lg-gpu2", "ollama.service", marker, wait=5)
    client = lab_hosts["client"]["ansible_host"]
    assert seen["host"] == "127.0.0.1:11434", seen
    assert (seen["x_forwarded_for"], seen["x_real_ip"]) == (client, client), seen
    assert seen["authorization"] is False, seen


def test_gw_unauthenticated_flood_is_rate_limited_by_address(gateway_url):
    """Requests without a key count against the address's budget like any other: a flood gets
    429s, after which even a valid key from that address is refused while another address,
    with the same key, is served."""
    url = gateway_url("gpu3") + "/v1/models"
    valid = lab_keys()["valid"]
    statuses = run_in_netns(
        "lg-client", BURST_PROBE, {"url": url, "keys": [None] * 100 + [valid], "ca": str(CA_BUNDLE)}
    )
    elsewhere = podman("lg-gpu3", "curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                       f"Authorization: Bearer {valid}", "https://127.0.0.1/v1/models").stdout  # fmt: skip
    time.sleep(3)
    assert statuses[0] == 401 and 429 in statuses[:100] and set(statuses[:100]) <= {401, 429}, statuses
    assert statuses[100] == 429, statuses
    assert elsewhere == "200"


def test_gw_bearer_scheme_is_case_insensitive(gateway_url):
    key = lab_keys()["valid"]
    requests = [{"id": scheme, "method": "GET", "url": gateway_url("gpu3") + "/v1/models", "pace": 0.1,
                 "headers": {"Authorization": f"{scheme} {key}"}, "verify": str(CA_BUNDLE)}
                for scheme in ("Bearer", "bearer", "BEARER")]  # fmt: skip
    results = run_in_netns("lg-client", HTTP_PROBE, requests)
    assert {scheme: r.get("status") for scheme, r in results.items()} == dict.fromkeys(results, 200)


@pytest.mark.parametrize(
    ("group", "version", "accepted"),
    [("X448", "-tls1_3", False), ("secp521r1", "-tls1_3", False), ("secp521r1", "-tls1_2", False),
     ("X25519", "-tls1_3", True), ("P-256", "-tls1_2", True), ("P-384", "-tls1_3", True)],
)  # fmt: skip
def test_gw_key_exchange_groups_are_mozilla_intermediate(lab_hosts, group, version, accepted):
    """A client offering only X448 or secp521r1 fails; X25519, P-256 and P-384 work. (OpenSSL's own
    defaults would accept all of them, so only the gateway's setting refuses the first two.)"""
    handshake = client_handshake(lab_hosts["gpu2"]["ansible_host"], "-groups", group, version)
    assert (handshake.returncode == 0) == accepted, handshake.stdout[-500:] + handshake.stderr[-500:]


def test_gw_nginx_offers_no_tls_below_1_2_anywhere():
    loaded = podman("lg-gpu2", "nginx", "-T").stdout
    protocols = re.findall(r"^\s*ssl_protocols\s+([^;]*);", loaded, flags=re.MULTILINE)
    assert protocols and all(p.split() == ["TLSv1.2", "TLSv1.3"] for p in protocols), protocols


def test_gw_never_forwards_a_dangerous_route_even_with_a_valid_key(gateway_url):
    """The hand-written list in tests/dangerous_routes.py, not the allowlist's own table."""
    gpus = {spec.kind: gpu for gpu, spec in LAB_ENGINES.items()}
    requests = []
    for kind, routes in NEVER_ALLOWED.items():
        for route in routes:
            method, target = route.split(" ", 1)
            body = None if method in {"GET", "HEAD"} else BODY
            url = gateway_url(gpus[kind]) + target
            requests.append(
                {
                    "id": f"{kind} {route}",
                    "method": method,
                    "url": url,
                    "json": body,
                    "pace": 0.06,
                    "headers": headers_for("valid"),
                    "verify": str(CA_BUNDLE),
                }
            )
    results = run_in_netns("lg-client", HTTP_PROBE, requests)
    assert {rid: r.get("status") for rid, r in results.items()} == dict.fromkeys(results, 403)
