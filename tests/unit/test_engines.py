import pytest
from localguard_engines import ENGINES, engine, listen_args, listen_env


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
