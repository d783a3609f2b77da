# Copyright (c) 2026, localguard contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Put a file in place (content, mode, owner, group) in one pass on the host.

ansible.builtin.template and copy make two module calls per file even when nothing changed (a
stat, then the file module for the attributes) and a third transfer when it did; on a fleet that
is most of a hardening rerun. Here the content travels with the call, and one pass compares,
validates, writes atomically and sets the attributes.
"""

from __future__ import annotations

import grp
import os
import pwd
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
