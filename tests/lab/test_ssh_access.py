"""BL-SSH over real SSH from the operator's machine to every lab host, across the lab network."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import paramiko
import pytest
from playbook_runner import ROOT, run_playbook
from probes import lab_ssh, podman

pytestmark = pytest.mark.lab

BREAKGLASS = "lgbreakglass"
OUTSIDER = "lgoutsider"
PQ_KEX = "sntrup761x25519-sha512@openssh.com"


def client(known_hosts: str) -> paramiko.SSHClient:
    ssh = paramiko.SSHClient()
    ssh.load_host_keys(known_hosts)
    ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
    return ssh


@pytest.fixture(params=["gpu1", "gpu2", "gpu3", "logs", "ca1"])
def address(request, lab_hosts) -> str:
    return lab_hosts[request.param]["ansible_host"]


def test_bl_ssh_03_login_account_keeps_its_key_login(address, lab_admin):
    """BL-SSH-01 finds the account Ansible logs in with, BL-SSH-03 keeps it inside AllowGroups."""
    ssh = client(lab_admin["known_hosts"])
    ssh.connect(
        address,
        username=lab_admin["user"],
        key_filename=lab_admin["key"],
        look_for_keys=False,
        allow_agent=False,
        timeout=5,
    )
    try:
        _, stdout, _ = ssh.exec_command("id -un")
        assert stdout.read().decode().strip() == lab_admin["user"]
    finally:
        ssh.close()


def test_bl_ssh_05_password_login_refused_even_with_the_right_password(address, lab_admin):
    transport = paramiko.Transport((address, 22))
    try:
        transport.connect()
        # The server no longer offers password (or keyboard-interactive) at all.
        with pytest.raises(paramiko.BadAuthenticationType) as refused:
            transport.auth_password(lab_admin["user"], lab_admin["password"])
        assert refused.value.allowed_types == ["publickey"]
    finally:
        transport.close()


@pytest.mark.parametrize(
    "offer",
    [
        {"kex": ("ecdh-sha2-nistp256",)},
        # With an AEAD cipher no MAC is negotiated: pin a CTR cipher (which the role keeps, with
        # encrypt-then-MAC only) so the MAC decides.
        {"ciphers": ("aes256-ctr",), "digests": ("hmac-sha2-256",)},
        {"key_types": ("ecdsa-sha2-nistp256",)},
    ],
    ids=["kex-ecdh-nistp256", "mac-hmac-sha2-256", "hostkey-ecdsa-nistp256"],
)
def test_bl_ssh_05_algorithms_openssh_accepts_by_default_are_refused(address, offer):
    """Each of these is in OpenSSH 9.2's default lists (a client offering only it connects to an
    unhardened host); only the role's KexAlgorithms/MACs/HostKeyAlgorithms refuse it. The same
    offer with the role's own choice connects beside it."""
    refused = paramiko.Transport((address, 22))
    try:
        options = refused.get_security_options()
        for kind, algorithms in offer.items():
            setattr(options, kind, algorithms)
        with pytest.raises(paramiko.SSHException):
            refused.connect()
    finally:
        refused.close()
    accepted = paramiko.Transport((address, 22))
    try:
        if "ciphers" in offer:
            accepted.get_security_options().ciphers = offer["ciphers"]
        accepted.connect()
        assert accepted.is_active()
    finally:
        accepted.close()


def key_login(address: str, user: str, key: str, known_hosts: str) -> str:
    ssh = client(known_hosts)
    ssh.connect(address, username=user, key_filename=key, look_for_keys=False, allow_agent=False, timeout=5)
    try:
        _, stdout, _ = ssh.exec_command("id -un")
        return stdout.read().decode().strip()
    finally:
        ssh.close()


def test_bl_ssh_06_second_listed_admin_logs_in_with_its_key(address, lab_admin, lab_inventory):
    """The break-glass account exists only because the inventory lists it (scripts/lab.py puts it in
    baseline_ssh_admin_users); BL-SSH-06 made it and put its key in place."""
    assert BREAKGLASS in lab_inventory["all"]["vars"]["baseline_ssh_admin_users"]
    key = str(Path(lab_admin["key"]).with_name("id_ed25519_breakglass"))
    assert key_login(address, BREAKGLASS, key, lab_admin["known_hosts"]) == BREAKGLASS


@pytest.fixture
def outsider(lab_hosts, lab_admin):
    """An account with a valid key in its authorized_keys, made behind the role's back and in no
    SSH group: only AllowGroups stands between it and a shell."""
    container = lab_hosts["gpu2"]["lab_container"]
    pubkey = Path(lab_admin["key"]).with_suffix(".pub").read_text().strip()
    setup = podman(
        container,
        "sh",
        "-c",
        f"useradd -m {OUTSIDER} && install -d -m 0700 -o {OUTSIDER} /home/{OUTSIDER}/.ssh"
        f" && echo {shlex.quote(pubkey)} > /home/{OUTSIDER}/.ssh/authorized_keys"
        f" && chown {OUTSIDER} /home/{OUTSIDER}/.ssh/authorized_keys",
    )
    assert setup.returncode == 0, setup.stderr
    yield lab_hosts["gpu2"]["ansible_host"]
    podman(container, "userdel", "-r", OUTSIDER)


def test_bl_ssh_06_account_not_in_the_list_is_refused_with_a_valid_key(outsider, lab_admin):
    with pytest.raises(paramiko.AuthenticationException):
        key_login(outsider, OUTSIDER, lab_admin["key"], lab_admin["known_hosts"])
    # The same key logs the listed account in beside it: the refusal is the group's, not the key's.
    admin = key_login(outsider, lab_admin["user"], lab_admin["key"], lab_admin["known_hosts"])
    assert admin == lab_admin["user"]


def openssh(address: str, lab_admin: dict, kex: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*lab_ssh(lab_admin, address, "-o", "ConnectTimeout=5", "-o", f"KexAlgorithms={kex}"), "id", "-un"],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture
def pq_only_gpu3(lab_hosts):
    """gpu3 with only the post-quantum hybrid key exchange (BL-SSH-09 opt-in), then as before."""
    inventory = ROOT / "inventories" / "lab" / "hosts.yml"
    harden = ROOT / "harden.yml"
    args = ("--tags", "bl_ssh_01,bl_ssh_05")
    on = run_playbook(harden, inventory, *args, "-e", "baseline_ssh_kex_pq_only=true", limit="gpu3")
    assert on.rc == 0, on.failure_messages() or on.stderr[-2000:]
    yield lab_hosts["gpu3"]["ansible_host"]
    off = run_playbook(harden, inventory, *args, limit="gpu3")
    assert off.rc == 0, off.failure_messages() or off.stderr[-2000:]


def test_bl_ssh_09_pq_only_kex_shuts_out_classic_clients(pq_only_gpu3, lab_admin):
    """OpenSSH offering the hybrid gets in; OpenSSH offering curve25519 alone, and paramiko (which has
    no sntrup761), are refused at key exchange. Ansible over OpenSSH ran the change itself."""
    assert openssh(pq_only_gpu3, lab_admin, PQ_KEX).stdout.strip() == lab_admin["user"]
    classic = openssh(pq_only_gpu3, lab_admin, "curve25519-sha256")
    assert classic.returncode != 0 and "no matching key exchange method" in classic.stderr, classic.stderr
    transport = paramiko.Transport((pq_only_gpu3, 22))
    try:
        with pytest.raises(paramiko.SSHException):
            transport.connect()
    finally:
        transport.close()
