"""GW-03, GW-04 and GW-07 on the gateway host: one key file per request, scopes, engines, rate tiers,
signed key lists applied live, and the fetch service that pulls them.

Requests go from the host itself to its gateway (real TLS, the CA's certificate). Cases that need
the scenario's static keys (molecule/gateway/molecule.yml) or its molecule-only list signer skip
elsewhere: the lab's keys and signer are its own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import shlex
import time

import pytest
from ansible_collections.localguard.hardening.plugins.module_utils.localguard_apikeys import (
    envelope_bytes,
    format_ts,
    sha256_hex,
    sign_payload,
    utcnow,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from playbook_runner import run_playbook

PKI = "/etc/localguard/pki"
STATE = "/var/lib/localguard/gateway-keys"
CLI = "/usr/local/sbin/localguard-keys"
PINNED = "/etc/localguard/gateway/keylist-signing.pub"
FUTURE, PAST = "2099-01-01T00:00:00Z", "2020-01-01T00:00:00Z"
# The public half is gateway_keylist_pubkey in molecule/gateway/molecule.yml.
SIGNER_SEED = b"localguard molecule-only key list signer"
# One body every route of the Ollama stand-in accepts.
BODY = {"model": "lab", "messages": [{"role": "user", "content": "hi"}], "prompt": "hi", "input": "hi",
        "stream": False}  # fmt: skip
SERVE_PORT = 9443

# A stand-in for the registry's key list endpoint: mTLS with a certificate from the CA, the list
# re-read on every request so a test can change it.
SERVE_LIST = r"""
import http.server, ssl, sys
PKI = "/etc/localguard/pki"
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = open(sys.argv[1], "rb").read()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(PKI + "/server.crt", PKI + "/server.key")
context.load_verify_locations(PKI + "/ca.crt")
context.verify_mode = ssl.CERT_REQUIRED
server = http.server.HTTPServer(("0.0.0.0", int(sys.argv[2])), Handler)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"""


@pytest.fixture(scope="module")
def gateway(hostvars):
    if "gpu_hosts" not in hostvars.get("group_names", []):
        pytest.skip("not a gateway host")
    return hostvars["inventory_hostname"]


def static_key(hostvars, **wanted) -> str:
    """The plaintext of the scenario's static key with these properties (defaults as the role's)."""
    keys = hostvars.get("gateway_api_keys")
    if not isinstance(keys, list):
        pytest.skip("gateway_api_keys are not literal here")
    for entry in keys:
        record = {"status": "active", "scopes": [], "engines": [], "rate": "", **entry}
        if all(record[name] == value for name, value in wanted.items()):
            return entry["key"]
    pytest.skip(f"no static key with {wanted}")


def call(host, name: str, path: str, key: str | None, method: str = "GET") -> str:
    """The gateway's status code for one request, over verified TLS."""
    args = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method, "--cacert", f"{PKI}/ca.crt",
            "--resolve", f"{name}:443:127.0.0.1"]  # fmt: skip
    if key is not None:
        args += ["-H", f"Authorization: Bearer {key}"]
    if method == "POST":
        args += ["-H", "Content-Type: application/json", "-d", json.dumps(BODY)]
    return host.check_output(shlex.join([*args, f"https://{name}{path}"]))


def fresh_key() -> str:
    return "lgk_" + secrets.token_urlsafe(32)


def record(key_id: str, **fields) -> dict:
    """A key record; in the fast tier unless told, so a check's own requests meet no limit."""
    return {"id": key_id, "not_after": FUTURE, "status": "active", "scopes": [], "engines": [],
            "rate": "fast", **fields}  # fmt: skip


def burst(host, name: str, key: str, count: int = 12) -> list[str]:
    """Status codes of `count` requests sent back to back with one key."""
    one = shlex.join(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} ", "--cacert", f"{PKI}/ca.crt",
                      "--resolve", f"{name}:443:127.0.0.1", "-H", f"Authorization: Bearer {key}",
                      f"https://{name}/v1/models"])  # fmt: skip
    return host.check_output(f"sh -c {shlex.quote(';'.join([one] * count))}").split()


def limited(codes: list[str]) -> bool:
    """A burst of 5 let through, then 429s."""
    return codes[:5] == ["200"] * 5 and "429" in codes


# --- static keys: scopes, engines, status -----------------------------------------------------------


def test_gw_03_static_key_is_accepted_and_an_unknown_one_is_not(host, hostvars, gateway):
    key = static_key(hostvars, id="molecule")
    assert call(host, gateway, "/v1/models", key) == "200"
    assert call(host, gateway, "/v1/models", key[:-4] + "0000") == "401"
    assert call(host, gateway, "/v1/models", None) == "401"


def test_gw_03_scoped_key_reaches_its_route_class_only(host, hostvars, gateway):
    embeddings = static_key(hostvars, scopes=["embeddings"])
    unscoped = static_key(hostvars, id="molecule")
    for path in ("/api/embed", "/v1/embeddings"):
        assert call(host, gateway, path, embeddings, "POST") == "200", path
    for path in ("/api/chat", "/v1/chat/completions", "/api/generate"):
        assert call(host, gateway, path, embeddings, "POST") == "403", path
        # The route itself works: the refusal is the key's scope.
        assert call(host, gateway, path, unscoped, "POST") == "200", path
    assert call(host, gateway, "/v1/models", embeddings) == "403"


def test_gw_03_engine_restricted_key_only_on_its_engines_gateways(host, hostvars, gateway):
    engine = hostvars["localguard_engine"]
    other = "vllm" if engine != "vllm" else "ollama"
    assert call(host, gateway, "/v1/models", static_key(hostvars, engines=[other])) == "403"
    assert call(host, gateway, "/v1/models", static_key(hostvars, engines=[engine])) == "200"


def test_gw_03_revoked_static_key_gets_401_and_never_reaches_by_hash(host, hostvars, gateway):
    key = static_key(hostvars, status="revoked")
    assert call(host, gateway, "/v1/models", key) == "401"
    assert not host.file(f"{STATE}/by-hash/{sha256_hex(key)}").exists


# --- the record decides: status and expiry are read from the key's file on every request -----------


@pytest.mark.parametrize(
    ("status", "not_after", "expected"),
    [
        ("active", FUTURE, "200"),
        ("retiring", FUTURE, "200"),
        ("revoked", FUTURE, "401"),
        ("active", PAST, "401"),
    ],
)
def test_gw_03_key_file_status_and_expiry_decide(host, gateway, status, not_after, expected):
    key = fresh_key()
    path = f"{STATE}/by-hash/{sha256_hex(key)}"
    content = json.dumps(record("verifier-direct", status=status, not_after=not_after))
    host.check_output(
        f"runuser -u lg-keys -- sh -c {shlex.quote(f'umask 027; printf %s {shlex.quote(content)} >{path}')}"
    )
    try:
        assert call(host, gateway, "/v1/models", key) == expected
    finally:
        host.run(f"rm -f {path}")


# --- rate tiers -----------------------------------------------------------------------------------------


def test_gw_04_each_key_is_limited_by_its_own_rate_tier_only(host, hostvars, gateway):
    """slow (1r/s) and the default per-key rate (1r/s) answer 429 to a burst; the fast tier
    (1000r/s) lets the same burst through, so a key is counted in its tier's zone and no other."""
    if hostvars.get("gateway_rate_tiers") != {"slow": "1r/s", "fast": "1000r/s"}:
        pytest.skip("needs the gateway scenario's tiers (molecule/gateway/molecule.yml)")
    assert hostvars.get("gateway_rate_per_key") == "1r/s"
    codes = {
        rate: burst(host, gateway, static_key(hostvars, rate=rate, status="active", scopes=[], engines=[]))
        for rate in ("slow", "", "fast")
    }
    assert limited(codes["slow"]) and limited(codes[""]), codes
    assert codes["fast"] == ["200"] * 12, codes


# --- signed key lists, applied live ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def signer(host, gateway) -> Ed25519PrivateKey:
    """The molecule-only list signer, made here from its seed; its public key must be the pinned one."""
    private = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(SIGNER_SEED).digest())
    public = private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    pinned = host.file(PINNED)
    if not pinned.exists or pinned.content_string.strip() != public.strip():
        pytest.skip("the pinned key list key is not this verifier's molecule-only signer")
    assert (pinned.user, pinned.group, pinned.mode) == ("root", "lg-keys", 0o644)
    return private


def signed_list(private: Ed25519PrivateKey, serial: int, keys: dict[str, dict]) -> bytes:
    payload = {"format": 1, "serial": serial, "issued": format_ts(utcnow()),
               "keys": {sha256_hex(key): entry for key, entry in keys.items()}}  # fmt: skip
    return envelope_bytes(sign_payload(payload, private))


def put(host, path: str, data: bytes) -> None:
    host.check_output(f"printf %s {base64.b64encode(data).decode()} | base64 -d >{path} && chmod 0644 {path}")


def apply(host, data: bytes):
    put(host, "/tmp/lg-verifier-list.json", data)
    return host.run(f"runuser -u lg-keys -- {CLI} apply --list /tmp/lg-verifier-list.json")


def current_serial(host) -> int:
    return json.loads(host.check_output(f"{CLI} status"))["serial"] or 0


def nginx_pids(host) -> tuple[str, list[str]]:
    master = host.file("/run/nginx.pid").content_string.strip()
    return master, sorted(host.check_output(f"pgrep -P {master}").split())


def test_gw_03_signed_list_adds_and_removes_a_key_without_reloading_nginx(host, gateway, signer):
    key = fresh_key()
    before = nginx_pids(host)
    assert call(host, gateway, "/v1/models", key) == "401"
    serial = current_serial(host) + 1
    added = apply(host, signed_list(signer, serial, {key: record("verifier-live.1")}))
    assert added.rc == 0, added.stderr
    assert json.loads(added.stdout)["serial"] == serial and json.loads(added.stdout)["changed"]
    assert call(host, gateway, "/v1/models", key) == "200"

    removed = apply(host, signed_list(signer, serial + 1, {}))
    assert removed.rc == 0, removed.stderr
    # nginx reads by-hash/ on each request: the very next request after apply is refused.
    assert call(host, gateway, "/v1/models", key) == "401"
    # Same master and the same workers: nothing was reloaded or restarted.
    assert nginx_pids(host) == before


def test_gw_03_list_from_another_signer_or_older_serial_is_refused(host, gateway, signer):
    key = fresh_key()
    serial = current_serial(host) + 1
    assert apply(host, signed_list(signer, serial, {key: record("verifier-kept.1")})).rc == 0
    try:
        forged = apply(host, signed_list(Ed25519PrivateKey.generate(), serial + 5, {}))
        assert forged.rc == 2 and "not the pinned key" in forged.stderr, forged.stderr
        older = apply(host, signed_list(signer, serial - 1, {}))
        assert older.rc == 2 and "older serial" in older.stderr, older.stderr
        # A payload changed after signing: the signature no longer holds.
        envelope = json.loads(signed_list(signer, serial + 6, {key: record("verifier-kept.1")}))
        envelope["payload"] = base64.b64encode(
            base64.b64decode(envelope["payload"]).replace(b"verifier-kept.1", b"verifier-evil.1")
        ).decode()
        tampered = apply(host, json.dumps(envelope).encode())
        assert tampered.rc == 2 and "bad key list signature" in tampered.stderr, tampered.stderr
        # The verified list stays in force.
        assert current_serial(host) == serial
        assert call(host, gateway, "/v1/models", key) == "200"
    finally:
        apply(host, signed_list(signer, serial + 1, {}))


def test_gw_03_registry_key_scopes_engines_and_unknown_tier(host, gateway, signer):
    scoped, elsewhere, unknown_tier = fresh_key(), fresh_key(), fresh_key()
    serial = current_serial(host) + 1
    listed = {
        scoped: record("verifier-scoped.1", scopes=["embeddings"]),
        elsewhere: record("verifier-tgi.1", engines=["tgi", "vllm"]),
        unknown_tier: record("verifier-gold.1", rate="gold"),
    }
    assert apply(host, signed_list(signer, serial, listed)).rc == 0
    try:
        assert call(host, gateway, "/api/embed", scoped, "POST") == "200"
        assert call(host, gateway, "/api/chat", scoped, "POST") == "403"
        assert call(host, gateway, "/v1/models", elsewhere) == "403"
        # A tier this gateway does not know: the default per-key zone (1r/s) limits the key, never
        # none, and the log says so.
        assert limited(burst(host, gateway, unknown_tier))
        log = host.check_output("tail -n 100 /var/log/nginx/error.log")
        assert 'API key verifier-gold.1 has rate tier "gold", unknown to this gateway' in log
    finally:
        apply(host, signed_list(signer, serial + 1, {}))


# --- GW-07: the fetch service -------------------------------------------------------------------------


@pytest.fixture
def keylist_endpoint(host, hostvars, gateway, signer):
    """A list endpoint at the URL the fetch service was given (this host, SERVE_PORT)."""
    if hostvars.get("gateway_keylist_url") != f"https://{gateway}:{SERVE_PORT}/keylist.json":
        pytest.skip("the fetch service does not pull from this verifier's endpoint")
    put(host, "/tmp/lg-verifier-serve.py", SERVE_LIST.encode())
    served = "/tmp/lg-verifier-served.json"
    put(host, served, signed_list(signer, current_serial(host), {}))
    pid = host.check_output(
        f"nohup python3 /tmp/lg-verifier-serve.py {served} {SERVE_PORT} >/dev/null 2>&1 & echo $!"
    )
    try:
        yield served
    finally:
        host.run(f"kill {pid}")


def test_gw_07_fetch_service_pulls_the_signed_list_and_keeps_it_when_the_registry_is_gone(
    host, gateway, signer, keylist_endpoint
):
    key = fresh_key()
    serial = current_serial(host) + 1
    put(host, keylist_endpoint, signed_list(signer, serial, {key: record("verifier-pulled.1")}))
    # Polled every gateway_keylist_poll_seconds (2): well inside 10 s.
    deadline = time.monotonic() + 10
    while (code := call(host, gateway, "/v1/models", key)) != "200" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert code == "200"
    assert current_serial(host) == serial

    # A list from another signer served by the endpoint is refused; the verified one stays.
    since = host.check_output("date +'%Y-%m-%d %H:%M:%S'")
    put(host, keylist_endpoint, signed_list(Ed25519PrivateKey.generate(), serial + 1, {}))
    deadline = time.monotonic() + 10
    journal = ""
    while "keeping verified key list" not in journal and time.monotonic() < deadline:
        time.sleep(0.5)
        journal = host.check_output(
            f"journalctl -u localguard-keys-fetch.service --since '{since}' --no-pager"
        )
    assert f"keeping verified key list serial {serial}" in journal, journal
    assert call(host, gateway, "/v1/models", key) == "200"
    # Leave no pulled key behind for the other checks.
    assert apply(host, signed_list(signer, serial + 2, {})).rc == 0


def test_gw_07_fetch_service_runs_sandboxed_as_lg_keys(host, gateway):
    unit = "/etc/systemd/system/localguard-keys-fetch.service"
    if not host.file(unit).exists:
        pytest.skip("no key list to pull on this gateway")
    check = host.run(f"systemd-analyze verify {unit}")
    assert check.rc == 0 and not check.stderr.strip(), check.stderr
    service = host.service("localguard-keys-fetch.service")
    assert service.is_enabled and service.is_running
    pid = host.check_output("systemctl show -p MainPID --value localguard-keys-fetch.service")
    status = dict(line.split(":", 1) for line in host.file(f"/proc/{pid}/status").content_string.splitlines())
    uid = host.check_output("id -u lg-keys")
    assert status["Uid"].split()[0] == uid
    assert status["NoNewPrivs"].strip() == "1"
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
    assert status["Seccomp"].strip() == "2"
    # Mount namespaces need privileges a container's systemd lacks (it then runs the service
    # without them): what the unit asks for is read from systemd, the rest from the process above.
    show = dict(
        line.split("=", 1)
        for line in host.check_output(
            "systemctl show -p ProtectSystem,ReadWritePaths,PrivateTmp,ProtectHome,RestrictAddressFamilies,"
            "MemoryDenyWriteExecute localguard-keys-fetch.service"
        ).splitlines()
    )
    assert show["ProtectSystem"] == "strict" and show["ReadWritePaths"] == STATE
    assert show["PrivateTmp"] == "yes" and show["ProtectHome"] == "yes"
    assert show["MemoryDenyWriteExecute"] == "yes"
    assert set(show["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    # The host key reaches the service as a credential (an ACL on its copy names lg-keys), while
    # lg-keys itself cannot open the file.
    credential = "/run/credentials/localguard-keys-fetch.service/client.key"
    assert host.check_output(f"sha256sum <{credential}") == host.check_output(f"sha256sum <{PKI}/server.key")
    assert host.run(f"runuser -u lg-keys -- cat {PKI}/server.key").rc != 0
    assert host.run(f"runuser -u lg-keys -- cat {credential}").rc == 0


def test_gw_07_without_a_pinned_key_only_static_keys_count_and_nothing_is_pulled(
    host, hostvars, gateway, signer, target
):
    """gateway_keylist_pubkey empty (the default): the pull path is off, the registry's list goes
    with its key, the static keys stay; set again, the service is back."""
    key = fresh_key()
    static = static_key(hostvars, id="molecule")
    serial = current_serial(host) + 1
    assert apply(host, signed_list(signer, serial, {key: record("verifier-listed.1")})).rc == 0
    assert call(host, gateway, "/v1/models", key) == "200"
    playbook, inventory = target
    off = json.dumps({"gateway_keylist_pubkey": "", "gateway_keylist_url": ""})
    run = run_playbook(playbook, inventory, "--tags", "gateway", "-e", off, limit=gateway)
    try:
        assert run.rc == 0, run.failure_messages() or run.stderr[-2000:]
        assert call(host, gateway, "/v1/models", key) == "401"
        assert call(host, gateway, "/v1/models", static) == "200"
        assert not host.file(PINNED).exists
        assert not host.file(f"{STATE}/current.json").exists
        assert not host.file("/etc/systemd/system/localguard-keys-fetch.service").exists
        assert not host.service("localguard-keys-fetch.service").is_running
    finally:
        back = run_playbook(playbook, inventory, "--tags", "gateway", limit=gateway)
    assert back.rc == 0, back.failure_messages() or back.stderr[-2000:]
    assert host.service("localguard-keys-fetch.service").is_running
    assert call(host, gateway, "/v1/models", static) == "200"
