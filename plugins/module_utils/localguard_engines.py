# Copyright (c) 2026, localguard contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""What localguard knows about each inference engine: one table, read by every role.

The firewall binds its egress lockdown to the engine's account, the engine role sandboxes its
unit and binds it to loopback, and the gateway (later) allowlists its endpoints: all from here.
"""

from __future__ import annotations

import re
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
    # prove each one refused. The gateway refuses them like any route off allowed_routes, and
    # flags them in its log (denied_patterns) so an alert can tell a probe for them from a typo.
    # A path ending in an example parameter (a number, a sha256: digest) stands for every path
    # under its parent: "/slots/0" is any slot.
    blocked_routes: tuple[str, ...] = ()
    # JIT compilers (vLLM's torch.compile/Triton) need writable+executable memory.
    needs_wx_memory: bool = False
    # Where the engine keeps the models it serves, when an environment variable says so: pointed
    # at engine_model_dir, which the unit mounts read-only, instead of a store under its
    # writable state directory (Ollama's default is $HOME/.ollama/models).
    models_env: str | None = None
    # Environment that narrows what a request (or start-up) can make the engine do.
    hardening_env: tuple[tuple[str, str], ...] = ()
    # Flags that let a request body reach past the sandbox: refused in engine_command.
    forbidden_flags: tuple[tuple[str, str], ...] = ()
    # Flags by which the role restricts the URLs and files a request may make the engine load
    # (vLLM's multimodal inputs); set from engine_vllm_allowed_media_domains/_local_media_path.
    media_domains_flag: str | None = None
    local_media_flag: str | None = None


COMMON_ENV = (("HF_HUB_OFFLINE", "1"), ("HF_HUB_DISABLE_TELEMETRY", "1"), ("DO_NOT_TRACK", "1"))

# vLLM reads a media URL only if its host is listed in --allowed-media-domains, but an empty list
# means "any host" (MediaConnector._assert_url_in_allowed_media_domains). A name under .invalid
# (RFC 6761) never resolves, so listing only it lets no URL through while data: URLs still work.
NO_MEDIA_DOMAIN = "media.invalid"

VLLM_REQUEST_FLAGS = (
    ("--trust-request-chat-template", "lets a request supply its own chat template (CVE-2025-61620)"),
    ("--enable-prompt-embeds", "lets a request send raw prompt embeddings (CVE-2025-62164)"),
    ("--config", "loads flags from a file the role cannot check; put them in engine_command"),
)

OPENAI_ROUTES = ("GET /v1/models", "POST /v1/chat/completions", "POST /v1/completions", "POST /v1/embeddings")

ENGINES = {
    e.kind: e
    for e in (
        Engine(
            "llama_cpp", "llama", "llama-server.service", 8080, "--host", "--port", None, COMMON_ENV,
            allowed_routes=OPENAI_ROUTES,
            blocked_routes=("GET /slots", "POST /slots/0", "GET /props", "POST /props", "GET /docs",
                            "GET /openapi.json", "POST /extras/tokenize", "GET /lora-adapters",
                            "POST /lora-adapters"),
        ),
        Engine(
            "ollama", "ollama", "ollama.service", 11434, None, None, "OLLAMA_HOST", COMMON_ENV,
            allowed_routes=("POST /api/generate", "POST /api/chat", "GET /api/tags", "POST /api/show",
                            "POST /api/embed", "POST /api/embeddings", "GET /api/version", *OPENAI_ROUTES),
            blocked_routes=("POST /api/pull", "POST /api/create", "POST /api/push", "DELETE /api/delete",
                            "POST /api/copy", "POST /api/blobs/sha256:0", "HEAD /api/blobs/sha256:0",
                            "GET /api/ps"),
            models_env="OLLAMA_MODELS",
            # The store is read-only: pruning at start-up would only fail to delete from it.
            hardening_env=(("OLLAMA_NOPRUNE", "1"),),
        ),
        Engine(
            "vllm", "vllm", "vllm.service", 8000, "--host", "--port", None,
            (*COMMON_ENV, ("VLLM_NO_USAGE_STATS", "1"), ("VLLM_DO_NOT_TRACK", "1")),
            allowed_routes=(*OPENAI_ROUTES, "POST /tokenize", "POST /detokenize", "GET /health",
                            "GET /version"),
            blocked_routes=("POST /update_weights", "POST /collective_rpc", "POST /pause", "POST /resume",
                            "POST /sleep", "POST /wake_up", "POST /reset_prefix_cache", "POST /invocations",
                            "POST /v1/load_lora_adapter", "POST /v1/unload_lora_adapter",
                            "POST /start_profile", "POST /stop_profile"),
            needs_wx_memory=True,
            # Redirects could lead a fetch off the allowed domains in versions that check only the
            # first URL; newer ones also refuse private and loopback destinations when asked.
            hardening_env=(("VLLM_MEDIA_URL_ALLOW_REDIRECTS", "0"), ("VLLM_MEDIA_EGRESS_BLOCK_PRIVATE", "1")),
            forbidden_flags=VLLM_REQUEST_FLAGS,
            media_domains_flag="--allowed-media-domains",
            local_media_flag="--allowed-local-media-path",
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


# Route classes an API key may be scoped to (the key registry's `scopes`): what a caller can do
# with a route, whatever the engine names it.
SCOPES = ("chat", "completions", "embeddings", "models", "tokenize", "health")

# The class of every path on any engine's allowlist. A path missing here stops the gateway's
# template (routes() raises), so a new route cannot slip past scoped keys unclassified.
ROUTE_SCOPES = {
    "/v1/chat/completions": "chat",
    "/api/chat": "chat",
    "/v1/completions": "completions",
    "/api/generate": "completions",
    "/generate": "completions",
    "/generate_stream": "completions",
    "/v1/embeddings": "embeddings",
    "/api/embed": "embeddings",
    "/api/embeddings": "embeddings",
    "/v1/models": "models",
    "/api/tags": "models",
    "/api/show": "models",
    "/info": "models",
    "/tokenize": "tokenize",
    "/detokenize": "tokenize",
    "/health": "health",
    "/version": "health",
    "/api/version": "health",
}


def route_scope(path: str) -> str:
    """The class of an allowed route's path, for per-key scopes."""
    try:
        return ROUTE_SCOPES[path]
    except KeyError:
        raise ValueError(f"route {path} has no class in ROUTE_SCOPES; scoped API keys need one") from None


def routes(kind: str) -> list[dict[str, str]]:
    """The gateway's allowlist as method, path and class (`scope`), for templates."""
    allowed = []
    for route in engine(kind).allowed_routes:
        method, path = route.split(" ", 1)
        allowed.append({"method": method, "path": path, "scope": route_scope(path)})
    return allowed


# The last segment of a blocked route that is only an example of a parameter (see blocked_routes).
PATH_PARAMETER = re.compile(r"/(?:[0-9]+|sha256:[0-9a-f]+)$")
# What PCRE (nginx) would read as other than itself in a path; "/" and "-" mean themselves.
PCRE_SPECIAL = re.compile(r"([.^$*+?()\[\]{}|\\])")


def _pcre_literal(text: str) -> str:
    return PCRE_SPECIAL.sub(r"\\\1", text)


def denied_patterns(kind: str) -> list[str]:
    """nginx regexes (for `map $uri`) matching the engine's blocked routes, whatever the method.

    An exact path is anchored at both ends ("^/api/pull$"); a parameterised one is a prefix
    ("^/slots/" for "/slots/0"), so a probe for another slot or blob is flagged as well.
    """
    patterns = set()
    for route in engine(kind).blocked_routes:
        path = route.split(" ", 1)[1].split("?", 1)[0]
        parameter = PATH_PARAMETER.search(path)
        if parameter:
            patterns.add("^" + _pcre_literal(path[: parameter.start()]) + "/")
        else:
            patterns.add("^" + _pcre_literal(path) + "$")
    return sorted(patterns)


def engine(kind: str) -> Engine:
    try:
        return ENGINES[kind]
    except KeyError:
        raise ValueError(f"unknown engine '{kind}'; localguard knows {', '.join(sorted(ENGINES))}") from None


def loopback_port(kind: str, port: int | str | None = 0) -> int:
    """The engine's loopback port: the operator's `localguard_engine_port`, else the engine's usual one.

    The engine binds it, the gateway proxies to it and the firewall guards it: one answer for all three.
    """
    chosen = int(port or 0)
    if not 0 <= chosen <= 65535:
        raise ValueError(f"localguard_engine_port: {chosen} is not a TCP port")
    return chosen or engine(kind).port


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


def managed_env(kind: str, port: int, model_dir: str) -> dict[str, str]:
    """Every variable the role sets in the engine's environment; engine_extra_environment may set none."""
    spec = engine(kind)
    env = {**dict(spec.telemetry_env), **dict(spec.hardening_env), **listen_env(kind, port)}
    if spec.models_env:
        env[spec.models_env] = model_dir
    return env


def media_args(kind: str, domains: list[str] | None = None, local_path: str | None = "") -> list[str]:
    """Flags that keep request bodies from making the engine fetch URLs or read files at will."""
    spec = engine(kind)
    args = []
    if spec.media_domains_flag:
        args += [spec.media_domains_flag, *(domains or [NO_MEDIA_DOMAIN])]
    if spec.local_media_flag and local_path:
        args += [spec.local_media_flag, local_path]
    return args


# Whatever the engine, these name where it listens: the role adds them (or the engine's listen env).
LISTEN_FLAGS = ("--host", "--port", "--hostname")
# A proxy on loopback would carry the engine's traffic past IPAddressDeny= and the firewall.
PROXY_ENV = ("http_proxy", "https_proxy", "all_proxy", "ftp_proxy")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A line break ends the drop-in's Environment=/ExecStart= line: what follows would be read as a
# directive of its own (ExecStartPre=+..., User=root).
UNIT_BREAKING = re.compile(r"[\x00-\x1f\x7f]")
HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")


def _flag_name(token: str) -> str | None:
    """The long option a command-line token sets (`--a_b=1` -> `--a-b`), as vLLM's parser reads it."""
    if not token.startswith("--") or token == "--":
        return None
    return "--" + token[2:].split("=", 1)[0].replace("_", "-")


def _matches(name: str, flag: str) -> bool:
    # argparse (vLLM, llama-cpp-python) takes any unambiguous prefix of a long option.
    return flag.startswith(name)


def _env_problems(spec: Engine, extra_environment: dict) -> list[str]:
    owned = {name: "telemetry and hub downloads off (EN-04)" for name, _value in spec.telemetry_env}
    owned |= {name: "what requests can make the engine do" for name, _value in spec.hardening_env}
    if spec.listen_env:
        owned[spec.listen_env] = "the loopback-only bind (EN-02)"
    if spec.models_env:
        owned[spec.models_env] = "the read-only model store; set engine_model_dir instead"
    owned["HOME"] = "the engine's home in its own state directory"
    found = []
    for name, value in extra_environment.items():
        name = str(name)
        if not ENV_NAME.fullmatch(name):
            found.append(f"engine_extra_environment: {name!r} is not an environment variable name")
        elif name in owned:
            found.append(f"engine_extra_environment: {name} is set by the role ({owned[name]})")
        elif name.lower() in PROXY_ENV:
            found.append(
                f"engine_extra_environment: {name} would send the engine's traffic through a proxy, "
                "past its loopback-only network (EN-03)"
            )
        elif UNIT_BREAKING.search(str(value)) or '"' in str(value) or "\\" in str(value):
            found.append(
                f"engine_extra_environment: {name} holds a line break, control character, quote or "
                "backslash, which would break out of the unit's Environment= line"
            )
    return found


def _command_problems(spec: Engine, command: list) -> list[str]:
    # The role passes these from its own variables, after checking them.
    own = {
        spec.media_domains_flag: "engine_vllm_allowed_media_domains",
        spec.local_media_flag: "engine_vllm_allowed_local_media_path",
    }
    own.pop(None, None)
    found = []
    for index, token in enumerate(map(str, command)):
        if UNIT_BREAKING.search(token):
            found.append(
                f"engine_command: item {index} holds a line break or control character, which would "
                "end the unit's ExecStart= line"
            )
            continue
        name = _flag_name(token)
        if name is None:
            continue
        for flag in LISTEN_FLAGS + tuple(f for f in (spec.host_flag, spec.port_flag) if f):
            if _matches(name, flag):
                found.append(
                    f"engine_command: {token} sets where the engine listens; the role adds loopback-only "
                    "listen settings itself (EN-02)"
                )
                break
        for flag, why in spec.forbidden_flags:
            if _matches(name, flag):
                found.append(f"engine_command: {token} is refused for {spec.kind}: it {why}")
        for flag, variable in own.items():
            if _matches(name, flag):
                found.append(f"engine_command: {token} is set by the role from {variable}; set that instead")
    return found


def problems(
    kind: str,
    command: list | None,
    extra_environment: dict | None,
    media_domains: list | None = None,
    local_media_path: str | None = "",
) -> list[str]:
    """What in the operator's engine settings would reopen what the role closes; empty if nothing.

    Each message names the variable and the key or flag, for a preflight that fails before any host
    changes.
    """
    spec = engine(kind)
    found = _env_problems(spec, dict(extra_environment or {})) + _command_problems(spec, list(command or []))
    for domain in media_domains or []:
        if not HOSTNAME.fullmatch(str(domain)):
            found.append(
                f"engine_vllm_allowed_media_domains: {domain!r} is not a host name (no scheme, port or path)"
            )
    path = str(local_media_path or "")
    if path and (not path.startswith("/") or UNIT_BREAKING.search(path)):
        found.append(f"engine_vllm_allowed_local_media_path: {path!r} is not an absolute path")
    return found
