"""What localguard knows about each inference engine: one table, read by every role.

The firewall binds its egress lockdown to the engine's account, the engine role sandboxes its
unit and binds it to loopback, and the gateway (later) allowlists its endpoints: all from here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Engine:
    kind: str
    account: str
    unit: str
    port: int
    # How the engine is told where to listen: command-line flags, or an environment variable.
    host_flag: str | None
    port_flag: str | None
    listen_env: str | None
    # Environment that turns the engine's (and Hugging Face's) telemetry and downloads off.
    telemetry_env: tuple[tuple[str, str], ...]
    # "METHOD /path" routes the gateway forwards; everything else is refused (deny by default).
    allowed_routes: tuple[str, ...] = ()
    # Dangerous routes the engine really has (model management, weights, admin): named so tests
    # prove each one refused. The gateway does not need them: it allows only allowed_routes.
    blocked_routes: tuple[str, ...] = ()
    # JIT compilers (vLLM's torch.compile/Triton) need writable+executable memory.
    needs_wx_memory: bool = False


COMMON_ENV = (("HF_HUB_OFFLINE", "1"), ("HF_HUB_DISABLE_TELEMETRY", "1"), ("DO_NOT_TRACK", "1"))

OPENAI_ROUTES = ("GET /v1/models", "POST /v1/chat/completions", "POST /v1/completions", "POST /v1/embeddings")

ENGINES = {
    e.kind: e
    for e in (
        Engine(
            "llama_cpp", "llama", "llama-server.service", 8080, "--host", "--port", None, COMMON_ENV,
            allowed_routes=OPENAI_ROUTES,
            blocked_routes=("GET /slots", "POST /slots/0", "GET /props", "POST /props", "GET /docs",
                            "GET /openapi.json", "POST /extras/tokenize"),
        ),
        Engine(
            "ollama", "ollama", "ollama.service", 11434, None, None, "OLLAMA_HOST", COMMON_ENV,
            allowed_routes=("POST /api/generate", "POST /api/chat", "GET /api/tags", "POST /api/show",
                            "POST /api/embed", "POST /api/embeddings", "GET /api/version", *OPENAI_ROUTES),
            blocked_routes=("POST /api/pull", "POST /api/create", "POST /api/push", "DELETE /api/delete",
                            "POST /api/copy", "POST /api/blobs/sha256:0", "HEAD /api/blobs/sha256:0",
                            "GET /api/ps"),
        ),
        Engine(
            "vllm", "vllm", "vllm.service", 8000, "--host", "--port", None,
            (*COMMON_ENV, ("VLLM_NO_USAGE_STATS", "1"), ("VLLM_DO_NOT_TRACK", "1")),
            allowed_routes=(*OPENAI_ROUTES, "POST /tokenize", "POST /detokenize", "GET /health",
                            "GET /version"),
            blocked_routes=("POST /update_weights", "POST /collective_rpc", "POST /pause", "POST /resume",
                            "POST /sleep", "POST /wake_up", "POST /reset_prefix_cache", "POST /invocations",
                            "POST /v1/load_lora_adapter", "POST /v1/unload_lora_adapter"),
            needs_wx_memory=True,
        ),
        Engine(
            "tgi", "tgi", "tgi.service", 8080, "--hostname", "--port", None,
            (*COMMON_ENV, ("USAGE_STATS", "off")),
            allowed_routes=("POST /generate", "POST /generate_stream", "GET /info", "GET /health",
                            *OPENAI_ROUTES),
            blocked_routes=("POST /invocations", "GET /metrics"),
        ),
    )
}  # fmt: skip


def routes(kind: str) -> list[dict[str, str]]:
    """The gateway's allowlist as (method, path) pairs, for templates."""
    return [
        dict(zip(("method", "path"), route.split(" ", 1), strict=True))
        for route in engine(kind).allowed_routes
    ]


def engine(kind: str) -> Engine:
    try:
        return ENGINES[kind]
    except KeyError:
        raise ValueError(f"unknown engine '{kind}'; localguard knows {', '.join(sorted(ENGINES))}") from None


def listen_args(kind: str, port: int, address: str = "127.0.0.1") -> list[str]:
    """Command-line flags that make the engine listen on `address` only."""
    spec = engine(kind)
    if spec.host_flag is None or spec.port_flag is None:
        return []
    return [spec.host_flag, address, spec.port_flag, str(port)]


def listen_env(kind: str, port: int, address: str = "127.0.0.1") -> dict[str, str]:
    spec = engine(kind)
    return {spec.listen_env: f"{address}:{port}"} if spec.listen_env else {}


def as_dict(kind: str) -> dict:
    return asdict(engine(kind))
