# Copyright (c) 2026, localguard contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Lookup: where a host's PKI files live, from the one definition in module_utils/localguard_paths."""

from __future__ import annotations

DOCUMENTATION = r"""
name: localguard_pki_paths
author: localguard contributors (!UNKNOWN)
short_description: Paths of the host's PKI files as the pki role installs them
description:
  - Returns one dictionary with the keys C(dir), C(key), C(cert), C(ca) and C(crl).
  - The pki role writes these files; the gateway, key registry, log collector and log shipping
    roles read them. Defined once, in the collection's module_utils.
options: {}
"""

EXAMPLES = r"""
- name: Show where the server certificate is
  ansible.builtin.debug:
    msg: "{{ lookup('localguard.hardening.localguard_pki_paths').cert }}"
"""

RETURN = r"""
_raw:
  description: One dictionary of paths (dir, key, cert, ca, crl).
  type: list
  elements: dict
"""

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase
from ansible_collections.localguard.hardening.plugins.module_utils.localguard_paths import PKI_PATHS


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        if terms:
            raise AnsibleLookupError("localguard_pki_paths takes no terms; read a key of its result instead")
        return [dict(PKI_PATHS)]
