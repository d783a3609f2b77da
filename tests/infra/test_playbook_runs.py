"""What the play recap must show on converged hosts: nothing to change, bad input stopped early."""

from __future__ import annotations

import json

import pytest
from playbook_runner import run_playbook


def test_check_mode_reports_nothing_to_change(target):
    playbook, inventory = target
    run = run_playbook(playbook, inventory, "--check", "--diff")
    assert run.rc == 0, run.failure_messages() or run.stderr[-2000:]
    assert run.total("changed") == 0, run.changed_tasks()
    assert run.total("failures") == 0


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("baseline_ssh_permit_root_login", "maybe", "must be one of"),
        ("baseline_ssh_port", "twenty-two", "cannot be converted to an int"),
        ("baseline_ssh_allow_groups", {"not": "a list"}, "baseline_ssh_allow_groups"),
        ("baseline_sysctl_enabled", "perhaps", "bool"),
    ],
)
def test_bad_variable_fails_validation_before_any_change(host, hostvars, target, variable, value, expected):
    playbook, inventory = target
    before = host.file("/etc/ssh/sshd_config").sha256sum
    run = run_playbook(
        playbook, inventory, "-e", json.dumps({variable: value}), limit=hostvars.get("inventory_hostname")
    )
    assert run.rc != 0
    assert run.total("changed") == 0, run.changed_tasks()
    messages = " ".join(run.failure_messages())
    assert variable in messages and expected in messages, messages
    assert host.file("/etc/ssh/sshd_config").sha256sum == before
