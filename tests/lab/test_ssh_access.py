"""BL-SSH over real SSH from the operator's machine to every lab host, across the lab network."""

from __future__ import annotations

import paramiko
import pytest

pytestmark = pytest.mark.lab


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
