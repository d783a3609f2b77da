"""PKI-03/08/10 through playbooks/client_cert_{issue,rotate,revoke}.yml on the pki_lifecycle
Molecule scenario: what the CA signs and keeps, what the CRL lists, where it is installed, what a
gateway nobody can reach does to the run, and that a revocation outlives later converges.

Tests run in file order, once, from the GPU host, each on the state the one before left; they run
only in that scenario (on the lab, tests/lab/test_client_cert_lifecycle.py drives the same
playbooks with real mTLS handshakes).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest
import testinfra
import yaml
from cryptography import x509
from playbook_runner import PlaybookRun, run_playbook

CA = "/etc/localguard/ca"
PKI = "/etc/localguard/pki"
PUBLISH = "/var/www/localguard-crl"
NAME = "mol-lifecycle"
LISTED = "mol-listed"  # in pki_clients: the role issues it, the rotation below forces it
GHOST = "mol-pki_lifecycle-ghost"
SCENARIO = Path(os.environ.get("MOLECULE_SCENARIO_DIRECTORY", "."))


@pytest.fixture(scope="module", autouse=True)
def only_here(hostvars) -> None:
    if os.environ.get("MOLECULE_SCENARIO_NAME") != "pki_lifecycle":
        pytest.skip("runs the client certificate playbooks on the pki_lifecycle scenario only")
    if hostvars["inventory_hostname"] != hostvars["groups"]["gpu_hosts"][0]:
        pytest.skip("runs once, from the GPU host")


@pytest.fixture(scope="module")
def ca_host(hostvars):
    return testinfra.get_host(f"podman://{hostvars['groups']['ca'][0]}")


@pytest.fixture(scope="module")
def inventory(target) -> Path:
    return target[1]


@pytest.fixture(scope="module")
def export_dir(hostvars) -> Path:
    return Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "pki"


@pytest.fixture(scope="module")
def ghost_inventory(host, tmp_path_factory) -> Path:
    """A gateway in gpu_hosts that nothing answers for: an unused address on the Molecule network."""
    network = ipaddress.ip_network(host.check_output("hostname -I").split()[0] + "/24", strict=False)
    address = str(network[250])
    path = tmp_path_factory.mktemp("ghost") / "ghost.yml"
    ghost = {"ansible_connection": "ssh", "ansible_host": address, "localguard_address": address,
             "ansible_ssh_common_args": "-o ConnectTimeout=3 -o StrictHostKeyChecking=no"}  # fmt: skip
    path.write_text(
        yaml.safe_dump({"gpu_hosts": {"hosts": {GHOST: ghost}}, "lifecycle_ghosts": {"hosts": {GHOST: None}}})
    )
    return path


def lifecycle(inventory: Path, action: str, *args: str) -> PlaybookRun:
    """playbooks/client_cert_<action>.yml, after the scenario's addresses."""
    return run_playbook(SCENARIO / f"client-cert-{action}.yml", inventory, *args)


def cert_of(host, path: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(host.file(path).content)


def crl_serials(host, path: str) -> set[int]:
    data = host.file(path).content
    crl = x509.load_pem_x509_crl(data) if data.startswith(b"-----") else x509.load_der_x509_crl(data)
    return {r.serial_number for r in crl}


def exported_serial(export_dir: Path, name: str) -> int:
    return x509.load_pem_x509_certificate((export_dir / "clients" / f"{name}.crt").read_bytes()).serial_number


@pytest.fixture(scope="module")
def issued(inventory, export_dir) -> int:
    run = lifecycle(inventory, "issue", "-e", f"client={NAME}")
    assert run.rc == 0, run.failure_messages() or run.stderr[-2000:]
    return exported_serial(export_dir, NAME)


def test_pki_03_issue_signs_on_the_ca_and_exports_key_and_certificate(ca_host, inventory, export_dir, issued):
    key = export_dir / "clients" / f"{NAME}.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert (export_dir / "ca.crt").exists()
    assert cert_of(ca_host, f"{CA}/issued/{NAME}.crt").serial_number == issued
    check = ca_host.run(f"openssl verify -purpose sslclient -CAfile {CA}/ca.crt {CA}/issued/{NAME}.crt")
    assert check.rc == 0, check.stdout + check.stderr
    # A valid certificate is left alone.
    again = lifecycle(inventory, "issue", "-e", f"client={NAME}")
    assert again.rc == 0 and again.total("changed") == 0, again.changed_tasks()
    assert exported_serial(export_dir, NAME) == issued


def test_pki_03_issue_refuses_a_name_that_is_not_a_file_name_before_any_change(ca_host, inventory):
    before = ca_host.check_output(f"find {CA} -type f | sort")
    run = lifecycle(inventory, "issue", "-e", "client=../escape")
    assert run.rc != 0
    assert any("client name '../escape'" in message for message in run.failure_messages())
    assert ca_host.check_output(f"find {CA} -type f | sort") == before


def test_pki_03_rotation_reissues_when_due_or_forced_and_keeps_the_replaced_certificate(
    ca_host, inventory, export_dir, issued
):
    listed = exported_serial(export_dir, LISTED)
    not_due = lifecycle(inventory, "rotate", "-e", '{"pki_clients": ["mol-lifecycle", "mol-listed"]}')
    assert not_due.rc == 0, not_due.failure_messages()
    assert (exported_serial(export_dir, NAME), exported_serial(export_dir, LISTED)) == (issued, listed)
    # 90-day certificates are inside a 100-day window: due without force.
    due = lifecycle(
        inventory, "rotate", "-e", '{"pki_clients": ["mol-listed"]}', "-e", "pki_renew_before_days=100"
    )
    assert due.rc == 0, due.failure_messages()
    assert exported_serial(export_dir, LISTED) != listed
    forced = lifecycle(inventory, "rotate", "-e", '{"pki_clients": ["mol-lifecycle"]}', "-e", "force=true")
    assert forced.rc == 0, forced.failure_messages()
    assert exported_serial(export_dir, NAME) != issued
    history = ca_host.file(f"{CA}/issued/history/{NAME}/{issued:X}.crt")
    assert history.exists and cert_of(ca_host, history.path).serial_number == issued


def test_pki_08_revoke_lists_every_certificate_of_the_name_and_reaches_the_gateways_that_answer(
    host, ca_host, inventory, ghost_inventory, export_dir, issued
):
    current = exported_serial(export_dir, NAME)
    assert current != issued, "the rotation test leaves a second certificate"
    run = lifecycle(inventory, "revoke", "-e", f"client={NAME}", "-i", str(ghost_inventory))
    # The unreachable gateway fails the run, by name, after the reachable one has the CRL.
    assert run.rc != 0
    assert any(GHOST in message and "within the hour" in message for message in run.failure_messages()), (
        run.failure_messages()
    )
    assert {issued, current} <= crl_serials(ca_host, f"{CA}/crl.pem")
    assert {issued, current} <= crl_serials(ca_host, f"{PUBLISH}/crl.der")
    assert {issued, current} <= crl_serials(host, f"{PKI}/crl.pem")
    assert crl_serials(host, f"{PKI}/crl.pem") == crl_serials(ca_host, f"{CA}/crl.pem")
    # Without the ghost, the same revocation again succeeds and changes nothing on the gateway.
    again = lifecycle(inventory, "revoke", "-e", f"client={NAME}")
    assert again.rc == 0, again.failure_messages()
    assert not [t for t in again.changed_tasks() if "Install the CRL" in t], again.changed_tasks()


def test_pki_08_revocation_outlives_a_converge_that_does_not_list_it(
    host, ca_host, inventory, export_dir, issued
):
    current = exported_serial(export_dir, NAME)
    # The role's converge with pki_revoked_clients empty, the name listed in pki_clients and due for
    # renewal: the revocation database keeps it revoked and it is never signed again.
    listed_and_due = '{"pki_clients": ["mol-listed", "mol-lifecycle"], "pki_renew_before_days": 100}'
    converge = run_playbook(SCENARIO.parent / "pki" / "converge.yml", inventory, "-e", listed_and_due)
    assert converge.rc == 0, converge.failure_messages()
    assert {issued, current} <= crl_serials(ca_host, f"{CA}/crl.pem")
    assert {issued, current} <= crl_serials(host, f"{PKI}/crl.pem")
    assert cert_of(ca_host, f"{CA}/issued/{NAME}.crt").serial_number == current
    # Nor by the playbooks.
    reissue = lifecycle(inventory, "issue", "-e", f"client={NAME}")
    assert reissue.rc != 0
    assert any("never signed again" in message for message in reissue.failure_messages())
    forced = lifecycle(inventory, "rotate", "-e", '{"pki_clients": ["mol-lifecycle"]}', "-e", "force=true")
    assert forced.rc == 0, forced.failure_messages()
    assert cert_of(ca_host, f"{CA}/issued/{NAME}.crt").serial_number == current
