"""PKI-* and GW-* on the host itself (Molecule and the lab). Client-side tests: tests/lab."""

from __future__ import annotations

import json
import re

import pytest

PKI = "/etc/localguard/pki"


@pytest.fixture(scope="module")
def gateway(hostvars):
    if "gpu_hosts" not in hostvars.get("group_names", []):
        pytest.skip("not a gateway host")


def test_pki_02_server_key_stays_on_the_host_and_cert_chains_to_the_ca(host):
    key = host.file(f"{PKI}/server.key")
    assert key.user == "root" and key.mode == 0o600
    assert host.run(f"openssl verify -CAfile {PKI}/ca.crt {PKI}/server.crt").rc == 0


def test_pki_05_ca_trusted_system_wide(host):
    assert host.file("/etc/ssl/certs/localguard-ca.pem").exists
    assert host.run(f"openssl verify {PKI}/server.crt").rc == 0


def test_pki_01_ca_key_encrypted_on_the_ca_host_and_nowhere_else(host, hostvars):
    ca_key = host.file("/etc/localguard/ca/ca.key")
    if "ca" in hostvars.get("group_names", []):
        assert ca_key.mode == 0o600 and ca_key.user == "root"
        # PKCS#8 ("BEGIN ENCRYPTED PRIVATE KEY") or traditional ("Proc-Type: 4,ENCRYPTED") form.
        assert "ENCRYPTED" in ca_key.content_string
    else:
        assert not ca_key.exists


def test_gw_02_03_only_hashes_on_the_host(host, gateway):
    directory = host.file("/etc/localguard/gateway")
    assert (directory.user, directory.group, directory.mode) == ("root", "www-data", 0o750)
    keys = host.file("/etc/localguard/gateway/api-keys.json")
    assert (keys.user, keys.group, keys.mode) == ("root", "www-data", 0o640)
    records = json.loads(keys.content_string)
    assert records and all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in records)
    assert all(set(record) == {"id", "not_after", "status"} for record in records.values())


def test_gw_01_04_tls_only_no_plain_http(host, gateway):
    """GW-01 removes Debian's default site on port 80; GW-04 serves TLS only."""
    assert host.service("nginx").is_running
    assert host.socket("tcp://0.0.0.0:443").is_listening
    assert not host.socket("tcp://0.0.0.0:80").is_listening


def test_gw_04_no_key_gets_401_over_verified_tls(host, hostvars, gateway):
    name = hostvars["inventory_hostname"]
    status = host.check_output(
        f"curl -s -o /dev/null -w '%{{http_code}}' --cacert {PKI}/ca.crt --resolve {name}:443:127.0.0.1 "
        f"https://{name}/v1/models"
    )
    assert status == "401"


def test_gw_01_04_nginx_loaded_tls_1_2_and_1_3_only_and_serves_both(host, gateway):
    """What nginx loaded (GW-01: Debian's http-level default; GW-04: the site), not what an OpenSSL 3
    client would refuse anyway; and both versions served."""
    loaded = host.check_output("nginx -T 2>/dev/null")
    protocols = re.findall(r"^\s*ssl_protocols\s+([^;]*);", loaded, flags=re.MULTILINE)
    assert protocols and all(p.split() == ["TLSv1.2", "TLSv1.3"] for p in protocols), protocols
    for version in ("-tls1_2", "-tls1_3"):
        assert host.run(f"openssl s_client -connect 127.0.0.1:443 {version} </dev/null").rc == 0, version
