#!/usr/bin/python
# Copyright (c) 2026, localguard contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Ansible shell around localguard_pki.batch: a run's certificates checked and signed at once."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: localguard_pki_batch
short_description: Check and sign every due certificate of a run in one batch on the localguard CA host
description:
  - Runs on the CA host, once per play (C(run_once) with C(delegate_to) the CA host), with the CSR of
    every host of the play and of every mTLS client, instead of one delegated round trip per holder.
  - A holder's current certificate is kept unless it is missing, not issued by the current CA
    certificate, made for another key, subject or extensions than its CSR asks for (SANs, key usage,
    extended key usage, CRL distribution point), revoked (its serial is in the CA's revocation
    database), or not valid O(renew_before_days) from now; or the request sets C(force).
  - Every CSR must already be checked against what the inventory gives its holder (the pki role does
    that on the controller, PKI-07); an unreadable CSR, or one not signed by its own key, stops the
    whole batch before the CA key is opened.
  - Client certificates are kept on the CA host as C(issued/<name>.crt) and
    C(issued/history/<name>/<serial>.crt) (so a later revocation of the name covers every one still
    valid); names in the revocation database or O(revoked_names) are refused and never signed.
  - The CA key is opened only when something is due. In check mode nothing is signed or written; a due
    holder gets its current certificate back and the reason it would be renewed.
  - The task passes the CA passphrase, so it B(must) set C(no_log=true).
options:
  ca_dir:
    description: The CA directory (C(ca.key), C(ca.crt), C(crl.pem), C(revoked.json), C(issued/)).
    type: path
    default: /etc/localguard/ca
  ca_passphrase:
    description: The passphrase of C(ca.key).
    type: str
    required: true
  valid_days:
    description: Validity of a new certificate, in days.
    type: int
    required: true
  renew_before_days:
    description: A certificate not valid this many days from now is renewed.
    type: int
    required: true
  servers:
    description: Host certificates. The hosts keep their certificates; the CA keeps no copy.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The host's inventory name (the CSR's only subject is C(CN=<name>)).
        type: str
        required: true
      csr:
        description: The host's CSR (PEM).
        type: str
        required: true
      certificate:
        description: The certificate the host holds now (PEM), empty for none.
        type: str
        default: ""
      force:
        description: Sign now, whether or not the current certificate is due.
        type: bool
        default: false
  clients:
    description: mTLS client certificates, kept by the CA in C(issued/).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The client's name, 1-64 letters, digits, C(.), C(_) or C(-).
        type: str
        required: true
      csr:
        description: The client's CSR (PEM).
        type: str
        required: true
      force:
        description: Sign now, whether or not the current certificate is due.
        type: bool
        default: false
  revoked_names:
    description: Client names never to sign, besides those of the revocation database.
    type: list
    elements: str
    default: []
requirements:
  - cryptography
author: localguard contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Sign every due server certificate on the CA host
  localguard.hardening.localguard_pki_batch:
    ca_passphrase: "{{ pki_ca_passphrase }}"
    valid_days: 90
    renew_before_days: 30
    # Each host of the play set pki_sign_request (name, csr, certificate, force) before.
    servers: "{{ ansible_play_hosts | map('extract', hostvars, 'pki_sign_request') | list }}"
  delegate_to: "{{ groups['ca'][0] }}"
  run_once: true
  no_log: true
  register: pki_server_batch

- name: Install this host's certificate
  ansible.builtin.copy:
    content: "{{ pki_server_batch.servers[inventory_hostname].certificate }}"
    dest: /etc/localguard/pki/server.crt
    mode: "0644"
"""

RETURN = r"""
servers:
  description: Per host name, the certificate it ends up with.
  returned: always
  type: dict
  contains:
    certificate:
      description:
        - The new certificate, or the current one when kept (in check mode also when due).
        - Empty when there is none.
      type: str
    signed:
      description: Whether a new certificate was (in check mode, would be) signed.
      type: bool
    reason:
      description: Why it was signed, or null.
      type: str
    serial:
      description: Serial number of RV(servers.certificate), hexadecimal; empty when there is none.
      type: str
    not_after:
      description: End of validity of RV(servers.certificate) (ISO 8601, UTC); empty when there is none.
      type: str
  sample: {"gpu1": {"certificate": "-----BEGIN CERTIFICATE-----...", "signed": false, "reason": null,
           "serial": "3F2A...", "not_after": "2027-02-26T07:31:05Z"}}
clients:
  description: Per client name (refused names left out), the same as RV(servers).
  returned: always
  type: dict
refused:
  description: Client names not signed because they are revoked.
  returned: always
  type: list
  elements: str
ca_certificate:
  description: The CA certificate (PEM), for every host's trust store.
  returned: always
  type: str
crl:
  description: The CA's current CRL (PEM), empty before the first one.
  returned: always
  type: str
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.localguard.hardening.plugins.module_utils.localguard_pki import (
    CRYPTOGRAPHY_IMPORT_ERROR,
    PkiError,
    SignRequest,
    batch,
)

SERVER_OPTIONS = {
    "name": {"type": "str", "required": True},
    "csr": {"type": "str", "required": True},
    "certificate": {"type": "str", "default": ""},
    "force": {"type": "bool", "default": False},
}
CLIENT_OPTIONS = {
    "name": {"type": "str", "required": True},
    "csr": {"type": "str", "required": True},
    "force": {"type": "bool", "default": False},
}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "ca_dir": {"type": "path", "default": "/etc/localguard/ca"},
            "ca_passphrase": {"type": "str", "required": True, "no_log": True},
            "valid_days": {"type": "int", "required": True},
            "renew_before_days": {"type": "int", "required": True},
            "servers": {"type": "list", "elements": "dict", "default": [], "options": SERVER_OPTIONS},
            "clients": {"type": "list", "elements": "dict", "default": [], "options": CLIENT_OPTIONS},
            "revoked_names": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    if CRYPTOGRAPHY_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=str(CRYPTOGRAPHY_IMPORT_ERROR))
    params = module.params
    servers = [SignRequest(s["name"], s["csr"], s["certificate"], s["force"]) for s in params["servers"]]
    clients = [SignRequest(c["name"], c["csr"], force=c["force"]) for c in params["clients"]]
    try:
        result = batch(
            Path(params["ca_dir"]),
            params["ca_passphrase"].encode(),
            servers,
            clients,
            params["valid_days"],
            params["renew_before_days"],
            params["revoked_names"],
            module.check_mode,
        )
    except PkiError as exc:
        module.fail_json(msg=f"localguard_pki_batch: {exc}")
    except OSError as exc:
        module.fail_json(msg=f"localguard_pki_batch: {exc}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
