import re
from pathlib import Path

import pytest
import yaml
from ansible_collections.localguard.hardening.plugins.module_utils.localguard_engines import (
    ENGINES,
    SCOPES,
    denied_patterns,
    engine,
    listen_args,
    listen_env,
    loopback_port,
    managed_env,
    media_args,
    problems,
    route_scope,
    routes,
)
from dangerous_routes import NEVER_ALLOWED, path_of


def test_every_engine_listens_on_loopback_one_way_or_another():
    for kind in ENGINES:
        args, env = listen_args(kind, 1234), listen_env(kind, 1234)
        assert ("127.0.0.1" in args and "1234" in args) or env == {ENGINES[kind].listen_env: "127.0.0.1:1234"}


def test_flags_and_environment_per_engine():
    assert listen_args("llama_cpp", 8080) == ["--host", "127.0.0.1", "--port", "8080"]
    assert listen_args("tgi", 8080) == ["--hostname", "127.0.0.1", "--port", "8080"]
    assert listen_args("ollama", 11434) == []
    assert listen_env("ollama", 11434) == {"OLLAMA_HOST": "127.0.0.1:11434"}


def test_telemetry_off_everywhere_and_engine_specific_switches():
    for spec in ENGINES.values():
        env = dict(spec.telemetry_env)
        assert env["HF_HUB_OFFLINE"] == "1" and env["HF_HUB_DISABLE_TELEMETRY"] == "1"
    assert dict(engine("vllm").telemetry_env)["VLLM_NO_USAGE_STATS"] == "1"
    assert dict(engine("tgi").telemetry_env)["USAGE_STATS"] == "off"


def test_unknown_engine_is_named():
    with pytest.raises(ValueError, match="unknown engine 'triton'"):
        engine("triton")


def test_loopback_port_is_the_operators_or_the_engines_usual_one():
    assert loopback_port("ollama") == 11434
    assert loopback_port("ollama", 0) == 11434
    assert loopback_port("vllm", "8100") == 8100
    with pytest.raises(ValueError, match="localguard_engine_port: 70000"):
        loopback_port("vllm", 70000)


# Expectations below are written out, not read from ENGINES: a test that took them from the table
# would pass whatever the table said.
def test_managed_env_covers_bind_telemetry_model_store_and_request_limits():
    ollama = managed_env("ollama", 11434, "/opt/models")
    assert ollama["OLLAMA_HOST"] == "127.0.0.1:11434"
    assert ollama["OLLAMA_MODELS"] == "/opt/models"
    assert ollama["OLLAMA_NOPRUNE"] == "1"
    assert ollama["HF_HUB_OFFLINE"] == "1"
    vllm = managed_env("vllm", 8000, "/opt/models")
    assert vllm["VLLM_MEDIA_URL_ALLOW_REDIRECTS"] == "0"
    assert vllm["VLLM_NO_USAGE_STATS"] == "1"
    assert "OLLAMA_MODELS" not in vllm


def test_vllm_fetches_no_media_url_unless_told():
    # vLLM treats an empty --allowed-media-domains as "any host": the role must never pass it empty.
    assert media_args("vllm") == ["--allowed-media-domains", "media.invalid"]
    assert media_args("vllm", [], "") == ["--allowed-media-domains", "media.invalid"]
    assert media_args("vllm", ["img.example.com", "cdn.example.com"], "/srv/media") == [
        "--allowed-media-domains", "img.example.com", "cdn.example.com",
        "--allowed-local-media-path", "/srv/media",
    ]  # fmt: skip
    assert media_args("ollama", ["img.example.com"], "/srv/media") == []


VLLM_SERVE = ["/opt/vllm/bin/vllm", "serve", "/opt/models/m"]


def test_sane_settings_pass():
    assert problems("vllm", [*VLLM_SERVE, "--max-model-len", "4096", "--no-enable-prompt-embeds"], {}) == []
    assert problems("ollama", ["/usr/bin/ollama", "serve"], {"OLLAMA_KEEP_ALIVE": "10m"}) == []
    assert (
        problems("llama_cpp", ["llama-server", "-m", "/opt/models/m.gguf"], {"CUDA_VISIBLE_DEVICES": "0"})
        == []
    )
    assert problems("vllm", VLLM_SERVE, {}, ["img.example.com"], "/srv/media") == []


@pytest.mark.parametrize(
    ("kind", "env", "words"),
    [
        ("ollama", {"OLLAMA_HOST": "0.0.0.0"}, "engine_extra_environment: OLLAMA_HOST is set by the role"),
        ("ollama", {"OLLAMA_MODELS": "/var/x"}, "engine_extra_environment: OLLAMA_MODELS is set by the role"),
        ("ollama", {"OLLAMA_NOPRUNE": "0"}, "engine_extra_environment: OLLAMA_NOPRUNE is set by the role"),
        ("vllm", {"HF_HUB_OFFLINE": "0"}, "engine_extra_environment: HF_HUB_OFFLINE is set by the role"),
        ("vllm", {"VLLM_NO_USAGE_STATS": "0"}, "engine_extra_environment: VLLM_NO_USAGE_STATS"),
        ("vllm", {"VLLM_MEDIA_URL_ALLOW_REDIRECTS": "1"}, "engine_extra_environment: VLLM_MEDIA_URL_ALLOW"),
        ("tgi", {"USAGE_STATS": "on"}, "engine_extra_environment: USAGE_STATS is set by the role"),
        ("llama_cpp", {"DO_NOT_TRACK": "0"}, "engine_extra_environment: DO_NOT_TRACK is set by the role"),
        ("llama_cpp", {"HOME": "/root"}, "engine_extra_environment: HOME is set by the role"),
        ("vllm", {"HTTPS_PROXY": "http://127.0.0.1:3"}, "engine_extra_environment: HTTPS_PROXY would send"),
        ("vllm", {"all_proxy": "socks5://127.0.0.1:1080"}, "engine_extra_environment: all_proxy would send"),
        ("ollama", {"X": 'a"\nExecStartPre=+/bin/sh'}, "engine_extra_environment: X holds a line break"),
        ("ollama", {"BAD NAME": "1"}, "engine_extra_environment: 'BAD NAME' is not an environment variable"),
    ],
)  # fmt: skip
def test_environment_that_reopens_the_sandbox_is_refused(kind, env, words):
    command = VLLM_SERVE if kind == "vllm" else ["/usr/bin/engine"]
    found = problems(kind, command, env)
    assert len(found) == 1 and found[0].startswith(words), found


@pytest.mark.parametrize(
    ("kind", "token", "words"),
    [
        ("vllm", "--trust-request-chat-template", "CVE-2025-61620"),
        ("vllm", "--trust_request_chat_template", "CVE-2025-61620"),  # vLLM reads _ as -
        ("vllm", "--enable-prompt-embeds", "CVE-2025-62164"),
        ("vllm", "--enable-prompt-embeds=true", "CVE-2025-62164"),
        ("vllm", "--enable-prompt-emb", "CVE-2025-62164"),  # argparse takes unambiguous prefixes
        ("vllm", "--config=/etc/vllm.yaml", "cannot check"),
        ("vllm", "--allowed-media-domains", "engine_vllm_allowed_media_domains"),
        ("vllm", "--allowed-local-media-path=/", "engine_vllm_allowed_local_media_path"),
        ("vllm", "--host", "sets where the engine listens"),
        ("vllm", "--port=8001", "sets where the engine listens"),
        ("llama_cpp", "--host=0.0.0.0", "sets where the engine listens"),
        ("tgi", "--hostname", "sets where the engine listens"),
        ("tgi", "--host", "sets where the engine listens"),
        # Ollama has no listen flags, but the stand-in (and any wrapper) would obey them over OLLAMA_HOST.
        ("ollama", "--host", "sets where the engine listens"),
    ],
)  # fmt: skip
def test_flags_that_reopen_the_sandbox_are_refused(kind, token, words):
    found = problems(kind, ["/usr/bin/engine", token, "value"], {})
    assert len(found) == 1, found
    assert found[0].startswith(f"engine_command: {token} ") and words in found[0], found


def test_vllm_only_flags_are_left_to_other_engines():
    assert problems("llama_cpp", ["llama-server", "--enable-prompt-embeds"], {}) == []


def test_line_break_in_the_command_is_refused():
    found = problems("llama_cpp", ["llama-server", "-m\nExecStartPre=+/bin/sh -c id"], {})
    assert found == [
        "engine_command: item 1 holds a line break or control character, which would end the unit's "
        "ExecStart= line"
    ]


def test_media_settings_are_checked():
    found = problems("vllm", VLLM_SERVE, {}, ["https://evil.example/x"], "relative/dir")
    assert [f.split(":", 1)[0] for f in found] == [
        "engine_vllm_allowed_media_domains",
        "engine_vllm_allowed_local_media_path",
    ]


def test_unknown_engine_in_problems_is_named():
    with pytest.raises(ValueError, match="unknown engine 'triton'"):
        problems("triton", [], {})


@pytest.mark.parametrize("kind", sorted(NEVER_ALLOWED))
def test_no_dangerous_route_is_on_any_allowlist(kind):
    allowed = {tuple(route.split(" ", 1)) for route in engine(kind).allowed_routes}
    assert [route for route in NEVER_ALLOWED[kind] if path_of(route) in allowed] == []


# --- route classes for per-key scopes ---------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(ENGINES))
def test_every_allowed_route_of_every_engine_has_a_class(kind):
    """A route without a class would stop the gateway's template; one with a made-up class would be
    reachable by no scoped key."""
    classes = {route["path"]: route["scope"] for route in routes(kind)}
    assert len(classes) == len(engine(kind).allowed_routes)
    assert {scope for scope in classes.values() if scope not in SCOPES} == set()


# Written out, not read from ROUTE_SCOPES: a key scoped to embeddings must not reach a chat route.
@pytest.mark.parametrize(
    ("path", "scope"),
    [
        ("/v1/chat/completions", "chat"), ("/api/chat", "chat"),
        ("/v1/completions", "completions"), ("/api/generate", "completions"),
        ("/generate_stream", "completions"),
        ("/v1/embeddings", "embeddings"), ("/api/embed", "embeddings"), ("/api/embeddings", "embeddings"),
        ("/v1/models", "models"), ("/api/tags", "models"),
        ("/tokenize", "tokenize"), ("/detokenize", "tokenize"),
        ("/health", "health"), ("/api/version", "health"),
    ],
)  # fmt: skip
def test_route_classes(path, scope):
    assert route_scope(path) == scope


def test_unclassified_route_is_named():
    with pytest.raises(ValueError, match="route /api/pull has no class"):
        route_scope("/api/pull")


def test_the_gateways_argument_specs_offer_exactly_the_route_classes():
    """scopes are validated against argument_specs choices before any host changes."""
    specs = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "roles/gateway/meta/argument_specs.yml").read_text()
    )
    scopes = specs["argument_specs"]["main"]["options"]["gateway_api_keys"]["options"]["scopes"]
    assert sorted(scopes["choices"]) == sorted(SCOPES)


# --- the gateway log's `denied` field (GW-08) -------------------------------------------------------


# Written out, not read from blocked_routes: the alert on admin routes must fire for these.
def test_denied_patterns_per_engine():
    assert denied_patterns("ollama") == [
        "^/api/blobs/", "^/api/copy$", "^/api/create$", "^/api/delete$", "^/api/ps$", "^/api/pull$",
        "^/api/push$",
    ]  # fmt: skip
    assert denied_patterns("llama_cpp") == [
        "^/docs$", "^/extras/tokenize$", "^/lora-adapters$", r"^/openapi\.json$", "^/props$", "^/slots$",
        "^/slots/",
    ]  # fmt: skip
    assert denied_patterns("tgi") == ["^/invocations$", "^/metrics$"]


@pytest.mark.parametrize("kind", sorted(NEVER_ALLOWED))
def test_every_dangerous_route_is_flagged_in_the_log(kind):
    """Each route tests/dangerous_routes.py names, query strings and parameters included, matches a
    pattern of the `map $uri $lg_denied` (nginx's PCRE reads these as Python's re does)."""
    patterns = [re.compile(p) for p in denied_patterns(kind)]
    paths = [path_of(route)[1] for route in NEVER_ALLOWED[kind]]
    assert [path for path in paths if not any(p.search(path) for p in patterns)] == []


@pytest.mark.parametrize("kind", sorted(ENGINES))
def test_no_allowed_route_is_flagged_as_denied(kind):
    patterns = [re.compile(p) for p in denied_patterns(kind)]
    paths = [route.split(" ", 1)[1] for route in engine(kind).allowed_routes]
    assert [path for path in paths if any(p.search(path) for p in patterns)] == []


@pytest.mark.parametrize(
    ("kind", "path", "flagged"),
    [
        ("ollama", "/api/pull", True), ("ollama", "/api/pull/", False), ("ollama", "/api/pullx", False),
        ("ollama", "/api/blobs/sha256:ffff", True), ("ollama", "/api/blobs", False),
        ("llama_cpp", "/slots", True), ("llama_cpp", "/slots/7", True), ("llama_cpp", "/openapiXjson", False),
        ("llama_cpp", "/lora-adapters", True),
    ],
)  # fmt: skip
def test_exact_routes_are_anchored_and_parameterised_ones_are_prefixes(kind, path, flagged):
    assert any(re.search(p, path) for p in denied_patterns(kind)) is flagged
