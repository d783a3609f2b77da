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


def test_bl_ssh_key_login_works(address, lab_admin):
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


def test_bl_ssh_password_login_refused_even_with_the_right_password(address, lab_admin):
    transport = paramiko.Transport((address, 22))
    try:
        transport.connect()
        # The server no longer offers password (or keyboard-interactive) at all.
        with pytest.raises(paramiko.BadAuthenticationType) as refused:
            transport.auth_password(lab_admin["user"], lab_admin["password"])
        assert refused.value.allowed_types == ["publickey"]
    finally:
        transport.close()


def test_bl_ssh_weak_algorithms_not_offered(address):
    transport = paramiko.Transport((address, 22))
    try:
        options = transport.get_security_options()
        options.ciphers = ("aes128-cbc",)
        with pytest.raises(paramiko.SSHException):
            transport.connect()
    finally:
        transport.close()
