"""Reading systemd's merged configuration the way systemd reads it, for the host checks."""

from __future__ import annotations


def effective_settings(cat_config: str) -> dict[str, str]:
    """The last value of each key in `systemd-analyze cat-config` output (later files win)."""
    settings = {}
    for line in cat_config.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith(("#", ";")):
            settings[key.strip()] = value.strip()
    return settings
