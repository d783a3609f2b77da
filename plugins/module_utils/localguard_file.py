# Copyright (c) 2026, localguard contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Put a file in place (content, mode, owner, group) in one pass on the host.

ansible.builtin.template and copy make two module calls per file even when nothing changed (a
stat, then the file module for the attributes) and a third transfer when it did; on a fleet that
is most of a hardening rerun. Here the content travels with the call, and one pass compares,
validates, writes atomically and sets the attributes; the directories a file goes into can be
made in the same call.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# A diff is for a reader: larger or binary files are only reported as changed.
DIFF_LIMIT = 128 * 1024


class FileError(Exception):
    """A file that cannot be put in place, with the reason an operator can act on."""


@dataclass(frozen=True)
class Wanted:
    content: bytes
    mode: int
    uid: int
    gid: int


@dataclass(frozen=True)
class Outcome:
    content_changed: bool
    attributes_changed: bool
    before: bytes | None

    @property
    def changed(self) -> bool:
        return self.content_changed or self.attributes_changed


def parse_mode(mode: str | int) -> int:
    """An octal mode as Ansible tasks write it ('0640', '640', 0o640); symbolic modes are refused."""
    if isinstance(mode, int):
        value = mode
    else:
        try:
            value = int(str(mode), 8)
        except ValueError:
            raise FileError(f"mode {mode!r} is not an octal mode such as '0640'") from None
    if not 0 <= value <= 0o7777:
        raise FileError(f"mode {mode!r} is out of range")
    return value


# An account a --check run only predicted: never equal to a file's owner, so the file is reported.
NOT_YET = -1


def _account_id(kind: str, name: str, lookup: Callable[[str], int], check_mode: bool) -> int:
    try:
        return lookup(name)
    except KeyError:
        if not check_mode:
            raise FileError(f"{kind} {name!r} does not exist on this host") from None
        return NOT_YET


def resolve(owner: str, group: str, check_mode: bool = False) -> tuple[int, int]:
    return (
        _account_id("owner", owner, lambda name: pwd.getpwnam(name).pw_uid, check_mode),
        _account_id("group", group, lambda name: grp.getgrnam(name).gr_gid, check_mode),
    )


@dataclass(frozen=True)
class Directory:
    path: Path
    mode: int
    uid: int
    gid: int


@dataclass(frozen=True)
class DirectoryChange:
    path: Path
    # (mode, uid, gid) before the change; None for a directory that was not there.
    before: tuple[int, int, int] | None


def ensure_directories(directories: list[Directory], check_mode: bool) -> list[DirectoryChange]:
    """Make each directory exist with its mode, owner and group, in the order given (a parent
    before its children), and return those that were (or in check mode would be) created or
    changed. A new directory is made 0700 and only then given its owner and mode, so it is never
    open to more than it should be; its parent must exist or come earlier in the list (in check
    mode it may be missing: on a new host an earlier task, a package say, only predicted it)."""
    changes = []
    for directory in directories:
        path, wanted = directory.path, (directory.mode, directory.uid, directory.gid)
        try:
            status = path.stat()
        except FileNotFoundError:
            if not check_mode and not path.parent.is_dir():
                raise FileError(f"{path.parent} does not exist: list it before {path}") from None
            changes.append(DirectoryChange(path, None))
        else:
            if not stat.S_ISDIR(status.st_mode):
                raise FileError(f"{path} exists and is not a directory")
            before = (status.st_mode & 0o7777, status.st_uid, status.st_gid)
            if before == wanted:
                continue
            changes.append(DirectoryChange(path, before))
        if not check_mode:
            path.mkdir(mode=0o700, exist_ok=True)
            os.chown(path, directory.uid, directory.gid)
            # After chown, which may clear the setgid bit.
            os.chmod(path, directory.mode)
    return changes


# The `directories` option of localguard_file and localguard_directories (doc fragment
# localguard.hardening.localguard_directories).
DIRECTORIES_SPEC = {
    "type": "list",
    "elements": "dict",
    "options": {
        "path": {"type": "path", "required": True},
        "owner": {"type": "str", "required": True},
        "group": {"type": "str", "required": True},
        "mode": {"type": "raw", "required": True},
    },
}


def wanted_directories(entries: list[dict], check_mode: bool) -> list[Directory]:
    """The `directories` option's entries, accounts and modes resolved."""
    return [
        Directory(
            Path(entry["path"]),
            parse_mode(entry["mode"]),
            *resolve(entry["owner"], entry["group"], check_mode),
        )
        for entry in entries
    ]


def _account_name(lookup: Callable[[int], str], number: int) -> str:
    try:
        return lookup(number)
    except KeyError:
        return str(number)


def directory_diffs(changes: list[DirectoryChange], entries: list[dict]) -> list[dict]:
    """The changes' diffs, each with the attributes its `directories` entry asked for."""
    by_path = {Path(entry["path"]): entry for entry in entries}
    return [directory_diff(change, by_path[change.path]) for change in changes]


def directory_diff(change: DirectoryChange, entry: dict) -> dict:
    """A diff as ansible.builtin.file shows one: the state and attributes before and after."""
    path = str(change.path)
    after = {"path": path, "state": "directory", "mode": f"{parse_mode(entry['mode']):04o}"}
    after.update(owner=entry["owner"], group=entry["group"])
    before: dict = {"path": path, "state": "absent"}
    if change.before is not None:
        mode, uid, gid = change.before
        before.update(
            state="directory",
            mode=f"{mode:04o}",
            owner=_account_name(lambda n: pwd.getpwuid(n).pw_name, uid),
            group=_account_name(lambda n: grp.getgrgid(n).gr_name, gid),
        )
    return {"before": before, "after": after, "before_header": path, "after_header": path}


def compare(dest: Path, wanted: Wanted) -> Outcome:
    if dest.is_dir():
        raise FileError(f"{dest} is a directory")
    try:
        before = dest.read_bytes()
        status = dest.stat()
    except FileNotFoundError:
        return Outcome(content_changed=True, attributes_changed=False, before=None)
    attributes = (status.st_mode & 0o7777, status.st_uid, status.st_gid)
    return Outcome(
        content_changed=before != wanted.content,
        attributes_changed=attributes != (wanted.mode, wanted.uid, wanted.gid),
        before=before,
    )


def put(
    dest: Path,
    wanted: Wanted,
    check_mode: bool,
    validate: Callable[[Path], None] | None = None,
) -> Outcome:
    """Make dest hold wanted. New content goes through a temporary file in the same directory,
    which validate sees first and which replaces dest in one rename: a reader never sees half a
    file, and a file the validator refuses never lands."""
    outcome = compare(dest, wanted)
    if check_mode or not outcome.changed:
        # A --check run on a new host: the task that creates the directory only predicted it.
        return outcome
    if not dest.parent.is_dir():
        raise FileError(f"{dest.parent} does not exist: create the directory first")
    if not outcome.content_changed:
        os.chown(dest, wanted.uid, wanted.gid)
        os.chmod(dest, wanted.mode)
        return outcome
    fd, temporary = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            # Attributes first, so the content is never readable by more than it should be.
            os.fchown(handle.fileno(), wanted.uid, wanted.gid)
            os.fchmod(handle.fileno(), wanted.mode)
            handle.write(wanted.content)
            handle.flush()
            os.fsync(handle.fileno())
        if validate is not None:
            validate(Path(temporary))
        os.replace(temporary, dest)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return outcome


def diff_text(data: bytes | None) -> str | None:
    """The text a diff shows, or None when the data is too large or not text."""
    if data is None:
        return ""
    if len(data) > DIFF_LIMIT:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None
