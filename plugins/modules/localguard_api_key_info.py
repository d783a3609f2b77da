#!/usr/bin/python
# Copyright (c) 2026, localguard contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Ansible shell around localguard_apikeys: what the key registry holds and what needs doing."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: localguard_api_key_info
short_description: Read the localguard API key registry and say which keys need attention
description:
  - Runs on the registry host; read-only. Returns every record (without its hash) and which
    names are due for rotation, which have retiring keys past their overlap, which keys have
    expired and, given a usage report, which have gone unused.
options:
  registry:
    description: The registry file.
    type: path
    default: /etc/localguard/keys/registry.json
  now:
    description: Evaluate at this time (C(YYYY-MM-DDTHH:MM:SSZ)) instead of the current time; for tests.
    type: str
  stale_after:
    description: Report in RV(stale) the delivered active keys unused for this long (C(30d), C(12h), C(90s)).
    type: str
  usage:
    description:
      - Usage report, key id to C(last_seen), C(remote) and C(requests), as printed by
        C(localguard-keys usage) on each gateway (merged over gateways).
    type: dict
    default: {}
author: localguard contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Find keys due for rotation
  localguard.hardening.localguard_api_key_info:
  register: lg_keys

- name: Rotate them
  localguard.hardening.localguard_api_key:
    name: "{{ item }}"
    state: rotated
    retire: true
  loop: "{{ lg_keys.due + lg_keys.retirable }}"
  no_log: true
"""

RETURN = r"""
serial:
  description: The registry serial.
  returned: always
  type: int
records:
  description: Every record, without its hash.
  returned: always
  type: list
  elements: dict
due:
  description:
    - Names whose newest active key is due for rotation (older than its max_age) or was never delivered.
  returned: always
  type: list
  elements: str
retirable:
  description:
    - Names with retiring keys whose overlap has ended (removed by
      M(localguard.hardening.localguard_api_key) with
      O(localguard.hardening.localguard_api_key#module:state=rotated) and
      O(localguard.hardening.localguard_api_key#module:retire=true)).
  returned: always
  type: list
  elements: str
expired:
  description: Ids of active or retiring keys past their not_after.
  returned: always
  type: list
  elements: str
stale:
  description: Ids of delivered active keys unused for O(stale_after) (never used and older than that,
    or last used before it); empty without O(stale_after).
  returned: always
  type: list
  elements: str
usage:
  description: The usage report given in O(usage).
  returned: always
  type: dict
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.localguard.hardening.plugins.module_utils.localguard_apikeys import (
    ApiKeyError,
    due_names,
    expired_ids,
    load_registry,
    parse_duration,
    parse_ts,
    retirable_names,
    stale_keys,
    utcnow,
)


def run(params: dict) -> dict:
    try:
        now = parse_ts(params["now"]) if params["now"] else utcnow()
    except ValueError:
        raise ApiKeyError(f"now {params['now']!r} is not YYYY-MM-DDTHH:MM:SSZ") from None
    stale_after = parse_duration(params["stale_after"]) if params["stale_after"] else 0
    registry = load_registry(Path(params["registry"]))
    usage = params["usage"] or {}
    return {
        "changed": False,
        "serial": registry.serial,
        "records": [r.public() for r in registry.keys],
        "due": due_names(registry, now),
        "retirable": retirable_names(registry, now),
        "expired": expired_ids(registry, now),
        "stale": stale_keys(registry, usage, stale_after, now) if stale_after else [],
        "usage": usage,
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "registry": {"type": "path", "default": "/etc/localguard/keys/registry.json"},
            "now": {"type": "str"},
            "stale_after": {"type": "str"},
            "usage": {"type": "dict", "default": {}},
        },
        supports_check_mode=True,
    )
    try:
        result = run(module.params)
    except ApiKeyError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
