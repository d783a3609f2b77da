# Copyright (c) 2026, localguard contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Jinja filters for the firewall role: thin wrappers around module_utils/localguard_nftables."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping

from ansible.errors import AnsibleFilterError
from ansible_collections.localguard.hardening.plugins.module_utils.localguard_nftables import (
    AddressSet,
    FirewallDataError,
    address_sets,
    check_rate,
    egress_gaps,
    outside_set,
    render_rule,
    rules,
)


def nft_sets(default: Mapping, group: Mapping, host: Mapping, name: str = "firewall_sets") -> dict:
    """Validate merged address sets and split each into IPv4 and IPv6 members."""
    try:
        parsed = address_sets(default, group, host, name)
    except FirewallDataError as exc:
        raise AnsibleFilterError(str(exc)) from None
    return {key: {"v4": list(s.v4), "v6": list(s.v6)} for key, s in parsed.items()}


def nft_rules(default: Mapping, group: Mapping, host: Mapping, sets: Mapping, name: str) -> list[str]:
    """Validate merged rules and render their nft statements in key order.

    `sets` is the output of localguard_nft_sets (already validated).
    """
    known = {key: AddressSet(key, tuple(s["v4"]), tuple(s["v6"])) for key, s in sets.items()}
    try:
        return [line for rule in rules(default, group, host, known, name) for line in render_rule(rule)]
    except FirewallDataError as exc:
        raise AnsibleFilterError(str(exc)) from None


def nft_rate(value: object, where: str) -> str:
    try:
        return check_rate(value, where)
    except FirewallDataError as exc:
        raise AnsibleFilterError(str(exc)) from None


def nft_outside(servers: list[str], members: Mapping) -> list[str]:
    """Servers outside one of localguard_nft_sets' sets; names are resolved on the controller."""
    return outside_set(servers, members, resolve)


def host_addresses(hostnames: list[str], hostvars: Mapping) -> list[str]:
    """Addresses of inventory hosts, for address sets built from groups.

    A host's `localguard_address` wins; else `ansible_host` when it is an IP; else the addresses
    its gathered facts report; else what the controller resolves the name to. A name that none
    of these turn into an address is returned as is, for the set validation to reject by name.
    """
    addresses: list[str] = []
    for name in hostnames:
        host = hostvars[name]
        if "localguard_address" in host:
            addresses.append(str(host["localguard_address"]))
            continue
        target = str(host.get("ansible_host", name))
        if is_ip(target):
            addresses.append(target)
            continue
        addresses.extend(fact_addresses(host.get("ansible_facts", {})) or resolve(target) or [target])
    return addresses


def fact_addresses(facts: Mapping) -> list[str]:
    """The default-route addresses, else every global address (a host on an isolated network
    has no default route)."""
    default = [facts.get(k, {}).get("address") for k in ("default_ipv4", "default_ipv6")]
    if any(default):
        return [a for a in default if a]
    everything = [*facts.get("all_ipv4_addresses", []), *facts.get("all_ipv6_addresses", [])]
    return [a for a in everything if not ipaddress.ip_address(a.split("%")[0]).is_link_local]


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def resolve(name: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return []
    return sorted({str(info[4][0]) for info in infos})


class FilterModule:
    def filters(self) -> dict:
        return {
            "localguard_nft_sets": nft_sets,
            "localguard_nft_rules": nft_rules,
            "localguard_nft_rate": nft_rate,
            "localguard_nft_egress_gaps": egress_gaps,
            "localguard_nft_outside": nft_outside,
            "localguard_host_addresses": host_addresses,
        }
