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


STATE = "/var/lib/localguard/gateway-keys"
RECORD_FIELDS = {"id", "not_after", "status", "scopes", "engines", "rate"}


def test_gw_02_03_only_hashes_on_the_host(host, gateway):
    directory = host.file("/etc/localguard/gateway")
    assert (directory.user, directory.group, directory.mode) == ("root", "lg-keys", 0o750)
    static = host.file("/etc/localguard/gateway/static-keys.json")
    assert (static.user, static.group, static.mode) == ("root", "lg-keys", 0o640)
    records = json.loads(static.content_string)
    assert records and all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in records)
    assert all(set(record) == RECORD_FIELDS for record in records.values())
    # The file earlier versions made nginx parse on every request is gone.
    assert not host.file("/etc/localguard/gateway/api-keys.json").exists


def test_gw_03_by_hash_is_lg_keys_to_write_and_nginx_to_read(host, gateway):
    for path in (STATE, f"{STATE}/by-hash"):
        directory = host.file(path)
        # setgid: files lg-keys writes there belong to nginx's group.
        assert (directory.user, directory.group, directory.mode) == ("lg-keys", "www-data", 0o2750), path
    names = host.check_output(f"ls {STATE}/by-hash").split()
    assert names and all(re.fullmatch(r"[0-9a-f]{64}", name) for name in names)
    first = host.file(f"{STATE}/by-hash/{names[0]}")
    assert (first.user, first.group, first.mode) == ("lg-keys", "www-data", 0o640)
    assert set(json.loads(first.content_string)) == RECORD_FIELDS
    # nginx's account reads a record; an account outside both groups cannot even list them.
    assert host.run(f"runuser -u www-data -- cat {STATE}/by-hash/{names[0]}").rc == 0
    assert host.run(f"runuser -u nobody -- ls {STATE}/by-hash").rc != 0


def test_gw_03_key_tool_installed_and_reports_what_is_enforced(host, gateway):
    tool = host.file("/usr/local/sbin/localguard-keys")
    assert (tool.user, tool.mode) == ("root", 0o755)
    status = json.loads(host.check_output("/usr/local/sbin/localguard-keys status"))
    assert status["keys"] == len(host.check_output(f"ls {STATE}/by-hash").split())


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


def test_gw_04_nginx_cannot_write_a_core_file(host, gateway):
    """BL-CORE in nginx's drop-in (LimitCORE=0): nginx holds the TLS key and sees every prompt and
    reply. Master and workers run with a hard core limit of 0, which worker_rlimit_core cannot raise."""
    master = host.check_output("systemctl show --property=MainPID --value nginx")
    workers = host.check_output(f"pgrep --parent {master}").split()
    assert workers, "nginx has no workers"
    for pid in [master, *workers]:
        limits = host.file(f"/proc/{pid}/limits").content_string.splitlines()
        core = next(line for line in limits if line.startswith("Max core file size")).split()[4:6]
        assert core == ["0", "0"], (pid, core)


def test_gw_01_04_nginx_loaded_tls_1_2_and_1_3_only_and_serves_both(host, gateway):
    """What nginx loaded (GW-01: Debian's http-level default; GW-04: the site), not what an OpenSSL 3
    client would refuse anyway; and both versions served."""
    loaded = host.check_output("nginx -T 2>/dev/null")
    protocols = re.findall(r"^\s*ssl_protocols\s+([^;]*);", loaded, flags=re.MULTILINE)
    assert protocols and all(p.split() == ["TLSv1.2", "TLSv1.3"] for p in protocols), protocols
    for version in ("-tls1_2", "-tls1_3"):
        assert host.run(f"openssl s_client -connect 127.0.0.1:443 {version} </dev/null").rc == 0, version
