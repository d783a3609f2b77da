"""GW-08 on the gateway host: what the JSON access log records of a request, and the request id that
ties the gateway's log line, the engine's log line and the caller's reply together.

Requests go from the host itself to its gateway (real TLS, the CA's certificate). The field list
below is the contract the log collector's alerts and fail2ban's filter read, written out here.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import time
from datetime import datetime

import pytest

PKI = "/etc/localguard/pki"
LOG = "/var/log/nginx/localguard-gateway.json"
FIELDS = ["time", "request_id", "remote", "key_id", "method", "path", "route", "denied", "status", "bytes",
          "request_bytes", "request_time", "upstream_time", "tls", "client_cert", "user_agent"]  # fmt: skip
BODY = {"model": "lab", "messages": [{"role": "user", "content": "hi"}], "prompt": "hi", "stream": False}
# Each engine's unit, for the stand-in's log of what it received.
ENGINE_UNITS = {"ollama": "ollama.service", "vllm": "vllm.service", "llama_cpp": "llama-server.service",
                "tgi": "tgi.service"}  # fmt: skip
# Per engine: (method, path, `route`, `denied`), written out from the engines' sources, not read
# from localguard_engines.py. Near misses of admin routes show that only those are flagged.
CASES = {
    "ollama": [
        ("GET", "/api/tags", "models", ""), ("POST", "/api/chat", "chat", ""),
        ("POST", "/api/pull", "", "admin"), ("DELETE", "/api/delete", "", "admin"),
        ("POST", "/api/blobs/sha256:" + "ab" * 32, "", "admin"), ("POST", "/api/pullx", "", ""),
    ],
    "llama_cpp": [
        ("GET", "/v1/models", "models", ""), ("POST", "/slots/3", "", "admin"),
        ("GET", "/lora-adapters", "", "admin"), ("GET", "/props", "", "admin"), ("GET", "/slotsx", "", ""),
    ],
    "vllm": [
        ("GET", "/v1/models", "models", ""), ("POST", "/tokenize", "tokenize", ""),
        ("POST", "/v1/load_lora_adapter", "", "admin"), ("POST", "/collective_rpc", "", "admin"),
        ("POST", "/v1/load_lora_adapters", "", ""),
    ],
    "tgi": [
        ("GET", "/v1/models", "models", ""), ("POST", "/invocations", "", "admin"),
        ("GET", "/metricsx", "", ""),
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def gateway(hostvars):
    if "gpu_hosts" not in hostvars.get("group_names", []):
        pytest.skip("not a gateway host")
    return hostvars["inventory_hostname"]


def static_key(hostvars, key_id: str) -> str:
    for entry in hostvars.get("gateway_api_keys") or []:
        if isinstance(entry, dict) and entry.get("id") == key_id:
            return entry["key"]
    pytest.skip(f"no literal static key {key_id} here (the lab's keys are its own)")


def send(host, name: str, path: str, key: str | None = None, method: str = "GET", headers=None) -> dict:
    """One request over verified TLS: its status and response headers (lowercase names)."""
    args = ["curl", "-s", "-o", "/dev/null", "-D", "-", "-X", method, "--cacert", f"{PKI}/ca.crt",
            "--resolve", f"{name}:443:127.0.0.1"]  # fmt: skip
    if key is not None:
        args += ["-H", f"Authorization: Bearer {key}"]
    for header, value in (headers or {}).items():
        args += ["-H", f"{header}: {value}"]
    if method in ("POST", "DELETE"):
        args += ["-H", "Content-Type: application/json", "-d", json.dumps(BODY)]
    raw = host.check_output(shlex.join([*args, f"https://{name}{path}"]))
    lines = raw.replace("\r", "").splitlines()
    status = int(lines[0].split()[1])
    found = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return {"status": status, "headers": {k.lower(): v for k, v in found.items()}}


def log_line(host, request_id: str) -> tuple[str, dict]:
    """The gateway's log line for a request id, as written and parsed (nginx writes it just after
    the reply, so wait a moment)."""
    needle = shlex.quote('"request_id":"' + request_id + '"')
    deadline = time.monotonic() + 3
    while True:
        found = host.run(f"grep -F {needle} {LOG}").stdout.strip()
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert found.count("\n") == 0 and found, f"expected one log line for {request_id}, got {found!r}"
    return found, json.loads(found)


def test_gw_08_log_line_has_the_fields_in_order_and_never_the_key_or_query_string(host, hostvars, gateway):
    key = static_key(hostvars, "molecule")
    in_query = secrets.token_hex(12)
    agent = f"lg-verifier/{secrets.token_hex(4)}"
    reply = send(host, gateway, f"/v1/models?api_key={in_query}", key, headers={"User-Agent": agent})
    assert reply["status"] == 200
    raw, line = log_line(host, reply["headers"]["x-request-id"])
    assert list(line) == FIELDS
    assert key not in raw and in_query not in raw and "?" not in raw
    assert line["path"] == "/v1/models" and line["method"] == "GET" and line["status"] == 200
    assert line["key_id"] == "molecule" and line["remote"] == "127.0.0.1" and line["user_agent"] == agent
    assert line["route"] == "models" and line["denied"] == ""
    assert isinstance(line["request_bytes"], int) and line["request_bytes"] > len(key)
    assert line["tls"] == "TLSv1.3" and line["upstream_time"] != ""
    # ISO 8601 with the offset (fail2ban's datepattern and the alerts read it), close to now.
    assert abs(datetime.fromisoformat(line["time"]).timestamp() - time.time()) < 60


def test_gw_08_wrong_key_is_logged_without_the_key_and_without_a_key_id(host, gateway):
    wrong = "lgk_" + secrets.token_urlsafe(32)
    reply = send(host, gateway, "/v1/models", wrong)
    assert reply["status"] == 401
    raw, line = log_line(host, reply["headers"]["x-request-id"])
    assert wrong not in raw and line["key_id"] == "" and line["status"] == 401
    # No engine was asked.
    assert line["upstream_time"] == ""


def test_gw_08_request_id_reaches_the_engine_and_the_caller_and_is_never_the_callers(host, hostvars, gateway):
    key = static_key(hostvars, "molecule")
    unit = ENGINE_UNITS[hostvars["localguard_engine"]]
    if "engine_standin.py" not in host.check_output(f"systemctl show -p ExecStart --value {unit}"):
        pytest.skip("the engine is not the stand-in, which logs the X-Request-ID it receives")
    forged = "forged-" + secrets.token_hex(8)
    since = host.check_output("date +'%Y-%m-%d %H:%M:%S'")
    reply = send(host, gateway, "/api/tags", key, headers={"X-Request-ID": forged})
    assert reply["status"] == 200
    request_id = reply["headers"]["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id), request_id
    assert log_line(host, request_id)[1]["request_id"] == request_id
    deadline, received = time.monotonic() + 3, []
    while not received and time.monotonic() < deadline:
        journal = host.check_output(f"journalctl -u {unit} --since '{since}' -o cat --no-pager")
        received = [json.loads(x) for x in journal.splitlines() if x.startswith("{") and request_id in x]
        time.sleep(0.1)
    assert [entry["request_id"] for entry in received] == [request_id]
    assert received[0]["path"] == "/api/tags"
    assert forged not in journal


def test_gw_08_refusals_carry_a_request_id_too(host, gateway):
    """401 and 403 come from the gateway itself: the id still reaches the caller and the log."""
    unauthorized = send(host, gateway, "/v1/models")
    assert unauthorized["status"] == 401
    assert log_line(host, unauthorized["headers"]["x-request-id"])[1]["status"] == 401


def test_gw_08_route_class_and_admin_routes_are_named_in_the_log(host, hostvars, gateway):
    """`route` is the allowed route's class, `denied` flags the engine's admin routes only (a near
    miss is not flagged). Without a key, so the lab's gateways are checked too: the log says what
    was asked, whatever the answer."""
    for method, path, route, denied in CASES[hostvars["localguard_engine"]]:
        reply = send(host, gateway, path, method=method)
        assert reply["status"] == 401, (method, path)
        line = log_line(host, reply["headers"]["x-request-id"])[1]
        assert (line["method"], line["path"], line["route"], line["denied"]) == (method, path, route, denied)


def test_gw_08_log_is_root_adm_only_and_rotated_with_nginx_writing_the_new_file(host, hostvars, gateway):
    """The log records key ids and client addresses: nginx's account and adm only (nginx hands a
    reopened log to its workers' account). A rotation (forced here) leaves nginx writing a new
    file, with the same owner and mode."""
    log = host.file(LOG)
    assert (log.user, log.group, log.mode) == ("www-data", "adm", 0o640)
    host.run_expect([0], "logrotate -f /etc/logrotate.d/localguard-gateway")
    rotated = host.file(LOG + ".1")
    assert rotated.exists, "nothing rotated"
    reply = send(host, gateway, "/v1/models", static_key(hostvars, "molecule"))
    log_line(host, reply["headers"]["x-request-id"])
    assert reply["headers"]["x-request-id"] not in rotated.content_string, (
        "nginx still writes the rotated file"
    )
    log = host.file(LOG)
    assert (log.user, log.group, log.mode) == ("www-data", "adm", 0o640)
