"""Filters over the API key core (plugins/module_utils/localguard_apikeys.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from ansible.errors import AnsibleFilterError

# Filters run on the controller, where the project's module_utils are not a package path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "module_utils"))
from localguard_apikeys import ApiKeyError, merge_usage  # noqa: E402


def key_usage_merge(reports: Iterable[Mapping]) -> dict:
    """The gateways' `localguard-keys usage` reports as one: latest use per key id, requests summed."""
    try:
        return merge_usage(reports)
    except (ApiKeyError, KeyError, TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"localguard_key_usage_merge: {exc}") from exc


class FilterModule:
    def filters(self) -> dict:
        return {"localguard_key_usage_merge": key_usage_merge}
