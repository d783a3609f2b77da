# Copyright (c) 2026, localguard contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Jinja filters for the baseline role's AIDE family."""

from __future__ import annotations

from collections.abc import Iterable

_SPECIAL = set(".^$*+?()[]{}|\\")
_QUANTIFIERS = set("*?{")


def _has_top_level_alternative(pattern: str) -> bool:
    """Whether `|` splits the whole expression (`/etc|/usr`), outside any group or bracket."""
    depth, in_bracket, index = 0, False, 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index += 2
            continue
        if in_bracket:
            in_bracket = char != "]"
        elif char == "[":
            in_bracket = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            return True
        index += 1
    return False


def path_prefix(pattern: str) -> str:
    """The literal start of an AIDE path expression: every path it selects begins with it.

    AIDE matches a selection line's expression from the start of a path, so `/usr/lib` also selects
    /usr/libexec; the prefix stops at the first regular-expression operator, and a quantifier takes
    back the character it applies to. An alternative of the whole expression has no common start.
    """
    if _has_top_level_alternative(pattern):
        return "/"
    prefix: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern) and not pattern[index + 1].isalnum():
            prefix.append(pattern[index + 1])
            index += 2
            continue
        if char in _SPECIAL:
            if char in _QUANTIFIERS and prefix:
                prefix.pop()
            break
        prefix.append(char)
        index += 1
    return "".join(prefix) or "/"


def aide_path_prefixes(rules: Iterable[str], literal_dirs: Iterable[str] = ()) -> list[str]:
    """Literal path starts of the selection lines (`!` exclusions left out: scanning more is only
    slower) and of directories given as plain paths, shortest first, without duplicates or
    prefixes covered by a shorter one."""
    prefixes = {path_prefix(rule.split()[0].lstrip("=")) for rule in rules if rule.strip() and rule[0] != "!"}
    prefixes.update(literal_dirs)
    kept: list[str] = []
    for prefix in sorted(prefixes, key=lambda p: (len(p), p)):
        if not any(prefix.startswith(shorter) for shorter in kept):
            kept.append(prefix)
    return kept


class FilterModule:
    def filters(self) -> dict:
        return {"localguard_aide_path_prefixes": aide_path_prefixes}
