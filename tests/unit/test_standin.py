"""The engine stand-in refuses what the real engines refuse (Ollama's Host check, unknown models,
wrong methods, bad bodies), streams as they stream, speaks HTTP/1.1 with keep-alive, and logs what
the gateway is answerable for. Expectations come from the engines' sources (Ollama's server/routes.go,
middleware/openai.go, api/types.go; vLLM's OpenAI server), written out here, not read from the
stand-in's own tables."""

from __future__ import annotations

import contextlib
import http.client
import io
import ipaddress
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from standins import engine_standin
from standins.engine_standin import (
    Config,
    Server,
    listen_address,
    make_handler,
    ollama_host_check,
    split_host_port,
)


@contextlib.contextmanager
def standin(
    api: str, monkeypatch: pytest.MonkeyPatch, **settings: object
) -> Iterator[tuple[int, io.StringIO]]:
    """The stand-in on 127.0.0.1 and an ephemeral port, its stdout (the journal) captured."""
    log = io.StringIO()
    monkeypatch.setattr("sys.stdout", log)
    server = Server(("127.0.0.1", 0), make_handler(api, Config(api, **settings)))
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


def log_lines(log: io.StringIO, at_least: int = 0) -> list[dict]:
    """The request log; a reply reaches the client before its handler writes the log line, so wait
    (up to 2 s) for the lines a test knows are coming."""
    deadline = time.monotonic() + 2
    while len(log.getvalue().splitlines()) < at_least and time.monotonic() < deadline:
        time.sleep(0.01)
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
    gateway = {"X-Forwarded-For": "198.18.10.50", "X-Real-IP": "198.18.10.50",
               "X-Request-ID": "0123456789abcdef0123456789abcdef"}  # fmt: skip
    with standin("ollama", monkeypatch) as (port, log):
        request(port, "localhost", headers=gateway)
        request(port, "evil.example", headers={"Authorization": f"Bearer {secret}"})
    allowed, refused = log_lines(log)
    assert allowed == {
        "method": "GET", "path": "/api/tags", "status": 200, "request_id": "0123456789abcdef0123456789abcdef",
        "host": "localhost",
        "x_forwarded_for": "198.18.10.50", "x_real_ip": "198.18.10.50", "authorization": False,
        "connection_request": 1,
    }  # fmt: skip
    assert refused["status"] == 403 and refused["host"] == "evil.example" and refused["authorization"] is True
    # No id sent (a request that did not come through the gateway): null, not made up.
    assert refused["request_id"] is None
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

    class FakeServer:
        def __init__(self, address, handler):
            started["address"] = address

        def serve_forever(self):
            raise KeyboardInterrupt

    monkeypatch.setattr(engine_standin, "Server", FakeServer)
    monkeypatch.setattr("sys.stdout", io.StringIO())
    media = ["--allowed-media-domains", "media.invalid"]
    argv = ["--api", "vllm", *media, "--host", "127.0.0.1", "--port", "8000"]
    assert engine_standin.main(argv) == 0
    assert started["address"] == ("127.0.0.1", 8000)


# --- Streaming, HTTP/1.1 and statuses as the engines have them ----------------------------------

FAST = {"interval": 0.05}  # 5 tokens 50 ms apart: a stream takes a quarter of a second
CHAT = {"model": "lab", "messages": [{"role": "user", "content": "Say hi."}]}


def exchange(port: int, method: str, path: str, body: object = None, headers=None, version="HTTP/1.1"):
    """One request on a raw socket; the response's head and its body pieces with arrival times.

    Read by hand, not by http.client, so the test sees the transfer encoding itself and when each
    chunk arrived."""
    data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    head = [f"{method} {path} {version}", "Host: localhost", f"Content-Length: {len(data)}"]
    head += [f"{name}: {value}" for name, value in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        reader = sock.makefile("rb")
        status = int(reader.readline().split()[1])
        fields: dict[str, str] = {}
        while (line := reader.readline().decode().strip()) != "":
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        pieces: list[tuple[float, bytes]] = []
        if fields.get("transfer-encoding") == "chunked":
            while (size := int(reader.readline().strip(), 16)) > 0:
                pieces.append((time.monotonic(), reader.read(size)))
                assert reader.readline() == b"\r\n"
            assert reader.readline() == b"\r\n"  # end of the chunked body: no trailers
        elif method == "HEAD":
            pieces.append((time.monotonic(), b""))
        elif "content-length" in fields:
            pieces.append((time.monotonic(), reader.read(int(fields["content-length"]))))
        else:
            pieces.append((time.monotonic(), reader.read()))
    return status, fields, pieces


def ndjson_lines(pieces) -> list[dict]:
    return [json.loads(line) for _, piece in pieces for line in piece.decode().splitlines() if line]


def sse_events(pieces) -> list[str]:
    text = b"".join(piece for _, piece in pieces).decode()
    assert text.endswith("\n\n"), text
    events = text.split("\n\n")[:-1]
    assert all(event.startswith("data: ") for event in events), events
    return [event.removeprefix("data: ") for event in events]


@pytest.mark.parametrize(
    ("path", "body", "part"),
    [("/api/chat", CHAT, "message"), ("/api/generate", {"model": "lab", "prompt": "Say hi."}, "response")],
)
def test_ollama_streams_ndjson_by_default_in_chunks_over_time(monkeypatch, path, body, part):
    """api/types.go: `stream` is true unless the request says false; streamResponse writes one JSON
    object per line and flushes each, so Go sends them as HTTP chunks as they are produced."""
    with standin("ollama", monkeypatch, **FAST) as (port, log):
        status, fields, pieces = exchange(port, "POST", path, body)
    assert status == 200 and fields["content-type"] == "application/x-ndjson"
    assert fields["transfer-encoding"] == "chunked" and "content-length" not in fields
    lines = ndjson_lines(pieces)
    assert len(pieces) == len(lines) >= 6, lines  # one line per chunk: nothing held back
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    assert lines[-1]["done_reason"] == "stop" and lines[-1]["eval_count"] == len(lines) - 1
    assert all(part in line for line in lines)
    spread = pieces[-1][0] - pieces[0][0]
    assert spread >= 0.8 * 0.05 * (len(pieces) - 1), spread  # paced, not sent in one burst
    assert log_lines(log)[-1]["chunks"] == len(pieces)


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
def test_ollama_answers_whole_when_stream_is_false(monkeypatch, path):
    body = {**CHAT, "prompt": "Say hi.", "stream": False}
    with standin("ollama", monkeypatch, **FAST) as (port, _):
        status, fields, pieces = exchange(port, "POST", path, body)
    assert status == 200 and "transfer-encoding" not in fields
    reply = json.loads(pieces[0][1])
    assert int(fields["content-length"]) == len(pieces[0][1]) and reply["done"] is True
    assert (reply.get("response") or reply["message"]["content"]).startswith("stand-in reply to:")


@pytest.mark.parametrize(
    ("api", "path", "body", "kind"),
    [
        ("vllm", "/v1/chat/completions", CHAT, "chat.completion.chunk"),
        ("vllm", "/v1/completions", {"model": "lab", "prompt": "Say hi."}, "text_completion"),
        ("ollama", "/v1/chat/completions", CHAT, "chat.completion.chunk"),
        ("ollama", "/v1/completions", {"model": "lab", "prompt": "Say hi."}, "text_completion"),
    ],
)
def test_openai_routes_stream_sse_on_request(monkeypatch, api, path, body, kind):
    """`stream: true` gives `data: {...}` events, one per chunk, over time, then `data: [DONE]`."""
    with standin(api, monkeypatch, **FAST) as (port, _):
        status, fields, pieces = exchange(port, "POST", path, {**body, "stream": True})
    assert status == 200 and fields["content-type"].startswith("text/event-stream")
    assert fields["transfer-encoding"] == "chunked" and "content-length" not in fields
    events = sse_events(pieces)
    assert events[-1] == "[DONE]" and len(events) >= 6, events
    chunks = [json.loads(event) for event in events[:-1]]
    assert {chunk["object"] for chunk in chunks} == {kind}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(choice["finish_reason"] is None for chunk in chunks[:-1] for choice in chunk["choices"])
    assert pieces[-1][0] - pieces[0][0] >= 0.8 * 0.05 * 4


@pytest.mark.parametrize("api", ["vllm", "ollama"])
def test_openai_routes_answer_whole_by_default(monkeypatch, api):
    """OpenAI's `stream` defaults to false, in vLLM and in Ollama's /v1 alike."""
    with standin(api, monkeypatch, **FAST) as (port, _):
        status, fields, pieces = exchange(port, "POST", "/v1/chat/completions", CHAT)
    assert status == 200 and fields["content-type"].startswith("application/json")
    reply = json.loads(pieces[0][1])
    assert reply["object"] == "chat.completion" and reply["choices"][0]["message"]["content"]


def test_stream_length_and_pace_follow_the_request(monkeypatch):
    """max_tokens / options.num_predict bound the tokens (finish_reason "length"); standin_interval,
    a field real engines ignore, slows a stream down for tests about long generations."""
    with standin("vllm", monkeypatch, interval=0.0) as (port, _):
        body = {**CHAT, "stream": True, "max_tokens": 3, "standin_interval": 0.1}
        _, _, pieces = exchange(port, "POST", "/v1/chat/completions", body)
    chunks = [json.loads(event) for event in sse_events(pieces)[:-1]]
    contents = [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]]
    assert len(contents) == 3 and chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert pieces[-1][0] - pieces[0][0] >= 0.8 * 0.1 * (len(pieces) - 1)
    with standin("ollama", monkeypatch, interval=0.0) as (port, _):
        body = {**CHAT, "options": {"num_predict": 2}}
        lines = ndjson_lines(exchange(port, "POST", "/api/chat", body)[2])
    assert len(lines) == 3 and lines[-1]["done_reason"] == "length"


@pytest.mark.parametrize("api", ["ollama", "vllm"])
def test_keep_alive_carries_requests_and_streams_on_one_connection(monkeypatch, api):
    """HTTP/1.1 keeps the connection open: a whole reply carries Content-Length, a streamed one
    ends with the last chunk, and the next request rides the same connection."""
    streamed = {"ollama": ("/api/chat", CHAT), "vllm": ("/v1/chat/completions", {**CHAT, "stream": True})}
    path, body = streamed[api]
    with standin(api, monkeypatch, **FAST) as (port, log):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/v1/models")
        first = conn.getresponse()
        assert first.version == 11 and first.getheader("Content-Length") and json.loads(first.read())["data"]
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        streamed = conn.getresponse()
        assert streamed.getheader("Transfer-Encoding") == "chunked" and streamed.read()
        conn.request("GET", "/v1/models")
        assert conn.getresponse().read()
        conn.close()
    assert [line["connection_request"] for line in log_lines(log, at_least=3)] == [1, 2, 3]


def test_an_http_1_0_client_gets_the_stream_until_the_connection_closes(monkeypatch):
    with standin("ollama", monkeypatch, **FAST) as (port, _):
        status, fields, pieces = exchange(port, "POST", "/api/chat", CHAT, version="HTTP/1.0")
    assert status == 200 and "transfer-encoding" not in fields and fields["connection"] == "close"
    assert ndjson_lines(pieces)[-1]["done"] is True


def test_chunked_request_bodies_are_read(monkeypatch):
    with standin("vllm", monkeypatch, **FAST) as (port, _):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("POST", "/v1/chat/completions", iter([json.dumps(CHAT).encode()]), encode_chunked=True)
        assert conn.getresponse().status == 200
        conn.close()


def test_vllm_closes_idle_keep_alive_connections_like_uvicorn(monkeypatch):
    with standin("vllm", monkeypatch, keepalive_timeout=0.2) as (port, _):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            time.sleep(0.6)
            received = b""
            while chunk := sock.recv(4096):
                received += chunk
        assert received.startswith(b"HTTP/1.1 200")  # answered, then closed once idle (recv got EOF)


def test_ollama_refuses_http_1_1_without_host_like_go(monkeypatch):
    with standin("ollama", monkeypatch) as (port, _):
        response, body = request(port, None)
    assert response.status == 400 and b"missing required Host header" in body


# Statuses and bodies from the engines' sources. Ollama: server/routes.go (handlers, gin with
# HandleMethodNotAllowed: "405 method not allowed" / "404 page not found" in plain text),
# middleware/openai.go + openai.NewError for /v1. vLLM: FastAPI routes (Starlette's 404/405
# {"detail": ...}), validation_exception_handler (400, not FastAPI's 422), _check_model (404).
MISSING = {"error": "model 'nope' not found"}
STATUS_CASES = [
    # Ollama's own API
    ("ollama", "POST", "/api/chat", {"model": "nope", "messages": []}, 404, MISSING),
    ("ollama", "POST", "/api/generate", {"model": "nope", "prompt": "x"}, 404, MISSING),
    ("ollama", "POST", "/api/chat", {"messages": []}, 400, {"error": "model is required"}),
    ("ollama", "POST", "/api/show", {"model": "nope"}, 404, MISSING),
    ("ollama", "POST", "/api/embed", {"model": "nope", "input": "x"}, 404, MISSING),
    ("ollama", "POST", "/api/embed", {"model": "lab", "input": 5}, 400, {"error": "invalid input type"}),
    ("ollama", "POST", "/api/chat", b"", 400, {"error": "missing request body"}),
    ("ollama", "POST", "/api/chat", b"{not json", 400, None),
    ("ollama", "POST", "/api/chat", {"model": "lab", "messages": "hi"}, 400, None),
    ("ollama", "POST", "/api/generate", {"model": "lab", "stream": "no"}, 400, None),
    ("ollama", "GET", "/api/chat", None, 405, b"405 method not allowed"),
    ("ollama", "HEAD", "/api/ps", None, 405, None),
    ("ollama", "POST", "/api/tags", None, 405, b"405 method not allowed"),
    ("ollama", "GET", "/api/nothing", None, 404, b"404 page not found"),
    ("ollama", "HEAD", "/api/tags", None, 200, None),
    # Ollama's OpenAI-compatible API
    ("ollama", "POST", "/v1/chat/completions", {**CHAT, "model": "nope"}, 404,
     {"error": {"message": "model 'nope' not found", "type": "not_found_error", "param": None,
                "code": None}}),
    ("ollama", "POST", "/v1/chat/completions", {"model": "lab", "messages": []}, 400,
     {"error": {"message": "[] is too short - 'messages'", "type": "invalid_request_error", "param": None,
                "code": None}}),
    ("ollama", "POST", "/v1/embeddings", {"model": "lab"}, 400, None),
    ("ollama", "GET", "/v1/chat/completions", None, 405, b"405 method not allowed"),
    # vLLM
    ("vllm", "POST", "/v1/chat/completions", {"model": "nope", "messages": []}, 404,
     {"error": {"message": "The model `nope` does not exist.", "type": "NotFoundError", "param": None,
                "code": 404}}),
    ("vllm", "POST", "/v1/completions", {"model": "nope", "prompt": "x"}, 404, None),
    ("vllm", "POST", "/v1/chat/completions", {"model": "lab"}, 400, None),
    ("vllm", "POST", "/v1/chat/completions", b"{not json", 400, None),
    ("vllm", "POST", "/v1/chat/completions", b"", 400, None),
    ("vllm", "POST", "/v1/chat/completions", {"messages": [], "max_tokens": "many"}, 400, None),
    ("vllm", "POST", "/v1/completions", {"model": "lab"}, 400, None),
    ("vllm", "GET", "/v1/chat/completions", None, 405, {"detail": "Method Not Allowed"}),
    ("vllm", "HEAD", "/v1/models", None, 405, None),
    ("vllm", "GET", "/api/tags", None, 404, {"detail": "Not Found"}),
    ("vllm", "POST", "/v1/chat/completions", {"messages": []}, 200, None),  # no model: the served one
]  # fmt: skip


@pytest.mark.parametrize(
    ("api", "method", "path", "body", "status", "expected"),
    STATUS_CASES,
    ids=[f"{c[0]}-{c[1]}-{c[2]}-{c[4]}-{i}" for i, c in enumerate(STATUS_CASES)],
)
def test_statuses_are_the_engines_own(monkeypatch, api, method, path, body, status, expected):
    with standin(api, monkeypatch) as (port, _):
        got, fields, pieces = exchange(port, method, path, body)
    payload = b"".join(piece for _, piece in pieces)
    assert got == status, payload
    if isinstance(expected, bytes):
        assert payload == expected and fields["content-type"].startswith("text/plain")
    elif expected is not None:
        assert json.loads(payload) == expected
    if status == 400 and api == "vllm":
        error = json.loads(payload)["error"]
        assert (error["code"], error["type"]) == (400, "Bad Request")
        assert "validation error" in error["message"]
    if status == 400 and api == "ollama" and not path.startswith("/v1"):
        assert json.loads(payload)["error"]
    if status == 405 and api == "vllm":
        assert fields["allow"] == method_allowed(path)


def method_allowed(path: str) -> str:
    return "GET" if path == "/v1/models" else "POST"


@pytest.mark.parametrize("api", ["ollama", "vllm"])
def test_the_labs_model_names_are_served_and_others_are_not(monkeypatch, api):
    """The gateway tests send "lab" and "standin-model:latest"; --models replaces the list."""
    names = ["lab", "standin-model:latest"] + (["LAB:latest", "standin-model"] if api == "ollama" else [])
    with standin(api, monkeypatch) as (port, _):
        for name in names:
            assert exchange(port, "POST", "/v1/chat/completions", {**CHAT, "model": name})[0] == 200, name
        assert exchange(port, "POST", "/v1/chat/completions", {**CHAT, "model": "llama3"})[0] == 404
    with standin(api, monkeypatch, models=("llama3",)) as (port, _):
        assert exchange(port, "POST", "/v1/chat/completions", {**CHAT, "model": "llama3"})[0] == 200
        assert exchange(port, "POST", "/v1/chat/completions", {**CHAT, "model": "lab"})[0] == 404
        listed = json.loads(exchange(port, "GET", "/v1/models")[2][0][1])["data"]
    assert [card["id"].split(":")[0] for card in listed] == ["llama3"]


def test_ollama_model_management_streams_progress_by_default(monkeypatch):
    with standin("ollama", monkeypatch, interval=0.0) as (port, _):
        lines = ndjson_lines(exchange(port, "POST", "/api/pull", {"model": "llama3"})[2])
        whole = exchange(port, "POST", "/api/pull", {"model": "llama3", "stream": False})
    assert lines[-1] == {"status": "success"} and len(lines) > 1
    assert json.loads(whole[2][0][1]) == {"status": "success"}


def test_main_reads_models_and_pace_from_flags(monkeypatch):
    seen = {}

    class FakeServer:
        def __init__(self, address, handler):
            seen["timeout"] = handler.timeout

        def serve_forever(self):
            raise KeyboardInterrupt

    monkeypatch.setattr(engine_standin, "Server", FakeServer)
    monkeypatch.setattr("sys.stdout", out := io.StringIO())
    argv = ["--api", "vllm", "--port", "1", "--models", "a, b", "--stream-interval", "0.5"]
    assert engine_standin.main(argv) == 0
    assert json.loads(out.getvalue())["models"] == ["a", "b"]
    assert seen["timeout"] == 5.0  # uvicorn's keep-alive default; Ollama's server keeps idle ones
    assert engine_standin.main(["--api", "ollama", "--port", "1"]) == 0 and seen["timeout"] is None
