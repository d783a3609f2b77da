#!/usr/bin/env python3
"""Test stand-in for engines that cannot be installed in the lab (Ollama, vLLM).

It answers each engine's HTTP routes the way the engine does, from the engines' own sources
(ollama/ollama server/routes.go, middleware/openai.go, api/types.go; vLLM's OpenAI server):
the same statuses for an unknown model, a wrong method or a bad body, the same streaming
(Ollama's NDJSON, streamed unless a request says `"stream": false`; OpenAI-style SSE on
`"stream": true`), over HTTP/1.1 with keep-alive and chunked transfer encoding. So the gateway's
allowlist, auth, buffering and upstream keep-alive are tested against what real engines do. It
runs no model. Standard library only, so it runs on a lab host's system python3 without network.

Every request is logged to stdout (the journal) as one JSON line with the method, path, status,
the headers a gateway is responsible for (Host, X-Forwarded-For, X-Real-IP, X-Request-ID as
`request_id`, and whether an Authorization header arrived: never its value) and how many requests
its connection has carried, which lets tests prove that a blocked request never reached the
engine, that the gateway strips the key, that its log and the engine's name the same request,
and that it reuses upstream connections.

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
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "standin-model:latest"
# The names the lab's clients and gateway tests send; --models replaces the list.
DEFAULT_MODELS = (MODEL, "lab")
# Upper bound on what a request may ask for, so a test cannot make the stand-in hang for hours.
MAX_TOKENS = 1000
MAX_INTERVAL = 30.0


@dataclass(frozen=True)
class Config:
    api: str
    models: tuple[str, ...] = DEFAULT_MODELS
    # A generation streams this many tokens unless the request limits it (max_tokens, num_predict).
    tokens: int = 5
    # Seconds between streamed tokens; a request's `standin_interval` field overrides it.
    interval: float = 0.2
    # Idle keep-alive connections are closed after this many seconds (None: kept, as Go's server).
    keepalive_timeout: float | None = None


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # A streamed body: each item is written (as one HTTP chunk) and flushed on its own.
    chunks: Iterable[bytes] | None = None
    interval: float = 0.0


@dataclass(frozen=True)
class Request:
    config: Config
    method: str
    path: str
    raw: bytes


class BadBody(ValueError):
    """A body the engine refuses before doing anything (400)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _json(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def gin_json(status: int, payload: object) -> Response:
    """gin's c.JSON, as Ollama answers."""
    return Response(status, _json(payload), "application/json; charset=utf-8")


def starlette_json(status: int, payload: object, headers: dict[str, str] | None = None) -> Response:
    """Starlette's JSONResponse, as vLLM (FastAPI) answers."""
    return Response(status, _json(payload), "application/json", headers or {})


# --- Request bodies as each engine decodes them -------------------------------------------------

JSON_KIND = {dict: "object", list: "array", str: "string", bool: "bool", int: "number", float: "number"}


def _json_kind(value: object) -> str:
    return JSON_KIND.get(type(value), "null")


def _loads(raw: bytes) -> object:
    """json.loads, or BadBody with the position of the first bad byte."""
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        pos = getattr(exc, "pos", getattr(exc, "start", 0))
        if pos >= len(raw.rstrip()):
            raise BadBody("unexpected EOF") from None
        char = raw[pos : pos + 1].decode("latin-1")
        raise BadBody(f"invalid character {char!r} looking for beginning of value") from None


# Go field types of Ollama's request structs (api/types.go, openai/openai.go) that a client can get
# wrong: Go's decoder refuses a JSON value of another kind for them; unknown fields are ignored.
GoField = tuple[type | tuple[type, ...], str]
GO_STR: GoField = (str, "string")
GO_BOOL: GoField = (bool, "bool")
GO_INT: GoField = (int, "int")
GO_MAP: GoField = (dict, "map[string]interface {}")


def _go_list(go_type: str) -> GoField:
    return (list, go_type)


def go_decode(raw: bytes, struct: str, fields: dict[str, GoField]) -> dict:
    """gin's ShouldBindJSON into one of Ollama's structs: BadBody carries Go's error text."""
    if not raw.strip():
        raise BadBody("missing request body")  # io.EOF
    body = _loads(raw)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise BadBody(f"json: cannot unmarshal {_json_kind(body)} into Go value of type {struct}")
    for name, (kind, go_type) in fields.items():
        value = body.get(name)
        if value is None:
            continue
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is int and isinstance(value, float) and value.is_integer():
            ok = True
        if not ok:
            raise BadBody(
                f"json: cannot unmarshal {_json_kind(value)} into Go struct field "
                f"{struct.split('.')[-1]}.{name} of type {go_type}"
            )
    return body


# pydantic (lax mode) field kinds of vLLM's request models that a client can get wrong.
PyField = tuple[str, bool]  # (kind, required)


def _pydantic_ok(kind: str, value: object) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        if isinstance(value, bool):
            return True
        return (
            isinstance(value, int)
            or (isinstance(value, float) and value.is_integer())
            or (isinstance(value, str) and value.strip().lstrip("-").isdigit())
        )
    if kind == "bool":
        return isinstance(value, bool) or value in (0, 1, "true", "false", "0", "1", "yes", "no")
    if kind == "list":
        return isinstance(value, list)
    if kind == "dict":
        return isinstance(value, dict)
    if kind == "prompt":  # str | list[str] | list[int] | list[list[int]]
        return isinstance(value, str | list)
    return True


PYDANTIC_MSG = {
    "str": "Input should be a valid string",
    "int": "Input should be a valid integer",
    "bool": "Input should be a valid boolean",
    "list": "Input should be a valid list",
    "dict": "Input should be a valid dictionary",
    "prompt": "Input should be a valid string",
}


def pydantic_decode(raw: bytes, fields: dict[str, PyField]) -> dict:
    """FastAPI's body validation: BadBody carries pydantic's errors, as vLLM reports them."""
    errors: list[dict] = []
    if not raw.strip():
        errors.append({"type": "missing", "loc": ("body",), "msg": "Field required", "input": None})
        body: object = None
    else:
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            errors.append(
                {
                    "type": "json_invalid",
                    "loc": ("body", getattr(exc, "pos", 0)),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": str(exc)},
                }
            )
            body = None
    if body is not None and not isinstance(body, dict):
        errors.append(
            {
                "type": "model_attributes_type",
                "loc": ("body",),
                "msg": "Input should be a valid dictionary or object to extract fields from",
                "input": body,
            }
        )
    if isinstance(body, dict):
        for name, (kind, required) in fields.items():
            value = body.get(name)
            if value is None:
                if required:
                    errors.append(
                        {"type": "missing", "loc": ("body", name), "msg": "Field required", "input": body}
                    )
            elif not _pydantic_ok(kind, value):
                errors.append(
                    {"type": f"{kind}_type", "loc": ("body", name), "msg": PYDANTIC_MSG[kind], "input": value}
                )
    if errors:
        label = "error" if len(errors) == 1 else "errors"
        message = f"{len(errors)} validation {label}:\n" + "".join(f"  {e}\n" for e in errors)
        raise BadBody(message.rstrip(), ".".join(str(p) for p in errors[0]["loc"]))
    return body  # type: ignore[return-value]


# --- Generation ---------------------------------------------------------------------------------


def _last_user_text(body: dict) -> str:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return str(message.get("content", ""))
    prompt = body.get("prompt", "")
    return prompt if isinstance(prompt, str) else json.dumps(prompt)


@dataclass(frozen=True)
class Generation:
    """What the stand-in "generates" for a request: tokens, the pause between them, why it stopped."""

    tokens: list[str]
    interval: float
    finish_reason: str

    @property
    def text(self) -> str:
        return "".join(self.tokens)


def generation(config: Config, body: dict, limit: object) -> Generation:
    words = f"stand-in reply to: {_last_user_text(body)[:80]}".split()
    limited = isinstance(limit, int) and not isinstance(limit, bool) and limit > 0
    count = min(int(limit), MAX_TOKENS) if limited else config.tokens  # type: ignore[arg-type]
    interval = body.get("standin_interval", config.interval)
    if not isinstance(interval, int | float) or isinstance(interval, bool) or interval < 0:
        interval = config.interval
    tokens = [(" " if i else "") + words[i % len(words)] for i in range(count)]
    return Generation(tokens, min(float(interval), MAX_INTERVAL), "length" if limited else "stop")


def ndjson(items: Iterable[object]) -> Iterator[bytes]:
    for item in items:
        yield _json(item) + b"\n"


def sse(items: Iterable[object]) -> Iterator[bytes]:
    for item in items:
        yield b"data: " + _json(item) + b"\n\n"
    yield b"data: [DONE]\n\n"


def openai_usage(gen: Generation) -> dict:
    return {"prompt_tokens": 1, "completion_tokens": len(gen.tokens), "total_tokens": 1 + len(gen.tokens)}


def openai_chat(
    gen: Generation, model: str, stream: bool, include_usage: bool, extra: dict, id_prefix: str = "chatcmpl-"
) -> tuple[dict | None, Iterator[dict] | None]:
    """A chat completion, whole or as the chunks an OpenAI-compatible server streams."""
    base = {"id": f"{id_prefix}standin", "created": int(time.time()), "model": model, **extra}
    if not stream:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": gen.text},
            "logprobs": None,
            "finish_reason": gen.finish_reason,
        }
        return {**base, "object": "chat.completion", "choices": [choice], "usage": openai_usage(gen)}, None

    def chunks() -> Iterator[dict]:
        chunk = {**base, "object": "chat.completion.chunk"}
        first = {"role": "assistant", "content": ""}
        yield {**chunk, "choices": [{"index": 0, "delta": first, "logprobs": None, "finish_reason": None}]}
        for token in gen.tokens:
            delta = {"content": token}
            yield {
                **chunk,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}],
            }
        last = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": gen.finish_reason}
        yield {**chunk, "choices": [last]}
        if include_usage:
            yield {**chunk, "choices": [], "usage": openai_usage(gen)}

    return None, chunks()


def openai_completion(
    gen: Generation, model: str, stream: bool, include_usage: bool, extra: dict, id_prefix: str = "cmpl-"
) -> tuple[dict | None, Iterator[dict] | None]:
    base = {
        "id": f"{id_prefix}standin",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        **extra,
    }
    if not stream:
        choice = {"index": 0, "text": gen.text, "logprobs": None, "finish_reason": gen.finish_reason}
        return {**base, "choices": [choice], "usage": openai_usage(gen)}, None

    def chunks() -> Iterator[dict]:
        for i, token in enumerate(gen.tokens):
            last = i == len(gen.tokens) - 1
            choice = {
                "index": 0,
                "text": token,
                "logprobs": None,
                "finish_reason": gen.finish_reason if last else None,
            }
            yield {**base, "choices": [choice]}
        if include_usage:
            yield {**base, "choices": [], "usage": openai_usage(gen)}

    return None, chunks()


def _include_usage(body: dict) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _openai_limit(body: dict) -> object:
    return body.get("max_completion_tokens") or body.get("max_tokens")


# --- Ollama (server/routes.go, middleware/openai.go; gin with HandleMethodNotAllowed) ----------

Handler = Callable[[Request], Response]


def ollama_name(name: str) -> str:
    """A model name as Ollama matches it: case-insensitive, tag `latest` unless one is given."""
    name = name.strip().lower()
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def ollama_serves(config: Config, name: object) -> bool:
    return (
        isinstance(name, str)
        and bool(name.strip())
        and (ollama_name(name) in {ollama_name(m) for m in config.models})
    )


def ollama_native(fn: Handler) -> Handler:
    """gin's ShouldBindJSON failure in Ollama's own API: 400 {"error": ...}."""

    def handler(req: Request) -> Response:
        try:
            return fn(req)
        except BadBody as exc:
            return gin_json(400, {"error": str(exc)})

    return handler


def ollama_openai_error(status: int, message: str) -> Response:
    """openai.NewError: Ollama's /v1 routes answer errors in OpenAI's shape."""
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return gin_json(status, {"error": {"message": message, "type": kind, "param": None, "code": None}})


def ollama_openai(fn: Handler) -> Handler:
    def handler(req: Request) -> Response:
        try:
            return fn(req)
        except BadBody as exc:
            # The /v1 middleware reports the decoder's own error: io.EOF for an empty body.
            message = "EOF" if str(exc) == "missing request body" else str(exc)
            return ollama_openai_error(400, message)

    return handler


def ollama_stream(items: Iterable[object], interval: float) -> Response:
    """streamResponse: one JSON object per line, flushed as produced (chunked on the wire)."""
    return Response(200, content_type="application/x-ndjson", chunks=ndjson(items), interval=interval)


def _ollama_done(model: str, gen: Generation, extra: dict) -> dict:
    return {
        "model": model,
        "created_at": _now(),
        **extra,
        "done": True,
        "done_reason": gen.finish_reason,
        "total_duration": 2_000_000 + int(len(gen.tokens) * gen.interval * 1e9),
        "load_duration": 1_000_000,
        "prompt_eval_count": 1,
        "prompt_eval_duration": 1_000_000,
        "eval_count": len(gen.tokens),
        "eval_duration": int(len(gen.tokens) * gen.interval * 1e9),
    }


def _num_predict(body: dict) -> object:
    options = body.get("options")
    return options.get("num_predict") if isinstance(options, dict) else None


GENERATE_FIELDS = {
    "model": GO_STR,
    "prompt": GO_STR,
    "suffix": GO_STR,
    "system": GO_STR,
    "template": GO_STR,
    "context": _go_list("[]int"),
    "stream": GO_BOOL,
    "raw": GO_BOOL,
    "options": GO_MAP,
    "images": _go_list("[]api.ImageData"),
}
CHAT_FIELDS = {
    "model": GO_STR,
    "messages": _go_list("[]api.Message"),
    "stream": GO_BOOL,
    "options": GO_MAP,
    "tools": _go_list("api.Tools"),
}


@ollama_native
def ollama_generate(req: Request) -> Response:
    body = go_decode(req.raw, "api.GenerateRequest", GENERATE_FIELDS)
    model = body.get("model") or ""
    if not ollama_serves(req.config, model):
        return gin_json(404, {"error": f"model '{model}' not found"})
    gen = generation(req.config, body, _num_predict(body))
    if body.get("stream") is False:  # streamed unless the request says false (api/types.go)
        return gin_json(200, _ollama_done(model, gen, {"response": gen.text, "context": [1, 2, 3]}))

    def parts() -> Iterator[dict]:
        for token in gen.tokens:
            yield {"model": model, "created_at": _now(), "response": token, "done": False}
        yield _ollama_done(model, gen, {"response": "", "context": [1, 2, 3]})

    return ollama_stream(parts(), gen.interval)


@ollama_native
def ollama_chat(req: Request) -> Response:
    body = go_decode(req.raw, "api.ChatRequest", CHAT_FIELDS)
    model = body.get("model") or ""
    if not model.strip():
        return gin_json(400, {"error": "model is required"})
    if not ollama_serves(req.config, model):
        return gin_json(404, {"error": f"model '{model}' not found"})
    gen = generation(req.config, body, _num_predict(body))
    if body.get("stream") is False:
        message = {"role": "assistant", "content": gen.text}
        return gin_json(200, _ollama_done(model, gen, {"message": message}))

    def parts() -> Iterator[dict]:
        for token in gen.tokens:
            message = {"role": "assistant", "content": token}
            yield {"model": model, "created_at": _now(), "message": message, "done": False}
        yield _ollama_done(model, gen, {"message": {"role": "assistant", "content": ""}})

    return ollama_stream(parts(), gen.interval)


@ollama_native
def ollama_embed(req: Request) -> Response:
    body = go_decode(req.raw, "api.EmbedRequest", {"model": GO_STR, "truncate": GO_BOOL, "options": GO_MAP})
    model = body.get("model") or ""
    if not model.strip():
        return gin_json(404, {"error": f"model '{model}' not found"})
    given = body.get("input")
    if isinstance(given, str):
        inputs = [given] if given else []
    elif isinstance(given, list) and all(isinstance(item, str) for item in given):
        inputs = given
    elif given is None:
        inputs = []
    else:
        return gin_json(400, {"error": "invalid input type"})
    if not ollama_serves(req.config, model):
        return gin_json(404, {"error": f"model '{model}' not found"})
    return gin_json(
        200,
        {
            "model": model,
            "embeddings": [[0.1, 0.2] for _ in inputs],
            "total_duration": 1,
            "load_duration": 1,
            "prompt_eval_count": len(inputs),
        },
    )


@ollama_native
def ollama_embeddings(req: Request) -> Response:
    body = go_decode(req.raw, "api.EmbeddingRequest", {"model": GO_STR, "prompt": GO_STR, "options": GO_MAP})
    model = body.get("model") or ""
    if not model.strip():
        return gin_json(400, {"error": "model is required"})
    if not ollama_serves(req.config, model):
        return gin_json(404, {"error": f'model "{model}" not found, try pulling it first'})
    return gin_json(200, {"embedding": [0.1, 0.2]})


@ollama_native
def ollama_show(req: Request) -> Response:
    body = go_decode(req.raw, "api.ShowRequest", {"model": GO_STR, "name": GO_STR, "verbose": GO_BOOL})
    model = body.get("model") or body.get("name") or ""
    if not model:
        return gin_json(400, {"error": "model is required"})
    if not ollama_serves(req.config, model):
        return gin_json(404, {"error": f"model '{model}' not found"})
    details = {"format": "gguf", "family": "standin", "parameter_size": "1M", "quantization_level": "Q4_0"}
    return gin_json(
        200,
        {
            "modelfile": "",
            "parameters": "",
            "template": "{{ .Prompt }}",
            "details": details,
            "model_info": {},
            "capabilities": ["completion"],
            "modified_at": _now(),
        },
    )


def _ollama_progress(steps: list[str]) -> Handler:
    """pull, push and create: progress lines streamed (by default) until {"status":"success"}."""

    @ollama_native
    def handler(req: Request) -> Response:
        fields = {"model": GO_STR, "name": GO_STR, "stream": GO_BOOL, "insecure": GO_BOOL, "from": GO_STR}
        body = go_decode(req.raw, "api.PullRequest", fields)
        if not (body.get("model") or body.get("name") or ""):
            return gin_json(400, {"error": "model is required"})
        if body.get("stream") is False:
            return gin_json(200, {"status": "success"})
        return ollama_stream([{"status": step} for step in [*steps, "success"]], req.config.interval)

    return handler


@ollama_native
def ollama_delete(req: Request) -> Response:
    body = go_decode(req.raw, "api.DeleteRequest", {"model": GO_STR, "name": GO_STR})
    model = body.get("model") or body.get("name") or ""
    if not ollama_serves(req.config, model):
        return gin_json(404, {"error": f"model '{model}' not found"})
    return Response(200)


@ollama_native
def ollama_copy(req: Request) -> Response:
    body = go_decode(req.raw, "api.CopyRequest", {"source": GO_STR, "destination": GO_STR})
    if not ollama_serves(req.config, body.get("source")):
        return gin_json(404, {"error": f'model "{body.get("source") or ""}" not found'})
    return Response(200)


def ollama_tags(req: Request) -> Response:
    details = {"format": "gguf", "family": "standin", "parameter_size": "1M", "quantization_level": "Q4_0"}
    models = [
        {
            "name": ollama_name(m),
            "model": ollama_name(m),
            "modified_at": _now(),
            "size": 1,
            "digest": "0" * 64,
            "details": details,
        }
        for m in req.config.models
    ]
    return gin_json(200, {"models": models})


OAI_STREAM_FIELDS = {
    "model": GO_STR,
    "stream": GO_BOOL,
    "max_tokens": GO_INT,
    "stream_options": (dict, "openai.StreamOptions"),
}


def _ollama_openai_reply(whole: dict | None, chunks: Iterator[dict] | None, interval: float) -> Response:
    """Ollama's /v1 answer: one JSON body, or an SSE stream when the request asked for one."""
    if whole is not None:
        return Response(200, _json(whole), "application/json")
    return Response(200, content_type="text/event-stream", chunks=sse(chunks or []), interval=interval)


@ollama_openai
def ollama_v1_chat(req: Request) -> Response:
    fields = {**OAI_STREAM_FIELDS, "messages": _go_list("[]openai.Message")}
    body = go_decode(req.raw, "openai.ChatCompletionRequest", fields)
    if not body.get("messages"):
        return ollama_openai_error(400, "[] is too short - 'messages'")
    model = body.get("model") or ""
    if not model.strip():
        return ollama_openai_error(400, "model is required")
    if not ollama_serves(req.config, model):
        return ollama_openai_error(404, f"model '{model}' not found")
    gen = generation(req.config, body, _openai_limit(body))
    extra = {"system_fingerprint": "fp_ollama"}
    whole, chunks = openai_chat(gen, model, body.get("stream") is True, _include_usage(body), extra)
    return _ollama_openai_reply(whole, chunks, gen.interval)


@ollama_openai
def ollama_v1_completion(req: Request) -> Response:
    body = go_decode(req.raw, "openai.CompletionRequest", {**OAI_STREAM_FIELDS, "prompt": GO_STR})
    model = body.get("model") or ""
    if not ollama_serves(req.config, model):
        return ollama_openai_error(404, f"model '{model}' not found")
    gen = generation(req.config, body, _openai_limit(body))
    extra = {"system_fingerprint": "fp_ollama"}
    whole, chunks = openai_completion(gen, model, body.get("stream") is True, _include_usage(body), extra)
    return _ollama_openai_reply(whole, chunks, gen.interval)


@ollama_openai
def ollama_v1_embeddings(req: Request) -> Response:
    body = go_decode(req.raw, "openai.EmbedRequest", {"model": GO_STR})
    if body.get("input") in (None, "", []):
        return ollama_openai_error(400, "invalid input")
    model = body.get("model") or ""
    if not ollama_serves(req.config, model):
        return ollama_openai_error(404, f"model '{model}' not found")
    data = [{"object": "embedding", "embedding": [0.1, 0.2], "index": 0}]
    usage = {"prompt_tokens": 1, "total_tokens": 1}
    return Response(
        200, _json({"object": "list", "data": data, "model": model, "usage": usage}), "application/json"
    )


def ollama_v1_models(req: Request) -> Response:
    data = [
        {"id": ollama_name(m), "object": "model", "created": int(time.time()), "owned_by": "library"}
        for m in req.config.models
    ]
    return Response(200, _json({"object": "list", "data": data}), "application/json")


def ollama_v1_model(req: Request) -> Response:
    model = req.path.rsplit("/", 1)[-1]
    if not ollama_serves(req.config, model):
        return ollama_openai_error(404, f"model '{model}' not found")
    card = {"id": ollama_name(model), "object": "model", "created": int(time.time()), "owned_by": "library"}
    return Response(200, _json(card), "application/json")


def _gin(payload: object) -> Handler:
    return lambda _req: gin_json(200, payload)


def _ollama_root(_req: Request) -> Response:
    return Response(200, b"Ollama is running", "text/plain; charset=utf-8")


# Mirrors the Ollama 0.12 REST API (server/routes.go GenerateRoutes) and its OpenAI-compatible /v1
# routes; gin registers no HEAD on its own, so only the HEAD routes Ollama declares exist.
OLLAMA: dict[str, dict[str, Handler]] = {
    "/": {"GET": _ollama_root, "HEAD": _ollama_root},
    "/api/version": {"GET": _gin({"version": "0.12.0-standin"}), "HEAD": _gin({"version": "0.12.0-standin"})},
    "/api/tags": {"GET": ollama_tags, "HEAD": ollama_tags},
    "/api/ps": {"GET": _gin({"models": []})},
    "/api/generate": {"POST": ollama_generate},
    "/api/chat": {"POST": ollama_chat},
    "/api/show": {"POST": ollama_show},
    "/api/embed": {"POST": ollama_embed},
    "/api/embeddings": {"POST": ollama_embeddings},
    "/api/pull": {
        "POST": _ollama_progress(["pulling manifest", "verifying sha256 digest", "writing manifest"])
    },
    "/api/push": {"POST": _ollama_progress(["retrieving manifest", "pushing manifest"])},
    "/api/create": {"POST": _ollama_progress(["gathering model components", "writing manifest"])},
    "/api/copy": {"POST": ollama_copy},
    "/api/delete": {"DELETE": ollama_delete},
    "/v1/models": {"GET": ollama_v1_models},
    "/v1/chat/completions": {"POST": ollama_v1_chat},
    "/v1/completions": {"POST": ollama_v1_completion},
    "/v1/embeddings": {"POST": ollama_v1_embeddings},
}
# Routes with one path parameter (gin's /api/blobs/:digest): prefix -> methods.
OLLAMA_PARAMS: dict[str, dict[str, Handler]] = {
    "/api/blobs/": {"HEAD": lambda _r: Response(200), "POST": lambda _r: Response(201)},
    "/v1/models/": {"GET": ollama_v1_model},
}


def ollama_not_found(_methods: list[str] | None) -> Response:
    # gin's serveError: a plain-text body; 405 where the path exists with other methods.
    if _methods:
        return Response(405, b"405 method not allowed", "text/plain")
    return Response(404, b"404 page not found", "text/plain")


# --- vLLM (vllm.entrypoints.openai.api_server: FastAPI/Starlette, served names only) -----------


def vllm_error(status: int, message: str, kind: str, param: str | None = None) -> Response:
    """vLLM's ErrorResponse: {"error": {message, type, param, code}}."""
    return starlette_json(
        status, {"error": {"message": message, "type": kind, "param": param, "code": status}}
    )


def vllm_validated(fields: dict[str, PyField]) -> Callable[[Callable[[Request, dict], Response]], Handler]:
    """FastAPI validation, then the model check every OpenAI route makes (serving_engine._check_model).

    vLLM replaces FastAPI's 422 with its own 400 (validation_exception_handler), and answers 404 for a
    model name it does not serve; a request without a model gets the served one.
    """

    def wrap(fn: Callable[[Request, dict], Response]) -> Handler:
        def handler(req: Request) -> Response:
            try:
                body = pydantic_decode(req.raw, {"model": ("str", False), **fields})
            except BadBody as exc:
                return vllm_error(400, str(exc), "Bad Request", exc.param)
            model = body.get("model")
            if model and model not in req.config.models:
                return vllm_error(404, f"The model `{model}` does not exist.", "NotFoundError")
            return fn(req, {**body, "model": model or req.config.models[0]})

        return handler

    return wrap


def _truthy(value: object) -> bool:
    return value in (True, 1, "true", "1", "yes")


OPENAI_STREAM_FIELDS: dict[str, PyField] = {
    "stream": ("bool", False),
    "max_tokens": ("int", False),
    "max_completion_tokens": ("int", False),
    "stream_options": ("dict", False),
}


def _vllm_sse(chunks: Iterator[dict] | None, interval: float) -> Response:
    return Response(
        200, content_type="text/event-stream; charset=utf-8", chunks=sse(chunks or []), interval=interval
    )


@vllm_validated({"messages": ("list", True), **OPENAI_STREAM_FIELDS})
def vllm_chat(req: Request, body: dict) -> Response:
    gen = generation(req.config, body, _openai_limit(body))
    whole, chunks = openai_chat(gen, body["model"], _truthy(body.get("stream")), _include_usage(body), {})
    return starlette_json(200, whole) if whole is not None else _vllm_sse(chunks, gen.interval)


@vllm_validated({"prompt": ("prompt", True), **OPENAI_STREAM_FIELDS})
def vllm_completion(req: Request, body: dict) -> Response:
    gen = generation(req.config, body, _openai_limit(body))
    whole, chunks = openai_completion(
        gen, body["model"], _truthy(body.get("stream")), _include_usage(body), {}
    )
    return starlette_json(200, whole) if whole is not None else _vllm_sse(chunks, gen.interval)


@vllm_validated({"input": ("prompt", True)})
def vllm_embeddings(_req: Request, body: dict) -> Response:
    data = [{"index": 0, "object": "embedding", "embedding": [0.1, 0.2]}]
    return starlette_json(
        200,
        {
            "id": "embd-standin",
            "object": "list",
            "created": int(time.time()),
            "model": body["model"],
            "data": data,
            "usage": {"prompt_tokens": 1, "total_tokens": 1},
        },
    )


@vllm_validated({"prompt": ("prompt", False), "messages": ("list", False)})
def vllm_tokenize(_req: Request, body: dict) -> Response:
    if body.get("prompt") is None and body.get("messages") is None:
        return vllm_error(400, "1 validation error:\n  prompt or messages: Field required", "Bad Request")
    return starlette_json(200, {"count": 3, "max_model_len": 2048, "tokens": [1, 2, 3], "token_strs": None})


@vllm_validated({"tokens": ("list", True)})
def vllm_detokenize(_req: Request, _body: dict) -> Response:
    return starlette_json(200, {"prompt": "stand-in"})


def vllm_invocations(req: Request) -> Response:
    """SageMaker's route: dispatched by the body's shape to chat or completions."""
    with contextlib.suppress(ValueError):
        body = json.loads(req.raw or b"{}")
        if isinstance(body, dict) and "messages" in body:
            return vllm_chat(req)
        if isinstance(body, dict) and "prompt" in body:
            return vllm_completion(req)
    return vllm_error(400, "Cannot find suitable handler for request", "Bad Request")


def vllm_models(req: Request) -> Response:
    data = [
        {
            "id": m,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "vllm",
            "root": m,
            "parent": None,
            "max_model_len": 2048,
            "permission": [],
        }
        for m in req.config.models
    ]
    return starlette_json(200, {"object": "list", "data": data})


def _starlette(payload: object | None = None) -> Handler:
    return lambda _req: Response(200) if payload is None else starlette_json(200, payload)


# Mirrors the vLLM 0.11 OpenAI-compatible server (vllm.entrypoints.openai.api_server), including the
# development and admin routes a gateway must never expose. FastAPI adds no HEAD to GET routes.
VLLM: dict[str, dict[str, Handler]] = {
    "/health": {"GET": _starlette()},
    "/version": {"GET": _starlette({"version": "0.11.0-standin"})},
    "/v1/models": {"GET": vllm_models},
    "/v1/chat/completions": {"POST": vllm_chat},
    "/v1/completions": {"POST": vllm_completion},
    "/v1/embeddings": {"POST": vllm_embeddings},
    "/tokenize": {"POST": vllm_tokenize},
    "/detokenize": {"POST": vllm_detokenize},
    "/invocations": {"POST": vllm_invocations},
    "/pause": {"POST": _starlette()},
    "/resume": {"POST": _starlette()},
    "/sleep": {"POST": _starlette()},
    "/wake_up": {"POST": _starlette()},
    "/reset_prefix_cache": {"POST": _starlette()},
    "/update_weights": {"POST": _starlette()},
    "/collective_rpc": {"POST": _starlette({"results": []})},
    "/v1/load_lora_adapter": {"POST": _starlette()},
    "/v1/unload_lora_adapter": {"POST": _starlette()},
}


def vllm_not_found(methods: list[str] | None) -> Response:
    # Starlette's router raises HTTPException, which FastAPI's default handler answers.
    if methods:
        return starlette_json(405, {"detail": "Method Not Allowed"}, {"Allow": ", ".join(methods)})
    return starlette_json(404, {"detail": "Not Found"})


APIS: dict[str, tuple[dict[str, dict[str, Handler]], dict[str, dict[str, Handler]], Callable]] = {
    "ollama": (OLLAMA, OLLAMA_PARAMS, ollama_not_found),
    "vllm": (VLLM, {}, vllm_not_found),
}


def route(config: Config, method: str, path: str, raw: bytes = b"") -> Response:
    exact, params, not_found = APIS[config.api]
    path = path.split("?", 1)[0]
    methods = exact.get(path)
    if methods is None:
        methods = next(
            (
                m
                for prefix, m in params.items()
                if path.startswith(prefix) and path[len(prefix) :] and "/" not in path[len(prefix) :]
            ),
            None,
        )
    if methods is None:
        return not_found(None)
    handler = methods.get(method)
    if handler is None:
        return not_found(sorted(methods))
    return handler(Request(config, method, path, raw))


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


_LOG_LOCK = threading.Lock()


def log_line(entry: dict) -> None:
    """One JSON line per request on stdout (the journal), never interleaved between threads."""
    with _LOG_LOCK:
        sys.stdout.write(json.dumps(entry) + "\n")
        sys.stdout.flush()


class BadRequest(Exception):
    """A request the HTTP layer itself refuses (400, connection closed)."""


def make_handler(api: str, config: Config | None = None) -> type[BaseHTTPRequestHandler]:
    config = config or Config(api)

    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.1 as the engines speak it: keep-alive by default, Content-Length on whole replies,
        # chunked transfer encoding on streamed ones (Go's net/http and uvicorn do the same).
        protocol_version = "HTTP/1.1"
        # TCP_NODELAY, as Go's net/http and uvicorn (asyncio) set it: with Nagle on, a reply's body
        # waits for the ACK of its headers, which the peer delays by 40 ms, on every request.
        disable_nagle_algorithm = True
        server_version = f"{api}-standin"
        # Idle keep-alive limit (uvicorn's --timeout-keep-alive for vLLM; Go's server has none).
        timeout = config.keepalive_timeout

        def setup(self) -> None:
            super().setup()
            self.requests_on_connection = 0

        def _read_body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                parts = []
                while True:
                    size_line = self.rfile.readline(65537)
                    try:
                        size = int(size_line.split(b";", 1)[0].strip(), 16)
                    except ValueError:
                        raise BadRequest("bad chunk size") from None
                    if size == 0:
                        while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return b"".join(parts)
                    parts.append(self.rfile.read(size))
                    self.rfile.readline(3)
            length = self.headers.get("Content-Length")
            if length is None:
                return b""
            if not length.strip().isdigit():
                raise BadRequest("bad Content-Length")
            return self.rfile.read(int(length))

        def _handle(self) -> None:
            self.requests_on_connection += 1
            try:
                raw = self._read_body()
            except BadRequest:
                self.close_connection = True
                self._send(Response(400, b"400 Bad Request", "text/plain; charset=utf-8"))
                return
            if api == "ollama" and self.request_version == "HTTP/1.1" and "Host" not in self.headers:
                # Go's net/http refuses an HTTP/1.1 request without Host before any handler runs.
                self.close_connection = True
                body = b"400 Bad Request: missing required Host header"
                self._send(Response(400, body, "text/plain; charset=utf-8", {"Connection": "close"}))
                return
            refused = (
                ollama_host_check(self.server.server_address[0], self.headers.get("Host", ""), self.command)
                if api == "ollama"
                else None
            )
            if refused is not None:
                # gin's AbortWithStatus: the status alone, no body, no Content-Type.
                self._send(Response(refused))
                return
            self._send(route(config, self.command, self.path, raw))

        def _send(self, response: Response) -> None:
            self.send_response(response.status)
            if response.content_type:
                self.send_header("Content-Type", response.content_type)
            for name, value in response.headers.items():
                self.send_header(name, value)
            entry: dict[str, object] = {}
            if response.chunks is None:
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(response.body)
            else:
                entry = self._stream(response)
            self._log(response.status, entry)

        def _stream(self, response: Response) -> dict[str, object]:
            chunked = self.request_version == "HTTP/1.1"
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:  # an HTTP/1.0 client: the end of the body is the end of the connection
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            sent = 0
            try:
                for chunk in response.chunks or ():
                    if sent:
                        time.sleep(response.interval)
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                    sent += 1
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                # The client (or the gateway) went away mid-stream: the engine stops generating.
                self.close_connection = True
                return {"chunks": sent, "aborted": True}
            return {"chunks": sent}

        def _log(self, status: int, extra: dict[str, object]) -> None:
            # What the gateway is answerable for, as received: the key's presence, never its value;
            # and how many requests this connection carried (above 1: the gateway kept it alive).
            log_line(
                {
                    "method": self.command,
                    "path": self.path,
                    "status": status,
                    # The gateway's id for the request (GW-08): the same in its log and its reply.
                    "request_id": self.headers.get("X-Request-ID"),
                    "host": self.headers.get("Host"),
                    "x_forwarded_for": self.headers.get("X-Forwarded-For"),
                    "x_real_ip": self.headers.get("X-Real-IP"),
                    "authorization": "Authorization" in self.headers,
                    "connection_request": self.requests_on_connection,
                    **extra,
                }
            )

        do_GET = do_POST = do_DELETE = do_HEAD = do_PUT = do_PATCH = do_OPTIONS = _handle

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            return  # one JSON line per request is printed by _log instead

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # Idle keep-alive connections must not hold up shutdown.
    block_on_close = False


DEFAULT_PORTS = {"ollama": 11434, "vllm": 8000}
# uvicorn's --timeout-keep-alive default, which vLLM keeps; Go's http.Server (Ollama) sets none.
DEFAULT_KEEPALIVE = {"ollama": 0.0, "vllm": 5.0}


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
    parser.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help="comma-separated model names served; others get the engine's 404",
    )
    parser.add_argument(
        "--stream-tokens",
        type=int,
        default=5,
        help="tokens a generation yields when the request sets no limit",
    )
    parser.add_argument("--stream-interval", type=float, default=0.2, help="seconds between streamed tokens")
    parser.add_argument(
        "--keepalive-timeout",
        type=float,
        help="seconds an idle connection is kept (0: forever); default as the engine",
    )
    # vLLM's media restrictions, which the engine role adds to a vLLM command line: accepted, so the
    # stand-in starts under the same ExecStart=, and reported; it fetches no media anyway.
    parser.add_argument("--allowed-media-domains", nargs="+")
    parser.add_argument("--allowed-local-media-path")
    args = parser.parse_args(argv)
    host, port = listen_address(args.api, args.host, args.port, dict(os.environ))
    keepalive = DEFAULT_KEEPALIVE[args.api] if args.keepalive_timeout is None else args.keepalive_timeout
    config = Config(
        api=args.api,
        models=tuple(name.strip() for name in args.models.split(",") if name.strip()) or DEFAULT_MODELS,
        tokens=max(1, min(args.stream_tokens, MAX_TOKENS)),
        interval=max(0.0, min(args.stream_interval, MAX_INTERVAL)),
        keepalive_timeout=keepalive or None,
    )
    server = Server((host, port), make_handler(args.api, config))
    started: dict[str, object] = {
        "listening": f"{host}:{port}",
        "api": args.api,
        "models": list(config.models),
    }
    if args.allowed_media_domains is not None:
        started["allowed_media_domains"] = args.allowed_media_domains
    log_line(started)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
