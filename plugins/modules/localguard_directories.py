#!/usr/bin/python
# Copyright (c) 2026, localguard contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Ansible shell around localguard_file's directories: several directories in one call."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: localguard_directories
short_description: Make several directories with their mode, owner and group in one call per host
description:
  - Makes each directory in O(directories), or gives it the listed mode, owner and group, in one
    module call per host. M(ansible.builtin.file) in a loop makes one call per directory.
  - Where the directories hold a file localguard writes, M(localguard.hardening.localguard_file)
    takes the same O(directories) option and makes them in the file's own call.
extends_documentation_fragment:
  - localguard.hardening.localguard_directories
options:
  directories:
    required: true
notes:
  - Supports check mode and diff mode.
author: localguard contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: GW-03 | Create the key state directory and by-hash/ (lg-keys writes, nginx reads)
  localguard.hardening.localguard_directories:
    directories:
      - {path: /var/lib/localguard/gateway-keys, owner: lg-keys, group: www-data, mode: "2750"}
      - {path: /var/lib/localguard/gateway-keys/by-hash, owner: lg-keys, group: www-data, mode: "2750"}
"""

RETURN = r"""
directories_changed:
  description: The directories that were (or would be) created or given new attributes.
  returned: always
  type: list
  elements: str
"""


from ansible.module_utils.basic import AnsibleModule
from ansible_collections.localguard.hardening.plugins.module_utils.localguard_file import (
    DIRECTORIES_SPEC,
    FileError,
    directory_diffs,
    ensure_directories,
    wanted_directories,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={"directories": {**DIRECTORIES_SPEC, "required": True}},
        supports_check_mode=True,
    )
    entries = module.params["directories"]
    try:
        made = ensure_directories(wanted_directories(entries, module.check_mode), module.check_mode)
    except (FileError, OSError) as exc:
        module.fail_json(msg=str(exc))
    result = {"changed": bool(made), "directories_changed": [str(change.path) for change in made]}
    if module._diff and made:
        result["diff"] = directory_diffs(made, entries)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
