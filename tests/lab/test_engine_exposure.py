"""EN-02 across the lab network: no other host reaches an engine, the engine still serves locally."""

from __future__ import annotations

import json
import time

import pytest
from probes import LAB_ENGINES, controller_tcp_open, podman, tcp_open, tcp_probe

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


def input_drops(container: str) -> int:
    out = podman(container, "nft", "-j", "list", "counter", "inet", "localguard", "input_drop").stdout
    return next(i["counter"]["packets"] for i in json.loads(out)["nftables"] if "counter" in i)


def test_fw_02_firewall_alone_drops_the_engine_port(lab_hosts):
    """Something listening on the engine port of the external address (as an engine bound to
    0.0.0.0 would be): the firewall alone keeps the client out, and counts it."""
    address, port = lab_hosts["gpu2"]["ansible_host"], LAB_ENGINES["gpu2"].port
    podman("lg-gpu2", "systemd-run", "--unit=lab-exposed-engine", "--", "nc", "-lk", address, str(port))
    try:
        deadline = time.monotonic() + 5
        while not podman("lg-gpu2", "ss", "-Htln", f"src {address} and sport = :{port}").stdout.strip():
            assert time.monotonic() < deadline, "exposed listener did not start"
            time.sleep(0.1)
        before = input_drops("lg-gpu2")
        assert tcp_probe("lg-client", address, port) == "timeout"
        assert input_drops("lg-gpu2") > before
        assert tcp_probe("lg-client", address, 443) == "open", "the same prober reaches the gateway"
    finally:
        podman("lg-gpu2", "systemctl", "stop", "lab-exposed-engine")


def test_en_02_loopback_bind_alone_keeps_the_engine_off_the_network(lab_hosts):
    """With the firewall's table removed, the engine's own bind still refuses (RST) remote callers
    on its port, while SSH beside it answers the same prober."""
    address, port = lab_hosts["gpu2"]["ansible_host"], LAB_ENGINES["gpu2"].port
    assert podman("lg-gpu2", "nft", "delete", "table", "inet", "localguard").returncode == 0
    try:
        assert tcp_probe("lg-client", address, 22) == "open", "firewall off: SSH reachable from the client"
        assert tcp_probe("lg-client", address, port) == "refused"
    finally:
        assert podman("lg-gpu2", "systemctl", "restart", "localguard-firewall").returncode == 0
    assert tcp_probe("lg-client", address, 22) == "timeout", "the firewall is back"
