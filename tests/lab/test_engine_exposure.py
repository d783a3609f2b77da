"""EN-02 across the lab network: no other host reaches an engine, the engine still serves locally."""

from __future__ import annotations

import json

import pytest
from probes import LAB_ENGINES, controller_tcp_open, podman, tcp_open

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("gpu", sorted(LAB_ENGINES))
def test_engine_port_unreachable_from_every_other_lab_host(lab_hosts, gpu):
    address, port = lab_hosts[gpu]["ansible_host"], LAB_ENGINES[gpu].port
    for other in sorted(set(lab_hosts) - {gpu}):
        assert not tcp_open(f"lg-{other}", address, port), f"{other} reached the engine on {gpu}"
    assert not controller_tcp_open(address, port), f"the admin machine reached the engine on {gpu}"
    # Beside it: on the host itself the engine answers.
    assert tcp_open(f"lg-{gpu}", "127.0.0.1", port)


def test_real_completion_from_the_sandboxed_llama_cpp_engine():
    request = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8}
    reply = podman(
        "lg-gpu1", "curl", "-sf", "-m", "60", "http://127.0.0.1:8080/v1/chat/completions",
        "-H", "content-type: application/json", "-d", json.dumps(request),
    )  # fmt: skip
    assert reply.returncode == 0, reply.stderr
    completion = json.loads(reply.stdout)
    assert completion["choices"][0]["message"]["content"].strip()
    assert completion["usage"]["completion_tokens"] > 0
