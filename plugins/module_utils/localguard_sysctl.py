# Copyright (c) 2026, localguard contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Persist sysctls to one file and apply them at runtime in a single pass.

One module call replaces a loop of one task per key (about 1 s per key per host over SSH).
Keys the host does not let us set at runtime (global keys inside a container) are still
persisted, so a real boot applies them. A key may be a glob, as in sysctl.d(5)
(`net.ipv6.conf.*.accept_ra`): at runtime it sets every matching key that exists, except keys
named explicitly, which is what systemd-sysctl does at boot.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

HEADER = "# Managed by localguard (role baseline): local edits are overwritten on the next run.\n"


def proc_path(key: str, proc_sys: Path = Path("/proc/sys")) -> Path:
    """sysctl names use '.' between levels and '/' for a literal dot (eth0/100 is eth0.100)."""
    parts = [part.replace("/", ".") for part in key.split(".")]
    return proc_sys.joinpath(*parts)


GLOB = re.compile(r"[*?[]")


def key_of(path: Path, proc_sys: Path = Path("/proc/sys")) -> str:
    """The sysctl name of a /proc/sys path (the inverse of proc_path)."""
    return ".".join(part.replace(".", "/") for part in path.relative_to(proc_sys).parts)


def runtime_keys(settings: Mapping[str, object], proc_sys: Path = Path("/proc/sys")) -> list[tuple[str, str]]:
    """(setting, live key) pairs in the order they are applied: a glob setting stands for every
    existing key it matches that no setting names explicitly."""
    explicit = {key for key in settings if not GLOB.search(key)}
    pairs = []
    for key in sorted(settings):
        if not GLOB.search(key):
            pairs.append((key, key))
            continue
        pattern = str(proc_path(key, Path()))
        matches = sorted(key_of(path, proc_sys) for path in proc_sys.glob(pattern))
        pairs.extend((key, match) for match in matches if match not in explicit)
    return pairs


def normalize(value: object) -> str:
    return " ".join(str(value).split())


def render(settings: Mapping[str, object]) -> str:
    return HEADER + "".join(f"{key} = {normalize(value)}\n" for key, value in sorted(settings.items()))


@dataclass
class SysctlResult:
    file_changed: bool = False
    applied: dict[str, tuple[str, str]] = field(default_factory=dict)  # key: (before, after)
    skipped: list[str] = field(default_factory=list)
    before_file: str = ""
    after_file: str = ""

    @property
    def changed(self) -> bool:
        return self.file_changed or bool(self.applied)


def write_atomic(path: Path, content: str, mode: int = 0o644) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def enforce(
    settings: Mapping[str, object],
    file: Path,
    skip_runtime: Iterable[str] = (),
    check_mode: bool = False,
    proc_sys: Path = Path("/proc/sys"),
    write_value: Callable[[Path, str], None] = lambda path, value: path.write_text(value + "\n"),
) -> SysctlResult:
    skip = set(skip_runtime)
    result = SysctlResult(after_file=render(settings))
    result.before_file = file.read_text() if file.exists() else ""
    result.file_changed = result.before_file != result.after_file
    if result.file_changed and not check_mode:
        write_atomic(file, result.after_file)
    result.skipped = sorted(key for key in settings if key in skip)
    for setting, key in runtime_keys(settings, proc_sys):
        if setting in skip:
            continue
        path = proc_path(key, proc_sys)
        current = normalize(path.read_text())
        wanted = normalize(settings[setting])
        if current != wanted:
            if not check_mode:
                write_value(path, wanted)
            result.applied[key] = (current, wanted)
    return result
