#!/usr/bin/env python3
"""Test stand-in for engines that cannot be installed in the lab (Ollama, vLLM).

It answers each engine's HTTP routes with the right status and JSON shape, so the gateway's
endpoint allowlist and auth rules can be tested against the real paths, including the dangerous
admin ones. It is test infrastructure: it runs no model. Standard library only, so it runs on a
lab host's system python3 without network.

Every request is logged to stdout (the journal) as one JSON line with the method, path, status and
the headers a gateway is responsible for (Host, X-Forwarded-For, X-Real-IP, and whether an
Authorization header arrived: never its value), which lets tests prove that a blocked request never
reached the engine and that the gateway strips the key.

As `--api ollama` it also refuses requests the way real Ollama does when bound to loopback: 403 to
a Host header that is not local (server/routes.go, allowedHostsMiddleware), so a gateway that
forwards the client's DNS name fails here as it would in production.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "standin-model:latest"
Reply = tuple[int, dict | list | None]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _last_user_text(body: dict) -> str:
    messages = body.get("messages") or []
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return str(body.get("prompt", ""))


def _openai_chat(body: dict) -> Reply:
    text = f"stand-in reply to: {_last_user_text(body)[:80]}"
    return 200, {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", MODEL),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 5, "total_tokens": 6},
    }


def _openai_completion(body: dict) -> Reply:
    return 200, {
        "id": "cmpl-standin",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.get("model", MODEL),
        "choices": [{"index": 0, "text": " stand-in completion", "finish_reason": "stop"}],
    }


def _openai_models(_: dict) -> Reply:
    return 200, {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "standin"}]}


def _openai_embeddings(_: dict) -> Reply:
    return 200, {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}]}


def _ok(payload: dict | None = None) -> Callable[[dict], Reply]:
    return lambda _body: (200, payload if payload is not None else {"status": "success"})


def _ollama_generate(body: dict) -> Reply:
    return 200, {
        "model": body.get("model", MODEL),
        "created_at": _now(),
        "response": "stand-in response",
        "done": True,
    }


def _ollama_chat(body: dict) -> Reply:
    return 200, {
        "model": body.get("model", MODEL),
        "created_at": _now(),
        "message": {"role": "assistant", "content": f"stand-in reply to: {_last_user_text(body)[:80]}"},
        "done": True,
    }


_OLLAMA_TAGS = {"models": [{"name": MODEL, "model": MODEL, "size": 1, "digest": "0" * 64}]}

# Mirrors the Ollama 0.12 REST API (docs/api.md) and its OpenAI-compatible /v1 routes.
OLLAMA: dict[tuple[str, str], Callable[[dict], Reply]] = {
    ("GET", "/api/tags"): _ok(_OLLAMA_TAGS),
    ("GET", "/api/ps"): _ok({"models": []}),
    ("GET", "/api/version"): _ok({"version": "0.12.0-standin"}),
    ("POST", "/api/generate"): _ollama_generate,
    ("POST", "/api/chat"): _ollama_chat,
    ("POST", "/api/show"): _ok({"modelfile": "", "details": {"family": "standin"}}),
    ("POST", "/api/embed"): _ok({"model": MODEL, "embeddings": [[0.1, 0.2]]}),
    ("POST", "/api/embeddings"): _ok({"embedding": [0.1, 0.2]}),
    ("POST", "/api/pull"): _ok(),
    ("POST", "/api/push"): _ok(),
    ("POST", "/api/create"): _ok(),
    ("POST", "/api/copy"): _ok({}),
    ("DELETE", "/api/delete"): _ok({}),
    ("GET", "/v1/models"): _openai_models,
    ("POST", "/v1/chat/completions"): _openai_chat,
    ("POST", "/v1/completions"): _openai_completion,
    ("POST", "/v1/embeddings"): _openai_embeddings,
}
OLLAMA_PREFIXES: dict[tuple[str, str], Callable[[dict], Reply]] = {
    ("HEAD", "/api/blobs/"): _ok({}),
    ("POST", "/api/blobs/"): lambda _b: (201, {}),
}

# Mirrors the vLLM 0.11 OpenAI-compatible server (vllm.entrypoints.openai.api_server),
# including the development and admin routes a gateway must never expose.
VLLM: dict[tuple[str, str], Callable[[dict], Reply]] = {
    ("GET", "/health"): _ok({}),
    ("GET", "/version"): _ok({"version": "0.11.0-standin"}),
    ("GET", "/v1/models"): _openai_models,
    ("POST", "/v1/chat/completions"): _openai_chat,
    ("POST", "/v1/completions"): _openai_completion,
    ("POST", "/v1/embeddings"): _openai_embeddings,
    ("POST", "/tokenize"): _ok({"tokens": [1, 2, 3], "count": 3, "max_model_len": 2048}),
    ("POST", "/detokenize"): _ok({"prompt": "stand-in"}),
    ("POST", "/invocations"): _openai_chat,
    ("POST", "/pause"): _ok(),
    ("POST", "/resume"): _ok(),
    ("POST", "/sleep"): _ok(),
    ("POST", "/wake_up"): _ok(),
    ("POST", "/reset_prefix_cache"): _ok(),
    ("POST", "/update_weights"): _ok(),
    ("POST", "/collective_rpc"): _ok({"results": []}),
    ("POST", "/v1/load_lora_adapter"): _ok(),
    ("POST", "/v1/unload_lora_adapter"): _ok(),
}

APIS = {"ollama": (OLLAMA, OLLAMA_PREFIXES), "vllm": (VLLM, {})}


def route(api: str, method: str, path: str, body: dict) -> Reply:
    exact, prefixes = APIS[api]
    path = path.split("?", 1)[0]
    handler = exact.get((method, path))
    if handler is None:
        handler = next(
            (h for (m, prefix), h in prefixes.items() if m == method and path.startswith(prefix)), None
        )
    if handler is None:
        return 404, {"error": f"{method} {path} not found"}
    return handler(body)


IP = ipaddress.IPv4Address | ipaddress.IPv6Address

# Ollama's own list (server/routes.go, allowedHost): names under these suffixes are always local.
OLLAMA_LOCAL_TLDS = ("localhost", "local", "internal")


def split_host_port(hostport: str) -> tuple[str, str]:
    """Go's net.SplitHostPort, error for error: ValueError where Go returns an error."""
    i = hostport.rfind(":")
    if i < 0:
        raise ValueError("missing port in address")
    j = k = 0
    if hostport[0] == "[":
        end = hostport.find("]")
        if end < 0:
            raise ValueError("missing ']' in address")
        if end + 1 == len(hostport):
            raise ValueError("missing port in address")
        if end + 1 != i:
            raise ValueError("too many colons in address" if hostport[end + 1] == ":" else "missing port")
        host, j, k = hostport[1:end], 1, end + 1
    else:
        host = hostport[:i]
        if ":" in host:
            raise ValueError("too many colons in address")
    if "[" in hostport[j:] or "]" in hostport[k:]:
        raise ValueError("unexpected bracket in address")
    return host, hostport[i + 1 :]


def parse_addr(text: str) -> IP | None:
    """Go's netip.ParseAddr: a bare IPv4 or IPv6 address (zone allowed), no brackets, no port."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _unmap(ip: IP) -> IP:
    return ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip


def go_is_loopback(ip: IP) -> bool:
    ip = _unmap(ip)
    return ip.packed[0] == 127 if ip.version == 4 else ip == ipaddress.IPv6Address("::1")


def go_is_private(ip: IP) -> bool:
    """netip.Addr.IsPrivate: RFC 1918 and fc00::/7 only (Python's is_private covers far more)."""
    ip = _unmap(ip)
    b = ip.packed
    if ip.version == 4:
        return b[0] == 10 or (b[0] == 172 and b[1] & 0xF0 == 16) or (b[0] == 192 and b[1] == 168)
    return b[0] & 0xFE == 0xFC


def go_is_unspecified(ip: IP) -> bool:
    # Go compares with 0.0.0.0 and :: exactly, without unmapping ::ffff:0.0.0.0.
    return ip in (ipaddress.IPv4Address("0.0.0.0"), ipaddress.IPv6Address("::"))


def local_addresses() -> set[IP]:
    """Addresses on this machine's interfaces (Ollama's isLocalIP walks net.Interfaces per request)."""
    found: set[IP] = set()
    with contextlib.suppress(OSError):
        current = None
        for line in open("/proc/net/fib_trie", encoding="ascii"):  # noqa: SIM115 - short read
            if "|--" in line:
                current = line.split("|--", 1)[1].strip()
            elif "/32 host LOCAL" in line and current:
                found.add(ipaddress.IPv4Address(current))
    with contextlib.suppress(OSError):
        for line in open("/proc/net/if_inet6", encoding="ascii"):  # noqa: SIM115 - short read
            found.add(ipaddress.IPv6Address(bytes.fromhex(line.split()[0])))
    return found


def ollama_allowed_host(host: str, hostname: str) -> bool:
    """server/routes.go allowedHost: empty, localhost, the machine's hostname, or a local TLD."""
    host = host.lower()
    if host in ("", "localhost") or host == hostname.lower():
        return True
    return any(host.endswith("." + tld) for tld in OLLAMA_LOCAL_TLDS)


def ollama_host_check(
    bind_host: str,
    host_header: str,
    method: str,
    hostname: str | None = None,
    local_ips: set[IP] | None = None,
) -> int | None:
    """server/routes.go allowedHostsMiddleware: the status Ollama aborts with, or None to go on.

    The check applies only while Ollama listens on a loopback address: bound to anything else it
    lets every Host through (the operator opened it on purpose).
    """
    bind = parse_addr(bind_host)
    if bind is not None and not go_is_loopback(bind):
        return None
    try:
        host, _ = split_host_port(host_header)
    except ValueError:
        host = host_header
    addr = parse_addr(host)
    if addr is not None and (
        go_is_loopback(addr)
        or go_is_private(addr)
        or go_is_unspecified(addr)
        or addr in (local_addresses() if local_ips is None else local_ips)
    ):
        return None
    if ollama_allowed_host(host, socket.gethostname() if hostname is None else hostname):
        # Allowed CORS preflights end here, as in Ollama, with 204 and no body.
        return 204 if method == "OPTIONS" else None
    return 403


def make_handler(api: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = f"{api}-standin"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            refused = (
                ollama_host_check(self.server.server_address[0], self.headers.get("Host", ""), self.command)
                if api == "ollama"
                else None
            )
            if refused is not None:
                # gin's AbortWithStatus: the status alone, no body, no Content-Type.
                self._reply(refused, None)
                return
            try:
                body = json.loads(raw) if raw else {}
            except json.JSONDecodeError:
                body = {}
            status, payload = route(api, self.command, self.path, body if isinstance(body, dict) else {})
            self._reply(status, payload)

        def _reply(self, status: int, payload: dict | list | None) -> None:
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            if payload is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            self._log(status)

        def _log(self, status: int) -> None:
            # What the gateway is answerable for, as received: the key's presence, never its value.
            line = {
                "method": self.command,
                "path": self.path,
                "status": status,
                "host": self.headers.get("Host"),
                "x_forwarded_for": self.headers.get("X-Forwarded-For"),
                "x_real_ip": self.headers.get("X-Real-IP"),
                "authorization": "Authorization" in self.headers,
            }
            print(json.dumps(line), flush=True)

        do_GET = do_POST = do_DELETE = do_HEAD = do_PUT = do_OPTIONS = _handle

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            return  # one JSON line per request is printed by _handle instead

    return Handler


DEFAULT_PORTS = {"ollama": 11434, "vllm": 8000}


def ollama_host(value: str) -> tuple[str, int]:
    """envconfig.Host(): OLLAMA_HOST as Ollama reads it ([scheme://]host[:port][/path])."""
    value = value.strip().strip("\"'")
    default_port = "11434"
    scheme, sep, hostport = value.partition("://")
    if not sep:
        hostport = value
    elif scheme == "http":
        default_port = "80"
    elif scheme == "https":
        default_port = "443"
    hostport = hostport.split("/", 1)[0]
    try:
        host, port = split_host_port(hostport)
    except ValueError:
        host, port = "127.0.0.1", default_port
        if (ip := parse_addr(hostport.strip("[]"))) is not None:
            host = str(ip)
        elif hostport:
            host = hostport
    if not port.isdigit() or int(port) > 65535:
        port = default_port
    return host or "", int(port)


def listen_address(api: str, host: str | None, port: int | None, environ: dict[str, str]) -> tuple[str, int]:
    """Flags win; Ollama, like the real server, also reads OLLAMA_HOST."""
    env_host, env_port = "127.0.0.1", DEFAULT_PORTS[api]
    if api == "ollama":
        env_host, env_port = ollama_host(environ.get("OLLAMA_HOST", ""))
    return host or env_host, port or env_port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", choices=sorted(APIS), required=True)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    # vLLM's media restrictions, which the engine role adds to a vLLM command line: accepted, so the
    # stand-in starts under the same ExecStart=, and reported; it fetches no media anyway.
    parser.add_argument("--allowed-media-domains", nargs="+")
    parser.add_argument("--allowed-local-media-path")
    args = parser.parse_args(argv)
    host, port = listen_address(args.api, args.host, args.port, dict(os.environ))
    server = ThreadingHTTPServer((host, port), make_handler(args.api))
    started = {"listening": f"{host}:{port}", "api": args.api}
    if args.allowed_media_domains is not None:
        started["allowed_media_domains"] = args.allowed_media_domains
    print(json.dumps(started), flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
