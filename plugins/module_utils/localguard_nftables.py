# Copyright (c) 2026, localguard contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Validate firewall data and turn it into nftables statements.

Rules are dicts keyed by sortable names ("010 ssh from admins"), merged default -> group -> host
by the role; a null value removes an entry. Address sets are named lists of IPs/CIDRs, split
here into an IPv4 and an IPv6 nft set, so 10,000 CIDRs still cost one rule. Every error names
the variable and the entry, so a typo fails before any host changes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

PROTOCOLS = ("tcp", "udp", "icmp", "icmpv6", "any")
PORT_PROTOCOLS = {"tcp", "udp"}
ACTIONS = ("accept", "drop", "reject")
RULE_KEYS = {"proto", "dport", "saddr", "daddr", "saddr_set", "daddr_set", "iifname", "oifname", "action",
             "icmp_type", "limit", "comment"}  # fmt: skip
SET_NAME = re.compile(r"^[a-z][a-z0-9_]{0,28}$")
IFNAME = re.compile(r"^[A-Za-z0-9_.:*-]{1,15}$")
ICMP_TYPE = re.compile(r"^[a-z][a-z0-9-]*$")
RATE = re.compile(r"^\d+/(second|minute|hour|day)$")


class FirewallDataError(ValueError):
    """Raised for data that must not reach nft; the message names variable and entry."""


@dataclass(frozen=True)
class AddressSet:
    name: str
    v4: tuple[str, ...] = ()
    v6: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    name: str
    proto: tuple[str, ...] = ("any",)
    dports: tuple[str, ...] = ()
    saddr: AddressSet | None = None
    daddr: AddressSet | None = None
    saddr_set: str | None = None
    daddr_set: str | None = None
    iifname: str | None = None
    oifname: str | None = None
    icmp_types: tuple[str, ...] = ()
    action: str = "accept"
    limit: str | None = None
    comment: str = ""


def parse_network(value: object, where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    text = str(value).strip()
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            address = text.split("/", 1)[0]
            raise FirewallDataError(
                f"{where}: '{text}' has host bits set; write {address}/{32 if ':' not in address else 128} "
                f"for one host or {ipaddress.ip_network(text, strict=False)} for the network"
            ) from None
        raise FirewallDataError(
            f"{where}: '{text}' is not an IPv4/IPv6 address or CIDR"
            " (for an inventory host, set localguard_address)"
        ) from None


def address_set(name: str, members: Iterable[object] | None, where: str) -> AddressSet:
    if not SET_NAME.match(name):
        raise FirewallDataError(f"{where}: set name '{name}' must match {SET_NAME.pattern}")
    if members is None:
        members = []
    if isinstance(members, str | bytes) or not isinstance(members, Iterable):
        raise FirewallDataError(f"{where}: set '{name}' must be a list of addresses, got {members!r}")
    v4: set[ipaddress.IPv4Network] = set()
    v6: set[ipaddress.IPv6Network] = set()
    for member in members:
        network = parse_network(member, f"{where}['{name}']")
        (v4 if network.version == 4 else v6).add(network)  # type: ignore[arg-type]
    # Overlapping or adjacent CIDRs are merged here so nft gets a minimal interval set.
    return AddressSet(
        name,
        tuple(str(n) for n in ipaddress.collapse_addresses(sorted(v4))),
        tuple(str(n) for n in ipaddress.collapse_addresses(sorted(v6))),
    )


def merge_layers(
    default: Mapping | None, group: Mapping | None, host: Mapping | None, name: str
) -> dict[str, tuple[str, object]]:
    """Merge default -> group -> host. Each entry keeps the variable it came from, so an error
    names what the operator wrote; a null value in a later layer removes the entry."""
    merged: dict[str, tuple[str, object]] = {}
    for layer, values in (("default", default), ("group", group), ("host", host)):
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise FirewallDataError(f"{name}_{layer} must be a dict, got {type(values).__name__}")
        for key, value in values.items():
            merged[str(key)] = (f"{name}_{layer}", value)
    return {key: entry for key, entry in sorted(merged.items()) if entry[1] is not None}


def address_sets(
    default: Mapping | None,
    group: Mapping | None = None,
    host: Mapping | None = None,
    name: str = "firewall_sets",
) -> dict[str, AddressSet]:
    """Merged, validated address sets."""
    return {
        key: address_set(key, members, origin)  # type: ignore[arg-type]
        for key, (origin, members) in merge_layers(default, group, host, name).items()
    }


def parse_ports(value: object, where: str) -> tuple[str, ...]:
    items = value if isinstance(value, list | tuple) else [value]
    ports = []
    for item in items:
        text = str(item).strip()
        bounds = text.split("-", 1)
        if not all(b.isdigit() for b in bounds) or not all(1 <= int(b) <= 65535 for b in bounds):
            raise FirewallDataError(f"{where}: port '{text}' is not a port (1-65535) or range (1000-2000)")
        if len(bounds) == 2 and int(bounds[0]) >= int(bounds[1]):
            raise FirewallDataError(f"{where}: port range '{text}' must go from low to high")
        ports.append(text)
    if not ports:
        raise FirewallDataError(f"{where}: dport is empty")
    return tuple(ports)


def parse_rule(name: str, spec: object, known_sets: Mapping[str, AddressSet], where: str) -> Rule:
    here = f"{where}['{name}']"
    if not isinstance(spec, Mapping):
        raise FirewallDataError(f"{here} must be a dict of rule fields or null, got {spec!r}")
    unknown = set(spec) - RULE_KEYS
    if unknown:
        raise FirewallDataError(f"{here}: unknown field(s) {sorted(unknown)}; known: {sorted(RULE_KEYS)}")
    raw_proto = spec.get("proto", "any")
    protos = tuple(raw_proto if isinstance(raw_proto, list | tuple) else [raw_proto])
    for proto in protos:
        if proto not in PROTOCOLS:
            raise FirewallDataError(f"{here}: unknown protocol '{proto}'; use one of {', '.join(PROTOCOLS)}")
    dports: tuple[str, ...] = ()
    if spec.get("dport") is not None:
        if not set(protos) <= PORT_PROTOCOLS:
            raise FirewallDataError(f"{here}: dport needs proto tcp and/or udp, got {list(protos)}")
        dports = parse_ports(spec["dport"], here)
    action = spec.get("action", "accept")
    if action not in ACTIONS:
        raise FirewallDataError(f"{here}: unknown action '{action}'; use one of {', '.join(ACTIONS)}")
    for key in ("saddr_set", "daddr_set"):
        if spec.get(key) is not None and spec[key] not in known_sets:
            raise FirewallDataError(
                f"{here}: {key} '{spec[key]}' is not a defined set ({', '.join(known_sets)})"
            )
    for key in ("iifname", "oifname"):
        if spec.get(key) is not None and not IFNAME.match(str(spec[key])):
            raise FirewallDataError(f"{here}: {key} '{spec[key]}' is not an interface name")
    icmp_types = tuple(str(t) for t in (spec.get("icmp_type") or []))
    for icmp_type in icmp_types:
        if not ICMP_TYPE.match(icmp_type):
            raise FirewallDataError(f"{here}: icmp_type '{icmp_type}' is not an ICMP type name")
    if icmp_types and not set(protos) <= {"icmp", "icmpv6"}:
        raise FirewallDataError(f"{here}: icmp_type needs proto icmp or icmpv6")
    saddr = address_set("inline", spec["saddr"], f"{here}.saddr") if spec.get("saddr") is not None else None
    daddr = address_set("inline", spec["daddr"], f"{here}.daddr") if spec.get("daddr") is not None else None
    limit = check_rate(spec["limit"], f"{here}.limit") if spec.get("limit") is not None else None
    comment = str(spec.get("comment", name))
    if '"' in comment or "\n" in comment:
        raise FirewallDataError(f"{here}: comment may not contain quotes or newlines")
    return Rule(
        name=name, proto=protos, dports=dports, saddr=saddr, daddr=daddr,
        saddr_set=spec.get("saddr_set"), daddr_set=spec.get("daddr_set"),
        iifname=spec.get("iifname"), oifname=spec.get("oifname"), icmp_types=icmp_types,
        action=action, limit=limit, comment=comment,
    )  # fmt: skip


def rules(
    default: Mapping | None,
    group: Mapping | None,
    host: Mapping | None,
    known_sets: Mapping[str, AddressSet],
    name: str,
) -> list[Rule]:
    """Merged, validated rules in key order."""
    return [
        parse_rule(key, spec, known_sets, origin)
        for key, (origin, spec) in merge_layers(default, group, host, name).items()
    ]


def _address_variants(rule: Rule) -> list[list[str]]:
    """Address matches per family. Named sets always get both families (empty sets are fine
    and can be filled at runtime); inline addresses only the families they contain."""
    specs = [
        (d, inline, name)
        for d, inline, name in (("saddr", rule.saddr, rule.saddr_set), ("daddr", rule.daddr, rule.daddr_set))
        if inline or name
    ]
    if not specs:
        return [[]]
    variants = []
    for family, suffix in (("ip", "v4"), ("ip6", "v6")):
        matches = []
        for direction, inline, name in specs:
            if inline is None:
                matches.append(f"{family} {direction} @{name}_{suffix}")
                continue
            members = inline.v4 if family == "ip" else inline.v6
            if not members:
                break
            matches.append(f"{family} {direction} {{ {', '.join(members)} }}")
        else:
            variants.append(matches)
    return variants


def _protocol_match(rule: Rule) -> list[str]:
    protos = [p for p in rule.proto if p != "any"]
    if not protos:
        return []
    if rule.dports:
        ports = rule.dports[0] if len(rule.dports) == 1 else "{ " + ", ".join(rule.dports) + " }"
        if len(protos) == 1:
            return [f"{protos[0]} dport {ports}"]
        return [f"meta l4proto {{ {', '.join(protos)} }} th dport {ports}"]
    if rule.icmp_types:
        return [f"{protos[0]} type {{ {', '.join(rule.icmp_types)} }}"]
    return [f"meta l4proto {protos[0]}" if len(protos) == 1 else f"meta l4proto {{ {', '.join(protos)} }}"]


def render_rule(rule: Rule) -> list[str]:
    """nft statements for one rule: one line per address family it can match."""
    interfaces = [
        f'{key} "{value}"' for key, value in (("iifname", rule.iifname), ("oifname", rule.oifname)) if value
    ]
    limit = [f"limit rate {rule.limit}"] if rule.limit else []
    tail = [*_protocol_match(rule), *limit, "counter", rule.action, f'comment "{rule.comment}"']
    return [" ".join([*interfaces, *addresses, *tail]) for addresses in _address_variants(rule)]


def check_rate(value: object, where: str) -> str:
    text = str(value)
    if not RATE.match(text):
        raise FirewallDataError(f"{where}: '{text}' is not a rate like 10/minute")
    return text


# Sets an enforced egress policy needs filled, with the variable that fills each and what the
# host loses without it.
EGRESS_ESSENTIALS = {
    "resolvers": ("firewall_dns_servers", "resolve names"),
    "ntp_servers": ("localguard_ntp_servers", "keep its clock"),
    "mirrors": ("firewall_package_mirrors", "fetch security upgrades"),
}


def egress_gaps(
    sets: Mapping[str, Mapping[str, Iterable[str]]], allow_empty: Iterable[str], host: str
) -> str:
    """Why an enforced egress policy would silently cut this host off, or "" when it would not.

    `sets` is the validated output of localguard_nft_sets; `allow_empty` names the sets the
    operator acknowledged as empty (an offline host).
    """
    acknowledged = set(allow_empty)
    empty = [
        name
        for name in EGRESS_ESSENTIALS
        if name not in acknowledged and not any(sets.get(name, {}).get(family) for family in ("v4", "v6"))
    ]
    if not empty:
        return ""
    described = ", ".join(f"{name} ({EGRESS_ESSENTIALS[name][0]})" for name in empty)
    losses = ", ".join(EGRESS_ESSENTIALS[name][1] for name in empty)
    return (
        f"firewall_egress_enforce is on but {described} would be empty on {host}: the host could not"
        f" {losses}, and a drifting clock breaks certificate, CRL and key expiry. Set the variables named, or"
        f" acknowledge an intentionally offline host with firewall_egress_allow_empty: [{', '.join(empty)}]."
    )


def outside_set(
    servers: Iterable[object], members: Mapping[str, Iterable[str]], resolve: Callable[[str], list[str]]
) -> list[str]:
    """The servers a host could not reach through an egress set, in the order given: an address
    outside every network of `members` (one set of localguard_nft_sets, {"v4": [...], "v6": [...]}),
    or a name that resolves to no address or to one outside them (the firewall allows addresses,
    not names)."""
    networks = [ipaddress.ip_network(member) for family in ("v4", "v6") for member in members.get(family, [])]
    blocked = []
    for server in servers:
        text = str(server).strip()
        try:
            addresses = [ipaddress.ip_address(text)]
        except ValueError:
            addresses = [ipaddress.ip_address(address) for address in resolve(text)]
        if not addresses or not all(any(address in network for network in networks) for address in addresses):
            blocked.append(text)
    return blocked
