"""A converged host has nothing left to change: `--check --diff` must report 0 changed."""

from __future__ import annotations

from playbook_runner import run_playbook


def test_check_mode_reports_nothing_to_change(target):
    playbook, inventory = target
    run = run_playbook(playbook, inventory, "--check", "--diff")
    assert run.rc == 0, run.failure_messages() or run.stderr[-2000:]
    assert run.total("changed") == 0, run.changed_tasks()
    assert run.total("failures") == 0
