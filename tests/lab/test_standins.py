"""The engines behind the gateways, as the stand-ins record them (gpu2: Ollama, gpu3: vLLM).

Each stand-in logs every request it receives to its journal (tests/standins/README.md), so these
tests see from the engine's side what the gateway let through, how it streamed and whether it
reused its upstream connections. Requests come from the `client` host's network namespace with the
lab's keys and CA bundle, as in test_gateway.py, whose probe and helpers they reuse.
"""

from __future__ import annotations

import json
import secrets

import pytest
from netns import run_in_netns
from test_gateway import CA_BUNDLE, HTTP_PROBE, headers_for, standin_log

pytestmark = pytest.mark.lab

UNITS = {"gpu2": ("lg-gpu2", "ollama.service"), "gpu3": ("lg-gpu3", "vllm.service")}
CHAT = [{"role": "user", "content": "Say hi."}]

# A streamed POST whose body lines are timed as they arrive at the client, not once it ended.
STREAM_PROBE = r"""
import json, sys, time, httpx
req = json.load(sys.stdin)
events = []
with httpx.Client(verify=req["verify"], timeout=req.get("timeout", 60)) as client:
    start = time.monotonic()
    with client.stream("POST", req["url"], headers=req["headers"], json=req["json"]) as response:
        for line in response.iter_lines():
            if line.strip():
                events.append([time.monotonic() - start, line])
print(json.dumps({"status": response.status_code, "content_type": response.headers.get("content-type"),
                  "transfer_encoding": response.headers.get("transfer-encoding"), "events": events}))
"""


def url(lab_hosts: dict, gpu: str, path: str) -> str:
    return f"https://{lab_hosts[gpu]['ansible_host']}{path}"


def keyed(lab_hosts: dict, gpu: str, method: str, path: str, **extra: object) -> dict:
    """One HTTP_PROBE request with the lab's valid key, verified against its CA bundle."""
    return {"id": f"{gpu} {method} {path}", "method": method, "url": url(lab_hosts, gpu, path),
            "headers": headers_for("valid"), "verify": str(CA_BUNDLE), **extra}  # fmt: skip


def seen_by(gpu: str, marker: str, wait: float = 5.0) -> list[dict]:
    """The stand-in's log lines for requests whose path carries `marker`."""
    return standin_log(*UNITS[gpu], marker, wait=wait)


def stream(lab_hosts: dict, gpu: str, path: str, body: dict, timeout: float = 60) -> dict:
    request = {"url": url(lab_hosts, gpu, path), "headers": headers_for("valid"), "json": body,
               "verify": str(CA_BUNDLE), "timeout": timeout}  # fmt: skip
    return run_in_netns("lg-client", STREAM_PROBE, request)


def test_blocked_requests_never_reach_the_engine_while_allowed_ones_beside_them_do(lab_hosts):
    """A valid key does not open the admin routes: the gateway answers 403 and the engine's log has
    no trace of them, while the allowed request sent right beside them is there."""
    marker = secrets.token_hex(6)
    cases = [  # (gpu, method, path, expected status, reaches the engine)
        ("gpu2", "GET", "/api/tags", 200, True),
        ("gpu2", "POST", "/api/pull", 403, False),
        ("gpu2", "GET", "/api/ps", 403, False),
        ("gpu2", "DELETE", "/api/delete", 403, False),
        ("gpu3", "GET", "/v1/models", 200, True),
        ("gpu3", "POST", "/collective_rpc", 403, False),
        ("gpu3", "POST", "/v1/load_lora_adapter", 403, False),
    ]
    requests = [
        keyed(lab_hosts, gpu, method, f"{path}?probe={marker}", pace=0.1,
              json={"model": "lab", "name": "lab"} if method != "GET" else None)
        for gpu, method, path, _, _ in cases
    ]  # fmt: skip
    results = run_in_netns("lg-client", HTTP_PROBE, requests)
    seen = {gpu: {entry["path"].split("?")[0] for entry in seen_by(gpu, marker)} for gpu in UNITS}
    for gpu, method, path, status, reaches in cases:
        assert results[f"{gpu} {method} {path}?probe={marker}"].get("status") == status, results
        assert (path in seen[gpu]) == reaches, (gpu, method, path, seen[gpu])


def test_sse_completion_streams_through_the_gateway_chunk_by_chunk(lab_hosts):
    """vLLM's `stream: true`: the first event reaches the client long before the last, so the gateway
    forwards chunks as the engine writes them instead of buffering the answer."""
    marker = secrets.token_hex(6)
    body = {"model": "lab", "messages": CHAT, "stream": True, "max_tokens": 5, "standin_interval": 0.4}
    result = stream(lab_hosts, "gpu3", f"/v1/chat/completions?probe={marker}", body)
    assert result["status"] == 200 and result["content_type"].startswith("text/event-stream"), result
    events = result["events"]
    assert all(line.startswith("data: ") for _, line in events) and events[-1][1] == "data: [DONE]", events
    assert len(events) >= 7, events  # role, 5 tokens, finish, [DONE]
    first, last = events[0][0], events[-1][0]
    assert last - first >= 0.8 * 0.4 * 5 and first < last / 2, events
    (entry,) = seen_by("gpu3", marker)
    assert entry["status"] == 200 and entry["chunks"] == len(events) and not entry.get("aborted"), entry


def test_ollama_ndjson_streams_through_the_gateway_line_by_line(lab_hosts):
    """Ollama streams /api/chat unless told `"stream": false`: one JSON line per token, each
    reaching the client as it is produced, the last one `done`."""
    marker = secrets.token_hex(6)
    body = {"model": "lab", "messages": CHAT, "options": {"num_predict": 5}, "standin_interval": 0.4}
    result = stream(lab_hosts, "gpu2", f"/api/chat?probe={marker}", body)
    assert result["status"] == 200 and result["content_type"] == "application/x-ndjson", result
    lines = [json.loads(line) for _, line in result["events"]]
    assert len(lines) == 6 and [line["done"] for line in lines] == [False] * 5 + [True], lines
    first, last = result["events"][0][0], result["events"][-1][0]
    assert last - first >= 0.8 * 0.4 * 5 and first < last / 2, result["events"]
    (entry,) = seen_by("gpu2", marker)
    assert entry["status"] == 200 and entry["chunks"] == 6, entry


def test_a_long_generation_is_not_cut_by_the_gateway(lab_hosts):
    """Events 2 s apart for about 12 s: the gateway's read timeout applies between reads, so a slow
    but live generation reaches its end, each event as it comes."""
    body = {"model": "lab", "messages": CHAT, "stream": True, "max_tokens": 4, "standin_interval": 2.0}
    result = stream(lab_hosts, "gpu3", "/v1/chat/completions", body, timeout=120)
    events = result["events"]
    assert result["status"] == 200 and events[-1][1] == "data: [DONE]" and len(events) == 7, result
    gaps = [later[0] - earlier[0] for earlier, later in zip(events, events[1:], strict=False)]
    assert all(gap >= 1.5 for gap in gaps), gaps  # none held back to be sent with the next one


@pytest.mark.parametrize(
    ("gpu", "path", "body", "status", "words"),
    [
        ("gpu2", "/api/chat", {"model": "no-such-model", "messages": CHAT, "stream": False}, 404,
         "model 'no-such-model' not found"),
        ("gpu2", "/api/generate", {"model": "no-such-model", "prompt": "hi"}, 404, "not found"),
        ("gpu2", "/v1/chat/completions", {"model": "no-such-model", "messages": CHAT}, 404,
         "not_found_error"),
        ("gpu3", "/v1/chat/completions", {"model": "no-such-model", "messages": CHAT}, 404,
         "The model `no-such-model` does not exist."),
        ("gpu3", "/v1/chat/completions", {"model": "lab"}, 400, "validation error"),
        ("gpu2", "/api/chat", {"model": "lab", "messages": "not a list"}, 400, "cannot unmarshal"),
    ],
    ids=["ollama-chat-404", "ollama-generate-404", "ollama-v1-404", "vllm-404", "vllm-400", "ollama-400"],
)  # fmt: skip
def test_engine_errors_reach_the_client_as_the_engine_sent_them(lab_hosts, gpu, path, body, status, words):
    """An unknown model or a bad body is the engine's answer to give: the gateway passes its status
    and body through instead of turning them into its own page or a 200."""
    marker = secrets.token_hex(6)
    request = keyed(lab_hosts, gpu, "POST", f"{path}?probe={marker}", json=body)
    result = run_in_netns("lg-client", HTTP_PROBE, [request])[request["id"]]
    assert result.get("status") == status and words in result["body"], result
    (entry,) = seen_by(gpu, marker)
    assert entry["status"] == status, entry


@pytest.mark.parametrize("gpu", ["gpu2", "gpu3"])
def test_the_gateway_reuses_its_upstream_connections(lab_hosts, gpu):
    """`keepalive` in the upstream block with HTTP/1.1 and no `Connection: close`: the engine sees
    requests arrive on connections that already carried one."""
    marker = secrets.token_hex(6)
    path = "/api/tags" if gpu == "gpu2" else "/v1/models"
    request = keyed(lab_hosts, gpu, "GET", f"{path}?probe={marker}", pace=0.1)
    requests = [{**request, "id": str(i)} for i in range(8)]
    results = run_in_netns("lg-client", HTTP_PROBE, requests)
    assert {r.get("status") for r in results.values()} == {200}, results
    entries = seen_by(gpu, marker)
    assert len(entries) == 8, entries
    assert max(entry["connection_request"] for entry in entries) >= 2, entries
