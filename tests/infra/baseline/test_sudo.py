"""sudo (BL-SUDO-*), checked on the host itself. Runs under Molecule and on the lab.

Effective values come from sudo itself (`sudo -l` prints the Defaults that apply), not from
reading the files, and become's own invocation is replayed for a throwaway sudoer, to show the
hardening leaves Ansible's pipelining working.
"""

from __future__ import annotations

import secrets

import pytest

DROP_IN = "/etc/sudoers.d/localguard"
# Ansible's become with pipelining: no terminal, the module on sudo's stdin.
BECOME_SCRIPT = "echo BECOME-SUCCESS-lg; /usr/bin/python3"
BECOME = f"sudo -H -S -n -u root /bin/sh -c '{BECOME_SCRIPT}'"


def sudo_defaults(host) -> list[str]:
    out = host.check_output("sudo -l")
    block = out.split("Matching Defaults entries", 1)[1].split("\n\n", 1)[0].split(":", 1)[1]
    return [entry.strip() for entry in block.replace("\\,", "\0").split(",")]


def drop_in_lines(host) -> list[str]:
    lines = host.file(DROP_IN).content_string.splitlines()
    return [line.strip() for line in lines if line.startswith("Defaults")]


@pytest.fixture
def sudoer(host):
    """A throwaway account allowed passwordless sudo, as Ansible's login often is; removed after."""
    name = f"lgb{secrets.token_hex(3)}"
    rule = f"/etc/sudoers.d/zz-{name}"
    host.check_output(f"useradd --create-home --shell /bin/bash {name}")
    try:
        host.check_output(f"echo '{name} ALL=(ALL:ALL) NOPASSWD: ALL' > {rule}")
        host.check_output(f"chmod 0440 {rule} && visudo -cf {rule}")
        yield name
    finally:
        host.run(f"rm -f {rule}")
        host.run(f"userdel --remove {name}")


def test_bl_sudo_01_commands_run_in_their_own_pty(host):
    # Debian 12's /etc/sudoers sets use_pty too; the drop-in keeps it whatever that file becomes.
    assert "Defaults use_pty" in drop_in_lines(host)
    assert "use_pty" in sudo_defaults(host)


def test_bl_sudo_02_every_command_is_logged_to_a_root_only_file(host):
    log = host.file("/var/log/sudo.log")
    marker = f"lg-sudo-log-{secrets.token_hex(4)}"
    host.check_output(f"sudo -u nobody /bin/echo {marker}")
    assert log.user == "root" and log.group == "root" and log.mode == 0o600
    assert marker in log.content_string
    assert {"logfile=/var/log/sudo.log", "loglinelen=0"} <= set(sudo_defaults(host))
    # One line per command: a collector reading the file line by line gets whole entries.
    entries = [line for line in log.content_string.splitlines() if marker in line]
    assert entries and entries[0].endswith(f"COMMAND=/bin/echo {marker}")
    rotate = host.file("/etc/logrotate.d/localguard-sudo")
    assert "/var/log/sudo.log" in rotate.content_string and "create 0600 root root" in rotate.content_string


def test_bl_sudo_03_sudoers_d_is_closed_to_others(host):
    directory = host.file("/etc/sudoers.d")
    assert directory.user == "root" and directory.mode == 0o750


def test_bl_sudo_04_dot_in_path_is_ignored(host):
    assert "ignore_dot" in sudo_defaults(host)


def test_bl_sudo_05_commands_run_with_a_restrictive_umask(host):
    assert "umask=0027" in sudo_defaults(host)
    # Root's own umask here is 022: sudo applies the union with 027.
    assert host.check_output("umask 022; sudo -u root sh -c umask") == "0027"
    path = f"/tmp/lg-sudo-umask-{secrets.token_hex(4)}"
    try:
        host.check_output(f"umask 022; sudo -u root touch {path}")
        assert host.file(path).mode == 0o640
    finally:
        host.run(f"rm -f {path}")


def test_bl_sudo_01_05_become_with_pipelining_still_works(host, sudoer):
    """use_pty, the log file and the umask must not break become: a non-root login, no terminal,
    the module piped in. requiretty would refuse exactly this."""
    module = "import os; print('uid', os.getuid(), 'umask', oct(os.umask(0)))"
    out = host.check_output(f"echo {module!r} | runuser -u {sudoer} -- {BECOME}")
    assert out.splitlines() == ["BECOME-SUCCESS-lg", "uid 0 umask 0o27"]
    logged = f" : {sudoer} : PWD=/ ; USER=root ; COMMAND=/bin/sh -c '{BECOME_SCRIPT}'"
    assert logged in host.file("/var/log/sudo.log").content_string


def test_bl_sudo_06_sudo_reads_the_drop_in(host):
    drop_in = host.file(DROP_IN)
    assert drop_in.user == "root" and drop_in.mode == 0o440
    assert "Managed by localguard" in drop_in.content_string
    assert f"{DROP_IN}: parsed OK" in host.check_output("visudo -c")
