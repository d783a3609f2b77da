#!/usr/bin/python
# Copyright (c) 2026, localguard contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Ansible shell around localguard_hostenv: report what this host lets localguard enforce."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: localguard_host_facts
short_description: Report which hardening controls this host can enforce
description:
  - Detects whether the host is a container and which kernel interfaces it may change
    (namespaced C(net.*) sysctls, global C(kernel.*) sysctls, the audit subsystem, nftables).
  - Roles read these facts to skip, with a message, only the controls a container forbids,
    while a real host gets every control applied.
  - Read-only; never changes the host.
options: {}
author: localguard contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Learn what this host lets us enforce
  localguard.hardening.localguard_host_facts:

- name: Load audit rules only where the kernel lets us
  ansible.builtin.command: augenrules --load
  when: localguard_can_audit
"""

RETURN = r"""
ansible_facts:
  description: Facts set on the host.
  returned: always
  type: dict
  contains:
    localguard_in_container:
      description: Whether the host is a container.
      type: bool
    localguard_container_type:
      description: The container runtime (C(podman), C(docker), ...) or an empty string.
      type: str
    localguard_proc_sys_net_writable:
      description: Whether C(/proc/sys/net) accepts writes (read-only in a default container).
      type: bool
    localguard_can_set_kernel_sysctls:
      description: Whether global C(kernel.*)/C(fs.*) sysctls can be set at runtime.
      type: bool
    localguard_can_audit:
      description: Whether audit rules can be loaded and auditd run.
      type: bool
    localguard_can_manage_nftables:
      description: Whether the process holds CAP_NET_ADMIN to load nftables rules.
      type: bool
    localguard_can_load_modules:
      description: Whether kernel modules can be loaded (a real host with CAP_SYS_MODULE).
      type: bool
    localguard_can_account_processes:
      description: Whether BSD process accounting can be switched on (a real host with CAP_SYS_PACCT).
      type: bool
    localguard_can_set_clock:
      description: Whether the system clock can be set (a real host with CAP_SYS_TIME).
      type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.localguard.hardening.plugins.module_utils.localguard_hostenv import probe


def main() -> None:
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    module.exit_json(changed=False, ansible_facts=probe().as_facts())


if __name__ == "__main__":
    main()
