"""The engine stand-in refuses what the real engines refuse (Ollama's Host check) and logs what the
gateway is answerable for. Expectations come from Ollama's source (server/routes.go,
allowedHostsMiddleware), not from the stand-in's own tables."""

from __future__ import annotations

import contextlib
import http.client
import io
import ipaddress
import json
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest
from standins import engine_standin
from standins.engine_standin import listen_address, make_handler, ollama_host_check, split_host_port


@contextlib.contextmanager
def standin(api: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, io.StringIO]]:
    """The stand-in on 127.0.0.1 and an ephemeral port, its stdout (the journal) captured."""
    log = io.StringIO()
    monkeypatch.setattr("sys.stdout", log)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(api))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], log
    finally:
        server.shutdown()
        server.server_close()


def request(port: int, host: str | None, path: str = "/api/tags", method: str = "GET", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.putrequest(method, path, skip_host=True)
    if host is not None:
        conn.putheader("Host", host)
    for name, value in (headers or {}).items():
        conn.putheader(name, value)
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response, body


def log_lines(log: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in log.getvalue().splitlines()]


def test_ollama_refuses_a_dns_name_with_403_and_no_body(monkeypatch):
    with standin("ollama", monkeypatch) as (port, _):
        response, body = request(port, "evil.example")
        assert response.status == 403
        assert body == b"" and response.getheader("Content-Length") == "0"
        assert response.getheader("Content-Type") is None
        # The gateway's usual mistake: forwarding the client's name, port included.
        assert request(port, f"gpu2.example.com:{port}")[0].status == 403
        assert request(port, "[::1]")[0].status == 403  # brackets without a port: not an address to Go


@pytest.mark.parametrize(
    "host",
    ["localhost:{port}", "LOCALHOST", "127.0.0.1", "127.0.0.1:{port}", "[::1]:{port}", "foo.internal",
     "model.local:443", "a.localhost", "10.1.2.3", "192.168.0.9:8080", "[fd00::1]:1", "0.0.0.0", ""],
)  # fmt: skip
def test_ollama_lets_local_hosts_through(monkeypatch, host):
    with standin("ollama", monkeypatch) as (port, _):
        response, body = request(port, host.format(port=port))
        assert response.status == 200, host
        assert json.loads(body)["models"]


def test_ollama_accepts_its_own_hostname(monkeypatch):
    monkeypatch.setattr(engine_standin.socket, "gethostname", lambda: "GPU2")
    with standin("ollama", monkeypatch) as (port, _):
        assert request(port, f"gpu2:{port}")[0].status == 200
        assert request(port, "gpu2.lab")[0].status == 403


def test_ollama_answers_allowed_preflight_with_204(monkeypatch):
    with standin("ollama", monkeypatch) as (port, _):
        assert request(port, "localhost", method="OPTIONS")[0].status == 204
        assert request(port, "evil.example", method="OPTIONS")[0].status == 403


def test_vllm_has_no_host_check(monkeypatch):
    with standin("vllm", monkeypatch) as (port, _):
        assert request(port, "evil.example", "/v1/models")[0].status == 200


def test_log_line_records_the_gateways_headers_never_the_key(monkeypatch):
    secret = "sk-this-must-never-be-logged-0123456789"
    with standin("ollama", monkeypatch) as (port, log):
        request(port, "localhost", headers={"X-Forwarded-For": "198.18.10.50", "X-Real-IP": "198.18.10.50"})
        request(port, "evil.example", headers={"Authorization": f"Bearer {secret}"})
    allowed, refused = log_lines(log)
    assert allowed == {
        "method": "GET", "path": "/api/tags", "status": 200, "host": "localhost",
        "x_forwarded_for": "198.18.10.50", "x_real_ip": "198.18.10.50", "authorization": False,
    }  # fmt: skip
    assert refused["status"] == 403 and refused["host"] == "evil.example" and refused["authorization"] is True
    assert secret not in log.getvalue()


def test_host_check_applies_only_when_bound_to_loopback():
    assert ollama_host_check("127.0.0.1", "evil.example", "GET", "h", set()) == 403
    assert ollama_host_check("0.0.0.0", "evil.example", "GET", "h", set()) is None
    assert ollama_host_check("198.18.10.12", "evil.example", "GET", "h", set()) is None


def test_host_check_uses_go_semantics_for_ip_classes():
    check = lambda host, local=(): ollama_host_check("127.0.0.1", host, "GET", "h", set(local))  # noqa: E731
    # Go's IsPrivate is RFC 1918 + fc00::/7: Python's is_private (198.18/15, 169.254/16...) is wider.
    assert check("198.18.10.12") == 403
    assert check("169.254.169.254") == 403
    assert check("172.31.255.255") is None and check("172.32.0.1") == 403
    assert check("::ffff:10.0.0.1") is None  # 4-in-6 is unmapped, as Go does
    # An address on one of the machine's own interfaces passes (isLocalIP).
    assert check("198.18.10.12:8443", [ipaddress.ip_address("198.18.10.12")]) is None


def test_split_host_port_matches_go():
    assert split_host_port("a:1") == ("a", "1")
    assert split_host_port("[::1]:80") == ("::1", "80")
    assert split_host_port("a:") == ("a", "")
    for bad in ("a", "::1", "[::1]", "[::1]x:1", "a]:1"):
        with pytest.raises(ValueError):
            split_host_port(bad)


def test_ollama_host_is_read_like_envconfig():
    read = lambda value: listen_address("ollama", None, None, {"OLLAMA_HOST": value})  # noqa: E731
    assert read("") == ("127.0.0.1", 11434)
    assert read("127.0.0.1:11500") == ("127.0.0.1", 11500)
    assert read("0.0.0.0") == ("0.0.0.0", 11434)
    assert read("'http://10.0.0.5'") == ("10.0.0.5", 80)
    assert read(":9000") == ("", 9000)
    assert listen_address("ollama", "127.0.0.1", 1, {"OLLAMA_HOST": "0.0.0.0:2"}) == ("127.0.0.1", 1)


def test_standin_starts_under_the_vllm_command_line_the_role_writes(monkeypatch):
    """The engine role appends vLLM's media flags; the stand-in must start with them, as vLLM does."""
    started = {}

    class Server:
        def __init__(self, address, handler):
            started["address"] = address

        def serve_forever(self):
            raise KeyboardInterrupt

    monkeypatch.setattr(engine_standin, "ThreadingHTTPServer", Server)
    monkeypatch.setattr("sys.stdout", io.StringIO())
    media = ["--allowed-media-domains", "media.invalid"]
    argv = ["--api", "vllm", *media, "--host", "127.0.0.1", "--port", "8000"]
    assert engine_standin.main(argv) == 0
    assert started["address"] == ("127.0.0.1", 8000)
