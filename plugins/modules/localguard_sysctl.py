#!/usr/bin/python
# Copyright (c) 2026, localguard contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Ansible shell around localguard_sysctl: persist and apply a set of sysctls in one pass."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: localguard_sysctl
short_description: Persist sysctls to one file and apply them at runtime in one pass
description:
  - Renders all O(settings) into O(file) (sorted, one C(key = value) per line) and writes every
    key not listed in O(skip_runtime) to C(/proc/sys) when its live value differs.
  - A key may be a glob, as in sysctl.d(5) (C(net.ipv6.conf.*.accept_ra)); at runtime it sets every
    matching key that exists, except keys O(settings) names explicitly.
  - Keys in O(skip_runtime) are only persisted, for hosts that forbid changing them at runtime
    (global C(kernel.*) keys inside a container).
  - One call replaces a loop of M(ansible.posix.sysctl) tasks, which costs a round trip per key.
options:
  settings:
    description: Sysctl names and values.
    type: dict
    required: true
  file:
    description: The file under C(/etc/sysctl.d) that holds the settings for the next boot.
    type: path
    required: true
  skip_runtime:
    description: Keys to persist without setting them at runtime.
    type: list
    elements: str
    default: []
author: localguard contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Harden kernel pointers and reverse-path filtering
  localguard.hardening.localguard_sysctl:
    settings:
      kernel.kptr_restrict: 2
      net.ipv4.conf.all.rp_filter: 1
    file: /etc/sysctl.d/60-localguard.conf
    skip_runtime: "{{ ['kernel.kptr_restrict'] if localguard_in_container else [] }}"
"""

RETURN = r"""
applied:
  description: Keys whose live value was (or in check mode would be) changed, with before and after.
  returned: always
  type: dict
  sample: {"net.ipv4.conf.all.rp_filter": {"before": "2", "after": "1"}}
persisted_only:
  description:
    - Keys persisted but not set at runtime.
    - Not called C(skipped), which Ansible would read as a skipped task.
  returned: always
  type: list
  elements: str
file_changed:
  description: Whether the settings file was (or would be) rewritten.
  returned: always
  type: bool
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.localguard.hardening.plugins.module_utils.localguard_sysctl import enforce


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "settings": {"type": "dict", "required": True},
            "file": {"type": "path", "required": True},
            "skip_runtime": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        result = enforce(params["settings"], Path(params["file"]), params["skip_runtime"], module.check_mode)
    except OSError as exc:
        module.fail_json(msg=f"cannot apply sysctl: {exc}")
    module.exit_json(
        changed=result.changed,
        applied={key: {"before": b, "after": a} for key, (b, a) in result.applied.items()},
        persisted_only=result.skipped,
        file_changed=result.file_changed,
        diff={
            "before": result.before_file
            + "".join(f"# live {k} = {b}\n" for k, (b, _after) in result.applied.items()),
            "after": result.after_file
            + "".join(f"# live {k} = {a}\n" for k, (_before, a) in result.applied.items()),
            "before_header": params["file"],
            "after_header": params["file"],
        },
    )


if __name__ == "__main__":
    main()
