# Copyright (c) 2026, localguard contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Filters over the API key core (plugins/module_utils/localguard_apikeys.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ansible.errors import AnsibleFilterError
from ansible_collections.localguard.hardening.plugins.module_utils.localguard_apikeys import (
    ApiKeyError,
    merge_usage,
)


def key_usage_merge(reports: Iterable[Mapping]) -> dict:
    """The gateways' `localguard-keys usage` reports as one: latest use per key id, requests summed."""
    try:
        return merge_usage(reports)
    except (ApiKeyError, KeyError, TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"localguard_key_usage_merge: {exc}") from exc


class FilterModule:
    def filters(self) -> dict:
        return {"localguard_key_usage_merge": key_usage_merge}
