"""localguard_file's core: one pass compares, validates, writes atomically and sets attributes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ansible_collections.localguard.hardening.plugins.module_utils.localguard_file import (
    DIFF_LIMIT,
    FileError,
    Wanted,
    compare,
    diff_text,
    parse_mode,
    put,
    resolve,
)

ME = (os.getuid(), os.getgid())


def wanted(content: bytes = b"a = 1\n", mode: int = 0o640) -> Wanted:
    return Wanted(content, mode, *ME)


def test_a_new_file_is_written_with_its_mode(tmp_path: Path) -> None:
    dest = tmp_path / "app.conf"
    outcome = put(dest, wanted(), check_mode=False)
    assert outcome.changed and outcome.content_changed and outcome.before is None
    assert dest.read_bytes() == b"a = 1\n"
    assert dest.stat().st_mode & 0o7777 == 0o640
    assert list(tmp_path.iterdir()) == [dest], "no temporary file is left behind"


def test_the_same_file_is_left_alone(tmp_path: Path) -> None:
    dest = tmp_path / "app.conf"
    put(dest, wanted(), check_mode=False)
    before = dest.stat()
    outcome = put(dest, wanted(), check_mode=False)
    assert not outcome.changed
    assert dest.stat().st_ino == before.st_ino and dest.stat().st_mtime_ns == before.st_mtime_ns


def test_a_mode_change_alone_keeps_the_file(tmp_path: Path) -> None:
    dest = tmp_path / "app.conf"
    put(dest, wanted(), check_mode=False)
    inode = dest.stat().st_ino
    outcome = put(dest, wanted(mode=0o600), check_mode=False)
    assert outcome.attributes_changed and not outcome.content_changed
    assert dest.stat().st_mode & 0o7777 == 0o600 and dest.stat().st_ino == inode


def test_new_content_replaces_the_file_and_keeps_the_old_for_the_diff(tmp_path: Path) -> None:
    dest = tmp_path / "app.conf"
    put(dest, wanted(), check_mode=False)
    outcome = put(dest, wanted(b"a = 2\n"), check_mode=False)
    assert outcome.content_changed and outcome.before == b"a = 1\n"
    assert dest.read_bytes() == b"a = 2\n"


def test_check_mode_reports_and_writes_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "app.conf"
    assert put(dest, wanted(), check_mode=True).changed
    assert not dest.exists()
    put(dest, wanted(), check_mode=False)
    assert put(dest, wanted(b"a = 2\n", 0o600), check_mode=True).changed
    assert dest.read_bytes() == b"a = 1\n" and dest.stat().st_mode & 0o7777 == 0o640


def test_validate_sees_the_new_content_before_it_lands(tmp_path: Path) -> None:
    dest = tmp_path / "app.conf"
    put(dest, wanted(), check_mode=False)
    seen = []

    def refuse(path: Path) -> None:
        seen.append((path.parent, path.read_bytes(), path.stat().st_mode & 0o7777))
        raise FileError("refused")

    with pytest.raises(FileError, match="refused"):
        put(dest, wanted(b"broken\n"), check_mode=False, validate=refuse)
    assert seen == [(tmp_path, b"broken\n", 0o640)]
    assert dest.read_bytes() == b"a = 1\n", "a refused file never lands"
    assert list(tmp_path.iterdir()) == [dest]


def test_validate_is_not_run_when_nothing_changes(tmp_path: Path) -> None:
    dest = tmp_path / "app.conf"
    put(dest, wanted(), check_mode=False)

    def fail(path: Path) -> None:
        raise AssertionError("validate ran for an unchanged file")

    assert not put(dest, wanted(), check_mode=False, validate=fail).changed


def test_a_missing_directory_is_named_and_not_created(tmp_path: Path) -> None:
    with pytest.raises(FileError, match="does not exist"):
        put(tmp_path / "nope" / "app.conf", wanted(), check_mode=False)
    assert not (tmp_path / "nope").exists()


def test_check_mode_reports_a_file_in_a_directory_still_to_be_created(tmp_path: Path) -> None:
    assert put(tmp_path / "nope" / "app.conf", wanted(), check_mode=True).content_changed


def test_a_directory_is_not_overwritten(tmp_path: Path) -> None:
    with pytest.raises(FileError, match="is a directory"):
        compare(tmp_path, wanted())


@pytest.mark.parametrize(
    ("given", "expected"), [("0640", 0o640), ("640", 0o640), (0o600, 0o600), ("2750", 0o2750)]
)
def test_octal_modes(given: str | int, expected: int) -> None:
    assert parse_mode(given) == expected


@pytest.mark.parametrize("given", ["u=rw,g=r", "0999", "77777"])
def test_other_modes_are_refused(given: str) -> None:
    with pytest.raises(FileError):
        parse_mode(given)


def test_only_small_text_is_diffed() -> None:
    assert diff_text(None) == ""
    assert diff_text(b"x\n") == "x\n"
    assert diff_text(b"\xff\xfe") is None
    assert diff_text(b"x" * (DIFF_LIMIT + 1)) is None


def test_accounts_are_resolved_by_name() -> None:
    assert resolve("root", "root") == (0, 0)
    with pytest.raises(FileError, match="owner 'no-such-account'"):
        resolve("no-such-account", "root")
    with pytest.raises(FileError, match="group 'no-such-group'"):
        resolve("root", "no-such-group")


def test_check_mode_reports_a_file_for_an_account_still_to_be_created(tmp_path: Path) -> None:
    """On a new host a --check run only predicted the service account that will own the file."""
    uid, gid = resolve("root", "no-such-group", check_mode=True)
    dest = tmp_path / "app.conf"
    put(dest, wanted(), check_mode=False)
    outcome = put(dest, Wanted(b"a = 1\n", 0o640, uid, gid), check_mode=True)
    assert outcome.attributes_changed and not outcome.content_changed
