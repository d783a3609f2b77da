"""The literal path starts of AIDE selection lines, which the skip of BL-AIDE-05's scan searches."""

from __future__ import annotations

import re

import pytest
from ansible_collections.localguard.hardening.plugins.filter.localguard_aide import (
    aide_path_prefixes,
    path_prefix,
)


@pytest.mark.parametrize(
    ("pattern", "prefix"),
    [
        ("/etc", "/etc"),
        ("/usr/lib", "/usr/lib"),
        (r"/etc/\.pwd\.lock$", "/etc/.pwd.lock"),
        ("/var/log/.*", "/var/log/"),
        ("/opt/models?", "/opt/model"),
        ("/srv/m[0-9]", "/srv/m"),
        (r"/data\d+", "/data"),
        ("(/a|/b)", "/"),
        ("/etc|/usr/bin", "/"),
        (r"/srv/(a|b)\|c", "/srv/"),
        ("/srv/[|]x", "/srv/"),
    ],
)
def test_prefix_stops_at_the_first_operator(pattern, prefix):
    assert path_prefix(pattern) == prefix


@pytest.mark.parametrize(
    ("pattern", "path"),
    [
        ("/usr/lib", "/usr/libexec/x"),
        ("/opt/models?", "/opt/model"),
        (r"/data\d+", "/data7/f"),
        ("/var/log/.*", "/var/log/"),
        ("/etc|/usr/bin", "/usr/bin/env"),
    ],
)
def test_every_path_the_expression_selects_starts_with_its_prefix(pattern, path):
    assert re.match(pattern, path)
    assert path.startswith(path_prefix(pattern))


def test_exclusions_are_left_out_and_covered_prefixes_dropped():
    rules = ["/etc LocalguardFile", "/usr/lib LocalguardFile", "/usr/lib/x86 LocalguardFile", "!/etc/mtab$",
             "=/boot LocalguardFile", ""]  # fmt: skip
    expected = ["/etc", "/boot", "/usr/lib", "/opt/models"]
    assert aide_path_prefixes(rules, ["/opt/models", "/etc/models"]) == expected
