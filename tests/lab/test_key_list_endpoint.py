"""KEY-04: the CA host serves the signed key list to the gateways only: a certificate from the
internal CA whose name is a gateway's, over the firewall's port for gpu_hosts (rule 410)."""

from __future__ import annotations

import pytest
from probes import podman, tcp_probe

pytestmark = pytest.mark.lab
PKI = "/etc/localguard/pki"


def fetch(container: str, address: str, *cert: str) -> str:
    """HTTP status of GET /keylist.json from inside a lab host, '000' when TLS fails."""
    options = ["--cert", cert[0], "--key", cert[1]] if cert else []
    result = podman(container, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
                    "--cacert", f"{PKI}/ca.crt", *options, f"https://{address}/keylist.json")  # fmt: skip
    return result.stdout.strip()


@pytest.fixture(scope="module")
def ca_address(lab_hosts) -> str:
    return lab_hosts["ca1"]["ansible_host"]


def test_key_04_a_gateway_with_its_host_certificate_gets_the_list(ca_address):
    for gpu in ("gpu1", "gpu2", "gpu3"):
        assert fetch(f"lg-{gpu}", ca_address, f"{PKI}/server.crt", f"{PKI}/server.key") == "200", gpu


def test_key_04_no_certificate_or_a_non_gateway_name_is_refused(ca_address):
    assert fetch("lg-gpu1", ca_address) == "400"  # nginx: no required SSL certificate
    # The CA host's own certificate is from the right CA but names no gateway.
    assert fetch("lg-ca1", ca_address, f"{PKI}/server.crt", f"{PKI}/server.key") == "403"


def test_key_04_firewall_opens_the_list_port_to_gpu_hosts_only(lab_hosts, ca_address):
    assert tcp_probe("lg-gpu2", ca_address, 443) == "open"
    assert tcp_probe("lg-logs", ca_address, 443) == "timeout"
    assert tcp_probe("lg-client", ca_address, 443) == "timeout"
