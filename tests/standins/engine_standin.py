#!/usr/bin/env python3
"""Test stand-in for engines that cannot be installed in the lab (Ollama, vLLM).

It answers each engine's HTTP routes with the right status and JSON shape, so the gateway's
endpoint allowlist and auth rules can be tested against the real paths, including the dangerous
admin ones. It is test infrastructure: it runs no model. Standard library only, so it runs on a
lab host's system python3 without network.

Every request is logged to stdout (the journal) as one JSON line with the method and path, which
lets tests prove that a blocked request never reached the engine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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


def make_handler(api: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = f"{api}-standin"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else {}
            except json.JSONDecodeError:
                body = {}
            status, payload = route(api, self.command, self.path, body if isinstance(body, dict) else {})
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            print(json.dumps({"method": self.command, "path": self.path, "status": status}), flush=True)

        do_GET = do_POST = do_DELETE = do_HEAD = do_PUT = _handle

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            return  # one JSON line per request is printed by _handle instead

    return Handler


DEFAULT_PORTS = {"ollama": 11434, "vllm": 8000}


def listen_address(api: str, host: str | None, port: int | None, environ: dict[str, str]) -> tuple[str, int]:
    """Flags win; Ollama, like the real server, also reads OLLAMA_HOST=host:port."""
    env_host, env_port = "127.0.0.1", DEFAULT_PORTS[api]
    if api == "ollama" and environ.get("OLLAMA_HOST"):
        env_host, _, raw_port = environ["OLLAMA_HOST"].rpartition(":")
        env_port = int(raw_port)
    return host or env_host, port or env_port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", choices=sorted(APIS), required=True)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    host, port = listen_address(args.api, args.host, args.port, dict(os.environ))
    server = ThreadingHTTPServer((host, port), make_handler(args.api))
    print(json.dumps({"listening": f"{host}:{port}", "api": args.api}), flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
