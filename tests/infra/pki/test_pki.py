"""PKI-07..PKI-14 on Molecule hosts and the lab: what the CA signs, revocation, CRL timers.

Each check tries the refused path for real (a forged CSR, a certificate outside the name
constraints, a CRL signed by another key) beside the allowed one.
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtensionOID
from playbook_runner import run_playbook

CA = "/etc/localguard/ca"
PKI = "/etc/localguard/pki"
PUBLISH = "/var/www/localguard-crl"
CLI = "/usr/local/lib/localguard/localguard_pki.py"
HERE = Path(__file__).resolve().parent

# Run on the CA host: two leaf certificates signed with the CA key, one for a name outside the
# fleet and one for a managed host, so only the name constraints can tell them apart.
SIGN_LEAVES = r"""
import datetime as dt, sys
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
ca_dir = "/etc/localguard/ca"
key = serialization.load_pem_private_key(open(ca_dir + "/ca.key", "rb").read(),
                                         open(ca_dir + "/ca.passphrase", "rb").read().strip())
ca = x509.load_pem_x509_certificate(open(ca_dir + "/ca.crt", "rb").read())
now = dt.datetime.utcnow()
for name, path in ((sys.argv[1], "/tmp/lg-outside.crt"), (sys.argv[2], "/tmp/lg-inside.crt")):
    leaf = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.subject).public_key(leaf.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    open(path, "wb").write(cert.public_bytes(serialization.Encoding.PEM))
"""

# Run on the CA host: a CRL that claims the CA's name and a higher number, signed by another key.
FORGE_CRL = r"""
import datetime as dt, sys
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
ca = x509.load_pem_x509_certificate(open("/etc/localguard/ca/ca.crt", "rb").read())
now = dt.datetime.utcnow()
crl = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
       .last_update(now).next_update(now + dt.timedelta(days=30))
       .add_extension(x509.CRLNumber(10**6), critical=False)
       .sign(ec.generate_private_key(ec.SECP384R1()), hashes.SHA384()))
open(sys.argv[1], "wb").write(crl.public_bytes(serialization.Encoding.DER))
"""


def crl_of(host, path: str) -> x509.CertificateRevocationList:
    data = host.file(path).content
    return x509.load_pem_x509_crl(data) if data.startswith(b"-----") else x509.load_der_x509_crl(data)


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def next_update(crl: x509.CertificateRevocationList) -> dt.datetime:
    return getattr(crl, "next_update_utc", None) or crl.next_update.replace(tzinfo=dt.UTC)


def cert_of(host, path: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(host.file(path).content)


def ca_dir_state(ca_host) -> str:
    return ca_host.check_output(f"find {CA} -type f -exec sha256sum {{}} + | sort")


def host_address(host) -> str:
    return host.check_output("hostname -I").split()[0]


def refresh(ca_host, *args: str) -> dict:
    out = ca_host.check_output(
        f"python3 {CLI} refresh --ca-dir {CA} --publish-dir {PUBLISH} "
        f"--passphrase-file {CA}/ca.passphrase {' '.join(args)}"
    )
    return json.loads(out)


# --- PKI-07: the CA signs only what the inventory says, and only inside the fleet's names ------


def test_pki_07_ca_certificate_carries_critical_name_constraints(ca_host):
    ext = cert_of(ca_host, f"{CA}/ca.crt").extensions.get_extension_for_oid(ExtensionOID.NAME_CONSTRAINTS)
    assert ext.critical
    assert ext.value.permitted_subtrees


def test_pki_07_ca_cannot_vouch_for_a_name_outside_the_fleet(ca_host, hostvars, first_gpu):
    name = hostvars["inventory_hostname"]
    ca_host.check_output(f"python3 -c {shlex.quote(SIGN_LEAVES)} www.example.com {name}")
    try:
        outside = ca_host.run(f"openssl verify -CAfile {CA}/ca.crt /tmp/lg-outside.crt")
        inside = ca_host.run(f"openssl verify -CAfile {CA}/ca.crt /tmp/lg-inside.crt")
    finally:
        ca_host.run("rm -f /tmp/lg-outside.crt /tmp/lg-inside.crt")
    assert outside.rc != 0 and "permitted subtree violation" in outside.stdout + outside.stderr
    assert inside.rc == 0, inside.stdout + inside.stderr


def test_pki_07_mtls_client_certificate_still_verifies_under_the_constraints(ca_host, hostvars, first_gpu):
    clients = [c for c in hostvars.get("pki_clients", []) if c not in hostvars.get("pki_revoked_clients", [])]
    if not clients:
        pytest.skip("no mTLS client in this inventory")
    check = ca_host.run(f"openssl verify -purpose sslclient -CAfile {CA}/ca.crt {CA}/issued/{clients[0]}.crt")
    assert check.rc == 0, check.stdout + check.stderr


def test_pki_07_server_certificate_names_exactly_the_inventory(host, hostvars):
    cert = cert_of(host, f"{PKI}/server.crt")
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = sorted(sans.get_values_for_type(x509.DNSName))
    addresses = [str(a) for a in sans.get_values_for_type(x509.IPAddress)]
    name = hostvars["inventory_hostname"]
    assert names == sorted({name, name.split(".")[0]})
    assert addresses == [host_address(host)]


def test_pki_07_forged_csr_refused_before_signing(ca_host, hostvars, ca_name, target, first_gpu):
    _, inventory = target
    before = ca_dir_state(ca_host)
    run = run_playbook(
        HERE / "forge_csr.yml", inventory, "-e", json.dumps({"pki_forge_san": f"DNS:{ca_name}"}),
        limit=hostvars["inventory_hostname"],
    )  # fmt: skip
    messages = " ".join(run.failure_messages())
    assert run.rc != 0
    assert "refusing to sign the CSR of " + hostvars["inventory_hostname"] in messages, messages
    assert f"DNS:{ca_name}" in messages, messages
    assert run.total("changed") == 0, run.changed_tasks()
    assert ca_dir_state(ca_host) == before


# --- PKI-05/09: a CRL distribution point that clients can fetch ---------------------------------


def test_pki_09_server_certificate_cdp_serves_the_ca_signed_crl(host, ca_host, ca_name):
    cert = cert_of(host, f"{PKI}/server.crt")
    cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    (url,) = [name.value for point in cdp for name in point.full_name]
    assert url == f"http://{host_address(ca_host)}/crl.der"
    host.check_output(f"curl -sf --max-time 5 -o /tmp/lg-cdp.der {shlex.quote(url)}")
    crl = crl_of(host, "/tmp/lg-cdp.der")
    host.run("rm -f /tmp/lg-cdp.der")
    assert crl.is_signature_valid(cert_of(host, f"{PKI}/ca.crt").public_key())


def test_pki_09_publisher_serves_nothing_but_the_three_files(ca_host):
    address = host_address(ca_host)

    def status(path: str) -> str:
        return ca_host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' http://{address}{path}")

    assert status("/ca.crt") == "200"
    assert status("/") == "404"
    assert status("/revoked.json") == "404"


# --- PKI-08: revocation remembers ----------------------------------------------------------------


def test_pki_08_revocation_database_is_root_only(ca_host):
    db = ca_host.file(f"{CA}/revoked.json")
    assert (db.user, db.mode) == ("root", 0o600)
    assert ca_host.file(f"{CA}/ca.passphrase").mode == 0o400


def test_pki_08_forced_renewal_keeps_revoked_client_revoked(ca_host, hostvars, target, first_gpu):
    revoked = [c for c in hostvars.get("pki_revoked_clients", []) if c in hostvars.get("pki_clients", [])]
    kept = [c for c in hostvars.get("pki_clients", []) if c not in revoked]
    if not revoked or not kept:
        pytest.skip("needs a revoked and a valid client still listed in pki_clients")
    playbook, inventory = target
    revoked_before = cert_of(ca_host, f"{CA}/issued/{revoked[0]}.crt").serial_number
    kept_before = cert_of(ca_host, f"{CA}/issued/{kept[0]}.crt").serial_number
    # Above the certificates' lifetime: everything is due for renewal.
    run = run_playbook(playbook, inventory, "--tags", "pki", "-e", "pki_renew_before_days=1000")
    assert run.rc == 0, run.failure_messages() or run.stderr[-2000:]
    assert cert_of(ca_host, f"{CA}/issued/{kept[0]}.crt").serial_number != kept_before
    assert cert_of(ca_host, f"{CA}/issued/{revoked[0]}.crt").serial_number == revoked_before
    revoked_serials = {r.serial_number for r in crl_of(ca_host, f"{CA}/crl.pem")}
    assert revoked_before in revoked_serials
    assert kept_before not in revoked_serials
    db = json.loads(ca_host.file(f"{CA}/revoked.json").content_string)
    assert {int(e["serial"], 16) for e in db["entries"]} == revoked_serials


# --- PKI-08/10: the CRL stays fresh between plays --------------------------------------------------


def test_pki_08_refresh_timer_enabled_and_units_verify(ca_host):
    assert ca_host.service("localguard-crl-refresh.timer").is_enabled
    assert ca_host.service("localguard-crl-refresh.timer").is_running
    units = " ".join(f"/etc/systemd/system/localguard-crl-refresh.{kind}" for kind in ("service", "timer"))
    check = ca_host.run(f"systemd-analyze verify {units}")
    assert check.rc == 0 and not check.stderr.strip(), check.stderr


def test_pki_10_fetch_timer_enabled_and_units_verify(host):
    assert host.service("localguard-crl-fetch.timer").is_enabled
    units = " ".join(f"/etc/systemd/system/localguard-crl-fetch.{kind}" for kind in ("service", "timer"))
    check = host.run(f"systemd-analyze verify {units}")
    assert check.rc == 0 and not check.stderr.strip(), check.stderr


def test_pki_08_refresh_service_resigns_a_crl_near_its_next_update(ca_host, first_gpu):
    # A CRL one day from its next update, inside the refresh window.
    refresh(ca_host, "--force", "--valid-days", "1")
    planted = crl_of(ca_host, f"{CA}/crl.pem")
    ca_host.check_output("systemctl start localguard-crl-refresh.service")
    fresh = crl_of(ca_host, f"{CA}/crl.pem")
    assert crl_number(fresh) == crl_number(planted) + 1
    assert next_update(fresh) - next_update(planted) > dt.timedelta(days=5)
    published = crl_of(ca_host, f"{PUBLISH}/crl.der")
    assert published.public_bytes(Encoding.DER) == fresh.public_bytes(Encoding.DER)
    # Far from its next update, the service leaves it alone.
    ca_host.check_output("systemctl start localguard-crl-refresh.service")
    assert crl_number(crl_of(ca_host, f"{CA}/crl.pem")) == crl_number(fresh)


def test_pki_10_fetch_installs_a_newer_crl_and_refuses_a_forged_one(host, ca_host, fleet, first_gpu):
    refresh(ca_host, "--force")
    published = crl_number(crl_of(ca_host, f"{CA}/crl.pem"))
    assert crl_number(crl_of(host, f"{PKI}/crl.pem")) < published
    host.check_output("systemctl start localguard-crl-fetch.service")
    assert crl_number(crl_of(host, f"{PKI}/crl.pem")) == published

    installed = host.file(f"{PKI}/crl.pem").sha256sum
    ca_host.check_output(f"python3 -c {shlex.quote(FORGE_CRL)} {PUBLISH}/crl.der")
    try:
        since = host.check_output("date '+%Y-%m-%d %H:%M:%S'")
        assert host.run("systemctl start localguard-crl-fetch.service").rc != 0
        assert host.file(f"{PKI}/crl.pem").sha256sum == installed
        journal = host.check_output(f"journalctl -u localguard-crl-fetch.service --since '{since}'")
        assert "not signed by the installed CA" in journal
    finally:
        # Put the real CRL back and let every host have it, as the next timer run would.
        refresh(ca_host, "--force")
        for member in fleet:
            member.run("systemctl reset-failed localguard-crl-fetch.service")
            member.check_output("systemctl start localguard-crl-fetch.service")


# --- PKI-14: a run that cannot sign says why, before changing anything -----------------------------


def test_pki_14_limit_without_a_ca_fails_early_and_readably(hostvars, ca_name, target, first_gpu):
    playbook, inventory = target
    name = hostvars["inventory_hostname"]
    # A CA directory nobody made: what a fleet whose CA host was never converged looks like.
    run = run_playbook(playbook, inventory, "--tags", "pki", "-e", "pki_ca_dir=/etc/localguard/ca-never-made",
                       limit=name)  # fmt: skip
    messages = " ".join(run.failure_messages())
    assert run.rc != 0
    assert f"the CA on {ca_name} is not set up" in messages, messages
    assert f"--limit {ca_name},{name}" in messages, messages
    assert run.total("changed") == 0, run.changed_tasks()


def test_pki_14_wrong_passphrase_fails_readably_without_showing_it(hostvars, ca_name, target, first_gpu):
    playbook, inventory = target
    wrong = "not-the-ca-passphrase-0123456789"
    run = run_playbook(playbook, inventory, "--tags", "pki", "-e", f"pki_ca_passphrase={wrong}",
                       limit=hostvars["inventory_hostname"])  # fmt: skip
    messages = " ".join(run.failure_messages())
    assert run.rc != 0
    assert f"on {ca_name} does not open with pki_ca_passphrase" in messages, messages
    assert run.total("changed") == 0, run.changed_tasks()
    assert wrong not in json.dumps(run.plays) and wrong not in run.stderr
