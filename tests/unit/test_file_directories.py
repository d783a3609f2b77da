"""localguard_file's directories: made in order, never open to more than their mode, reported
only when created or changed, and left alone in check mode."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from ansible_collections.localguard.hardening.plugins.module_utils.localguard_file import (
    NOT_YET,
    Directory,
    DirectoryChange,
    FileError,
    directory_diffs,
    ensure_directories,
    wanted_directories,
)

ME = (os.getuid(), os.getgid())


def directory(path: Path, mode: int = 0o750) -> Directory:
    return Directory(path, mode, *ME)


def attributes(path: Path) -> tuple[int, int, int]:
    status = path.stat()
    return status.st_mode & 0o7777, status.st_uid, status.st_gid


def test_new_directories_are_made_parent_first_with_their_modes(tmp_path: Path) -> None:
    parent, child = tmp_path / "lib", tmp_path / "lib" / "reports"
    changes = ensure_directories([directory(parent, 0o755), directory(child, 0o2750)], check_mode=False)
    assert changes == [DirectoryChange(parent, None), DirectoryChange(child, None)]
    assert attributes(parent) == (0o755, *ME) and attributes(child) == (0o2750, *ME)


def test_directories_as_wanted_are_not_reported(tmp_path: Path) -> None:
    wanted = [directory(tmp_path / "a", 0o700), directory(tmp_path / "a" / "b", 0o750)]
    ensure_directories(wanted, check_mode=False)
    inode = (tmp_path / "a").stat().st_ino
    assert ensure_directories(wanted, check_mode=False) == []
    assert (tmp_path / "a").stat().st_ino == inode


def test_a_wrong_mode_is_fixed_and_reported_with_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / "conf.d"
    path.mkdir(mode=0o777)
    path.chmod(0o777)
    (changed,) = ensure_directories([directory(path, 0o750)], check_mode=False)
    assert changed == DirectoryChange(path, (0o777, *ME))
    assert attributes(path) == (0o750, *ME)


def test_a_new_directory_is_never_more_open_than_0700_before_its_mode(tmp_path: Path, monkeypatch) -> None:
    """Between mkdir and chmod another account must not get in: the directory starts at 0700."""
    seen = []
    real_chown = os.chown

    def chown(path, uid, gid):
        seen.append(Path(path).stat().st_mode & 0o7777)
        real_chown(path, uid, gid)

    monkeypatch.setattr(os, "chown", chown)
    old_umask = os.umask(0)
    try:
        ensure_directories([directory(tmp_path / "secret", 0o755)], check_mode=False)
    finally:
        os.umask(old_umask)
    assert seen == [0o700]


def test_check_mode_reports_and_makes_nothing(tmp_path: Path) -> None:
    parent, child = tmp_path / "new", tmp_path / "new" / "child"
    fixed = tmp_path / "open"
    fixed.mkdir()
    fixed.chmod(0o777)
    changes = ensure_directories([directory(parent), directory(child), directory(fixed)], check_mode=True)
    assert [change.path for change in changes] == [parent, child, fixed]
    assert not parent.exists() and fixed.stat().st_mode & 0o777 == 0o777


def test_an_account_still_to_be_created_is_reported_in_check_mode(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir(mode=0o750)
    (tmp_path / "state").chmod(0o750)
    (wanted,) = wanted_directories(
        [{"path": str(tmp_path / "state"), "owner": "root", "group": "no-such-group", "mode": "0750"}],
        check_mode=True,
    )
    assert wanted.gid == NOT_YET
    assert ensure_directories([wanted], check_mode=True) == [
        DirectoryChange(tmp_path / "state", (0o750, *ME))
    ]
    with pytest.raises(FileError, match="group 'no-such-group'"):
        wanted_directories([{"path": "/x", "owner": "root", "group": "no-such-group", "mode": "0750"}], False)


def test_a_missing_parent_is_named_and_nothing_is_made(tmp_path: Path) -> None:
    with pytest.raises(FileError, match=f"{tmp_path / 'missing'} does not exist"):
        ensure_directories([directory(tmp_path / "missing" / "child")], check_mode=False)
    assert not (tmp_path / "missing").exists()


def test_check_mode_reports_a_directory_whose_parent_an_earlier_task_only_predicted(tmp_path: Path) -> None:
    """On a new host, --check does not install the package that makes /etc/nginx."""
    child = tmp_path / "missing" / "child"
    assert ensure_directories([directory(child)], check_mode=True) == [DirectoryChange(child, None)]


def test_a_file_in_the_way_is_refused(tmp_path: Path) -> None:
    (tmp_path / "conf.d").write_text("not a directory\n")
    with pytest.raises(FileError, match="exists and is not a directory"):
        ensure_directories([directory(tmp_path / "conf.d")], check_mode=False)


def test_a_symlink_to_a_directory_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o750)
    (tmp_path / "real").chmod(0o750)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert ensure_directories([directory(tmp_path / "link", 0o750)], check_mode=False) == []
    assert stat.S_ISLNK((tmp_path / "link").lstat().st_mode)


def test_diffs_show_state_and_attributes_before_and_after(tmp_path: Path) -> None:
    entries = [
        {"path": str(tmp_path / "new"), "owner": "root", "group": "root", "mode": "0755"},
        {"path": f"{tmp_path / 'old'}/", "owner": "root", "group": "root", "mode": "2750"},
    ]
    changes = [DirectoryChange(tmp_path / "new", None), DirectoryChange(tmp_path / "old", (0o777, 0, 0))]
    new, old = directory_diffs(changes, entries)
    assert new["before"] == {"path": str(tmp_path / "new"), "state": "absent"}
    assert new["after"] == {
        "path": str(tmp_path / "new"),
        "state": "directory",
        "mode": "0755",
        "owner": "root",
        "group": "root",
    }
    assert old["before"] == {
        "path": str(tmp_path / "old"),
        "state": "directory",
        "mode": "0777",
        "owner": "root",
        "group": "root",
    }
    assert old["after"]["mode"] == "2750"
