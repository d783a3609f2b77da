# Copyright (c) 2026, localguard contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Jinja filters for the pki role: thin wrappers around module_utils/localguard_pki."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ansible.errors import AnsibleFilterError
from ansible_collections.localguard.hardening.plugins.module_utils.localguard_pki import (
    PkiError,
    client_name_problems,
    csr_problems,
    expected_sans,
    host_address,
    is_ip,
    name_constraints,
)


def _sans_of(name: str, hostvars: Mapping) -> list[str]:
    host = hostvars[name]
    try:
        return expected_sans(
            name,
            host.get("localguard_address"),
            host.get("ansible_host"),
            host.get("pki_server_extra_sans") or [],
        )
    except PkiError as exc:
        raise AnsibleFilterError(f"{name}: pki_server_extra_sans: {exc}") from None


def pki_expected_sans(name: str, hostvars: Mapping) -> list[str]:
    """SANs for `name`'s server certificate, from the inventory only."""
    return _sans_of(name, hostvars)


def pki_name_constraints(names: Sequence[str], hostvars: Mapping, ipv4_prefix: int, ipv6_prefix: int) -> list:
    """Permitted subtrees for the CA: every managed host's expected SANs."""
    return name_constraints({n: _sans_of(n, hostvars) for n in names}, int(ipv4_prefix), int(ipv6_prefix))


def pki_csr_problems(csr_pem: str, name: str, sans: Sequence[str], crl_urls: Sequence[str]) -> list[str]:
    try:
        return csr_problems(csr_pem, name, sans, crl_urls)
    except PkiError as exc:  # no `cryptography` on the controller
        raise AnsibleFilterError(f"localguard_pki_csr_problems: {exc}") from None


def pki_client_name_problems(names: Sequence[str], permitted: Sequence[str]) -> list[str]:
    return client_name_problems(names, permitted)


def pki_host_url(name: str, hostvars: Mapping, scheme: str, port: int, path: str) -> str:
    """<scheme>://<address>[:port]<path>: a host's address from the inventory, else its name."""
    host = hostvars[name]
    address = host_address(name, host.get("localguard_address"), host.get("ansible_host")) or name
    if is_ip(address) and ":" in address:
        address = f"[{address}]"
    default_port = {"http": 80, "https": 443}[scheme]
    return f"{scheme}://{address}{'' if int(port) == default_port else f':{port}'}{path}"


def pki_crl_url(name: str, hostvars: Mapping, port: int) -> str:
    """http://<CA address>[:port]/crl.der, where every certificate says its CRL is."""
    return pki_host_url(name, hostvars, "http", port, "/crl.der")


class FilterModule:
    def filters(self) -> dict:
        return {
            "localguard_pki_expected_sans": pki_expected_sans,
            "localguard_pki_name_constraints": pki_name_constraints,
            "localguard_pki_csr_problems": pki_csr_problems,
            "localguard_pki_client_name_problems": pki_client_name_problems,
            "localguard_pki_crl_url": pki_crl_url,
            "localguard_pki_host_url": pki_host_url,
        }
