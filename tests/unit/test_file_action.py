"""localguard_file end to end on this machine: the action renders, reads or takes the content on
the controller, the module compares and writes in one call, with check mode, diff and validate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from playbook_runner import PlaybookRun, run_playbook


@pytest.fixture
def play(tmp_path: Path):
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "app.conf.j2").write_text(
        "# {{ greeting }}\n{% for n in numbers %}\nn = {{ n }}\n{% endfor %}\n"
    )
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "raw.txt").write_text("kept {{ as is }}\n")
    out = tmp_path / "out"
    out.mkdir()
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")

    def run(tasks: list[dict], *args: str) -> PlaybookRun:
        playbook = tmp_path / "play.yml"
        body = {"hosts": "all", "gather_facts": False, "vars": {"greeting": "hello", "numbers": [1, 2]}}
        playbook.write_text(yaml.safe_dump([{**body, "tasks": tasks}]))
        return run_playbook(playbook, inventory, *args, timeout=120)

    return out, run


def put(dest: Path, mode: str = "0640", **source: object) -> dict:
    return {
        "localguard.hardening.localguard_file": {
            "dest": str(dest),
            "owner": "root",
            "group": "root",
            "mode": mode,
            **source,
        }
    }


def results(run: PlaybookRun) -> list[dict]:
    return [task["hosts"]["localhost"] for play in run.plays for task in play["tasks"]]


def test_template_src_and_content_land_once(play) -> None:
    out, run = play
    tasks = [
        put(out / "app.conf", template="app.conf.j2"),
        put(out / "raw.txt", mode="0600", src="raw.txt"),
        put(out / "data.json", content="{{ {'a': 1} }}"),
    ]
    first = run(tasks)
    assert first.rc == 0, first.stderr
    assert [r["changed"] for r in results(first)] == [True, True, True]
    assert (out / "app.conf").read_text() == "# hello\nn = 1\nn = 2\n"
    assert (out / "raw.txt").read_text() == "kept {{ as is }}\n"
    assert json.loads((out / "data.json").read_text()) == {"a": 1}
    assert (out / "raw.txt").stat().st_mode & 0o777 == 0o600
    again = run(tasks)
    assert [r["changed"] for r in results(again)] == [False, False, False]


def test_check_mode_shows_the_diff_and_writes_nothing(play) -> None:
    out, run = play
    run([put(out / "app.conf", content="old\n")])
    checked = run([put(out / "app.conf", template="app.conf.j2")], "--check", "--diff")
    (result,) = results(checked)
    assert result["changed"] and result["diff"]["before"] == "old\n"
    assert result["diff"]["after"] == "# hello\nn = 1\nn = 2\n"
    assert (out / "app.conf").read_text() == "old\n"
    shown = result["invocation"]["module_args"]
    assert shown["payload"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER", (
        "the content stays out of the shown arguments"
    )


def test_a_refused_file_never_lands(play) -> None:
    out, run = play
    run([put(out / "app.conf", content="good\n")])
    refused = run([put(out / "app.conf", content="bad\n", validate="grep -q good %s")])
    (result,) = results(refused)
    assert result["failed"] and "validate refused" in result["msg"]
    assert (out / "app.conf").read_text() == "good\n"
    assert sorted(p.name for p in out.iterdir()) == ["app.conf"]


def test_exactly_one_source(play) -> None:
    out, run = play
    (result,) = results(run([put(out / "app.conf", content="x", src="raw.txt")]))
    assert result["failed"] and "exactly one of template, src, content" in result["msg"]


def test_the_files_directories_are_made_in_the_same_call(play) -> None:
    out, run = play
    conf_d = out / "conf.d"
    task = put(
        conf_d / "app.conf",
        content="a = 1\n",
        directories=[{"path": str(conf_d), "owner": "root", "group": "root", "mode": "0750"}],
    )
    checked = run([task], "--check", "--diff")
    (result,) = results(checked)
    assert result["changed"] and result["directories_changed"] == [str(conf_d)]
    assert [diff["after_header"] for diff in result["diff"]] == [str(conf_d), str(conf_d / "app.conf")]
    assert not conf_d.exists()
    (made,) = results(run([task]))
    assert made["changed"] and conf_d.stat().st_mode & 0o7777 == 0o750
    assert (conf_d / "app.conf").read_text() == "a = 1\n"
    (again,) = results(run([task]))
    assert not again["changed"] and again["directories_changed"] == []


def test_several_directories_in_one_call(play) -> None:
    out, run = play
    task = {
        "localguard.hardening.localguard_directories": {
            "directories": [
                {"path": str(out / "lib"), "owner": "root", "group": "root", "mode": "0755"},
                {"path": str(out / "lib" / "keys"), "owner": "root", "group": "root", "mode": "2750"},
            ]
        }
    }
    (checked,) = results(run([task], "--check", "--diff"))
    assert checked["changed"] and [diff["before"]["state"] for diff in checked["diff"]] == [
        "absent",
        "absent",
    ]
    assert not (out / "lib").exists()
    (made,) = results(run([task]))
    assert made["directories_changed"] == [str(out / "lib"), str(out / "lib" / "keys")]
    assert (out / "lib" / "keys").stat().st_mode & 0o7777 == 0o2750
    (again,) = results(run([task]))
    assert not again["changed"]
    (refused,) = results(
        run([{"localguard.hardening.localguard_directories": {"directories": [{"path": "/x"}]}}])
    )
    assert refused["failed"] and "missing required arguments" in refused["msg"]
