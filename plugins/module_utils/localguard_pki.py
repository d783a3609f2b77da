#!/usr/bin/python3
# Copyright (c) 2026, localguard contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""localguard PKI core: what a host may be issued, the revocation database, the CRL.

Plain functions on top of `cryptography`, no Ansible imports. The controller uses them through
the localguard_pki filters (expected SANs, CSR checks, name constraints), the CA host through the
localguard_pki_batch module (a run's certificates checked and signed in one batch); the same file
is installed on managed hosts as a small CLI run by systemd timers:

  refresh  (CA host) record revocations, drop expired entries, re-sign the CRL when it nears
           its next update or no longer matches the database, publish PEM/DER copies.
  fetch    (every host) download the published CRL, accept it only if the installed CA signed
           it and it is newer than the installed one, install it atomically, reload TLS services.

It must run on Debian 12's python3-cryptography (38) as well as the controller's newer one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

# Loading must not need `cryptography` (Ansible's import check loads module_utils without it, and
# the filters that do not sign or parse certificates work without it); what needs it says so.
try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
except ImportError as exc:
    CRYPTOGRAPHY_IMPORT_ERROR: ImportError | None = exc
    HOST_EKU: tuple = ()
else:
    CRYPTOGRAPHY_IMPORT_ERROR = None
    # A host certificate serves TLS and identifies the host as a client (key list, log collector).
    HOST_EKU = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)

UTC = dt.UTC
DB_NAME = "revoked.json"
CREDENTIAL = "ca-passphrase"


class PkiError(Exception):
    """A refusal or failure whose message names what is wrong and never holds a secret."""


def require_cryptography() -> None:
    """Name the missing library instead of failing later with a NameError."""
    if CRYPTOGRAPHY_IMPORT_ERROR is not None:
        raise PkiError(f"the Python library cryptography is required: {CRYPTOGRAPHY_IMPORT_ERROR}")


# ---------------------------------------------------------------------------------------------
# Names: what the inventory says a host is, and what the CA may certify at all.


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def normalize_san(san: str) -> str:
    """`DNS:Name` -> `DNS:name`, `IP:0::1` -> `IP:::1`; other types kept as written."""
    kind, sep, value = san.partition(":")
    if not sep:
        raise PkiError(f"SAN '{san}' has no type prefix (DNS: or IP:)")
    kind = kind.strip().upper()
    value = value.strip()
    if kind in {"IP", "IP ADDRESS"}:
        try:
            return f"IP:{ipaddress.ip_address(value)}"
        except ValueError:
            raise PkiError(f"SAN '{san}' is not an IP address") from None
    if kind == "DNS":
        return f"DNS:{value.lower().rstrip('.')}"
    return f"{kind}:{value}"


def host_address(name: str, localguard_address: str | None = None, ansible_host: str | None = None) -> str:
    """The address the inventory gives a host: localguard_address, else an IP ansible_host."""
    if localguard_address:
        return str(localguard_address)
    if ansible_host and is_ip(str(ansible_host)):
        return str(ansible_host)
    return ""


def expected_sans(
    name: str, localguard_address: str | None = None, ansible_host: str | None = None, extra: Sequence = ()
) -> list[str]:
    """The SANs a host's certificate must carry, from the inventory only (never host facts,
    which root on that host controls): its inventory name, short name, address and extras."""
    sans = [f"DNS:{name}"]
    if "." in name and not is_ip(name):
        sans.append(f"DNS:{name.split('.', 1)[0]}")
    address = host_address(name, localguard_address, ansible_host)
    if address:
        sans.append(f"IP:{address}")
    elif is_ip(name):
        sans = [f"IP:{name}"]
    sans.extend(str(s) for s in extra)
    return sorted({normalize_san(s) for s in sans})


def name_constraints(
    hosts: Mapping[str, Sequence[str]], ipv4_prefix: int = 24, ipv6_prefix: int = 64
) -> list[str]:
    """Permitted subtrees covering every managed host's SANs (host -> its expected SANs).

    A dotted name permits its parent domain (OpenSSL matches `example.internal` and any name
    below it) unless that parent is a single label (`com`), which would permit a whole TLD;
    single-label names are permitted exactly. Addresses permit their /ipv4_prefix or
    /ipv6_prefix network, so adding a host in the same network keeps the CA certificate.
    """
    dns: set[str] = set()
    nets: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = set()
    for sans in hosts.values():
        for san in map(normalize_san, sans):
            kind, value = san.partition(":")[::2]
            if kind == "DNS":
                parent = value.split(".", 1)[1] if "." in value else ""
                dns.add(parent if "." in parent else value)
            elif kind == "IP":
                address = ipaddress.ip_address(value)
                prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
                nets.add(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
    # A name already under a permitted domain adds nothing.
    kept = sorted(d for d in dns if not any(d != p and d.endswith("." + p) for p in dns))
    collapsed = [
        *ipaddress.collapse_addresses(n for n in nets if n.version == 4),
        *ipaddress.collapse_addresses(n for n in nets if n.version == 6),
    ]
    return [f"DNS:{d}" for d in kept] + [f"IP:{n}" for n in collapsed]


def cn_checked_as_dns(common_name: str) -> bool:
    """Whether OpenSSL checks this CN against DNS name constraints when a certificate has no
    DNS SAN (mTLS client certificates): it does when the CN looks like a dotted host name."""
    labels = common_name.split(".")
    if len(labels) < 2:
        return False
    return all(label and all(c.isalnum() or c in "-_" for c in label) for label in labels)


def dns_permitted(name: str, permitted: Iterable[str]) -> bool:
    bases = [normalize_san(p)[4:] for p in permitted if p.upper().startswith("DNS:")]
    if not bases:
        return True
    name = name.lower()
    return any(name == b or name.endswith(b if b.startswith(".") else "." + b) for b in bases)


def client_name_problems(names: Iterable[str], permitted: Sequence[str]) -> list[str]:
    """Client names the CA's name constraints would make unusable (OpenSSL rejects their
    certificates at verification time, long after issuance)."""
    return [
        f"client name '{n}' looks like a DNS name outside the CA's permitted names {list(permitted)}"
        for n in names
        if cn_checked_as_dns(n) and not dns_permitted(n, permitted)
    ]


def csr_problems(csr_pem: str, name: str, sans: Sequence[str], crl_urls: Sequence[str] = ()) -> list[str]:
    """Everything in a server CSR the CA must not sign for host `name`.

    The CA copies a CSR's extensions into the certificate, so each one is checked: the subject
    is CN=<inventory name> only, the SANs are exactly the expected ones, no CA flag, no
    certificate or CRL signing, serverAuth plus clientAuth (hosts also authenticate as clients: to
    the key list on the CA host, to the log collector), and nothing else but a CRL distribution point.
    """
    require_cryptography()
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode() if isinstance(csr_pem, str) else csr_pem)
    except ValueError as exc:
        return [f"{name}: the CSR cannot be parsed ({exc})"]
    problems: list[str] = []
    if not csr.is_signature_valid:
        problems.append(f"{name}: the CSR's signature does not match its key")
    subject = [(a.oid, a.value) for a in csr.subject]
    if subject != [(NameOID.COMMON_NAME, name)]:
        problems.append(f"{name}: subject '{csr.subject.rfc4514_string()}' is not CN={name}")
    wanted = {normalize_san(s) for s in sans}
    try:
        san_ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        asked = {_general_name(g) for g in san_ext}
    except x509.ExtensionNotFound:
        asked = set()
    foreign = sorted(asked - wanted)
    missing = sorted(wanted - asked)
    if foreign:
        problems.append(f"{name}: SAN(s) not in the inventory for this host: {', '.join(foreign)}")
    if missing:
        problems.append(f"{name}: expected SAN(s) missing: {', '.join(missing)}")
    allowed = {
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.CRL_DISTRIBUTION_POINTS,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    }
    for ext in csr.extensions:
        if ext.oid not in allowed:
            problems.append(f"{name}: extension {ext.oid.dotted_string} is not allowed in a server CSR")
        elif isinstance(ext.value, x509.BasicConstraints) and ext.value.ca:
            problems.append(f"{name}: the CSR asks to be a CA")
        elif isinstance(ext.value, x509.KeyUsage) and (ext.value.key_cert_sign or ext.value.crl_sign):
            problems.append(f"{name}: the CSR asks for certificate or CRL signing")
        elif isinstance(ext.value, x509.ExtendedKeyUsage) and set(ext.value) != set(HOST_EKU):
            problems.append(f"{name}: extended key usage must be serverAuth and clientAuth, nothing else")
        elif isinstance(ext.value, x509.CRLDistributionPoints):
            urls = sorted(_general_name(g) for p in ext.value for g in (p.full_name or []))
            if urls != sorted(f"URI:{u}" for u in crl_urls):
                problems.append(f"{name}: CRL distribution point {urls} is not {list(crl_urls)}")
    try:
        csr.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        problems.append(f"{name}: extended key usage (serverAuth, clientAuth) missing")
    return problems


def _general_name(g: x509.GeneralName) -> str:
    if isinstance(g, x509.DNSName):
        return normalize_san(f"DNS:{g.value}")
    if isinstance(g, x509.IPAddress):
        return f"IP:{g.value}"
    if isinstance(g, x509.UniformResourceIdentifier):
        return f"URI:{g.value}"
    return f"{type(g).__name__}:{g.value}"


# ---------------------------------------------------------------------------------------------
# Revocation database: every revoked serial until its certificate expires.


@dataclass(frozen=True)
class Revoked:
    serial: int
    name: str
    revoked_at: dt.datetime
    not_after: dt.datetime

    def to_json(self) -> dict:
        return {
            "serial": format(self.serial, "X"),
            "name": self.name,
            "revoked_at": _iso(self.revoked_at),
            "not_after": _iso(self.not_after),
        }

    @classmethod
    def from_json(cls, data: Mapping) -> Revoked:
        return cls(
            int(data["serial"], 16), data["name"], _parse(data["revoked_at"]), _parse(data["not_after"])
        )


def _iso(when: dt.datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _utc(obj: object, attr: str) -> dt.datetime | None:
    """cryptography >= 42 has `<attr>_utc`; older ones return naive UTC datetimes."""
    value = getattr(obj, attr + "_utc", None)
    if value is None:
        value = getattr(obj, attr)
        if value is not None:
            value = value.replace(tzinfo=UTC)
    return value


def load_db(path: Path) -> list[Revoked]:
    return load_db_with_names(path)[0]


def load_db_with_names(path: Path) -> tuple[list[Revoked], list[str]]:
    """The entries and every name ever revoked. A name outlives its entries (they leave once their
    certificates expire) so that it is never signed again; a database written before names were
    kept lists its entries' names."""
    if not path.exists():
        return [], []
    try:
        data = json.loads(path.read_text())
        entries = [Revoked.from_json(e) for e in data["entries"]]
        names = sorted({*map(str, data.get("names", [])), *(e.name for e in entries)})
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PkiError(f"revocation database {path} unreadable ({exc}); refusing to drop entries") from None
    return entries, names


def merge(db: Sequence[Revoked], new: Iterable[Revoked]) -> list[Revoked]:
    """Add revocations; a serial already listed keeps its first revocation date."""
    known = {e.serial: e for e in db}
    for entry in new:
        known.setdefault(entry.serial, entry)
    return sorted(known.values(), key=lambda e: (e.name, e.serial))


def prune(db: Sequence[Revoked], now: dt.datetime) -> list[Revoked]:
    """Entries leave only once their certificate has expired: no peer accepts it then."""
    return [e for e in db if e.not_after > now]


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write to a temp file beside `path` and rename it over: readers see old or new, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_db(path: Path, db: Sequence[Revoked], names: Iterable[str] = ()) -> None:
    names = sorted({*names, *(e.name for e in db)})
    text = json.dumps({"version": 1, "entries": [e.to_json() for e in db], "names": names}, indent=2) + "\n"
    write_atomic(path, text.encode(), 0o600)


def issued_certificates(ca_dir: Path, name: str) -> list[Path]:
    """Every certificate the CA keeps for a client name: the current one (issued/<name>.crt) and
    the earlier ones kept when it was renewed (issued/history/<name>/*.crt), which stay valid
    until they expire and must be revoked with it."""
    current = ca_dir / "issued" / f"{name}.crt"
    history = sorted((ca_dir / "issued" / "history" / name).glob("*.crt"))
    return [p for p in (current, *history) if p.is_file()]


def revocation_of(cert_pem: bytes, name: str, now: dt.datetime) -> Revoked:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return Revoked(cert.serial_number, name, now, _utc(cert, "not_valid_after"))


# ---------------------------------------------------------------------------------------------
# The CRL: when to re-sign it, how to build it, how hosts accept a fetched one.


@dataclass(frozen=True)
class CrlState:
    number: int
    last_update: dt.datetime
    next_update: dt.datetime | None
    serials: frozenset[int]
    signed_by_ca: bool


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


def crl_state(crl: x509.CertificateRevocationList, ca_cert: x509.Certificate) -> CrlState:
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = 0
    return CrlState(
        number=number,
        last_update=_utc(crl, "last_update"),
        next_update=_utc(crl, "next_update"),
        serials=frozenset(r.serial_number for r in crl),
        signed_by_ca=crl.issuer == ca_cert.subject and crl.is_signature_valid(ca_cert.public_key()),
    )


def resign_reason(
    current: CrlState | None, db: Sequence[Revoked], now: dt.datetime, refresh_days: int
) -> str | None:
    """Why the CRL must be re-signed now, or None when the published one is still good."""
    if current is None:
        return "no CRL yet"
    if not current.signed_by_ca:
        return "the CRL is not signed by the current CA certificate"
    if current.serials != {e.serial for e in db}:
        return "the revocation database changed"
    if current.next_update is None or current.next_update - now < dt.timedelta(days=refresh_days):
        return f"fewer than {refresh_days} days left before its next update"
    return None


def build_crl(
    ca_cert: x509.Certificate, ca_key, db: Sequence[Revoked], number: int, now: dt.datetime, valid_days: int
) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=valid_days))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False)
    )
    for entry in db:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(entry.revoked_at)
            .build()
        )
    return builder.sign(ca_key, hashes.SHA384())


def newer(fetched: CrlState, installed: CrlState | None) -> bool:
    """A fetched CRL replaces the installed one only if it is newer: an attacker (or a stale
    mirror) replaying an old, validly signed CRL must not un-revoke anything."""
    if installed is None or not installed.signed_by_ca:
        return True
    return (fetched.number, fetched.last_update) > (installed.number, installed.last_update)


# ---------------------------------------------------------------------------------------------
# Signing: every certificate a run needs, checked and signed in one batch on the CA host (the
# localguard_pki_batch module), instead of one delegated round trip per host. Certificates are
# built the way community.crypto's x509_certificate ownca provider builds them (CSR extensions
# copied, subject and authority key identifiers added, SHA-256), so the ones it signed before
# are recognised and kept.

CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class SignRequest:
    """One holder's CSR, already checked against what the inventory gives it (csr_problems, run on
    the controller before any request reaches the CA host), and what it holds now ('' for none)."""

    name: str
    csr: str
    certificate: str = ""
    force: bool = False


@dataclass(frozen=True)
class Issued:
    """What a holder ends up with: a new certificate (`reason` says why) or its current one."""

    name: str
    certificate: str
    reason: str | None
    serial: str
    not_after: str

    def as_dict(self) -> dict:
        return {
            "certificate": self.certificate,
            "signed": self.reason is not None,
            "reason": self.reason,
            "serial": self.serial,
            "not_after": self.not_after,
        }


def load_certificate(pem: str | bytes) -> x509.Certificate | None:
    """The certificate in `pem`, or None for an empty or unreadable one (which is renewed)."""
    if not pem:
        return None
    try:
        return x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)
    except ValueError:
        return None


def signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """Whether `ca_cert` issued `cert` (names and signature; cryptography 38 has no
    verify_directly_issued_by)."""
    if cert.issuer != ca_cert.subject:
        return False
    key = ca_cert.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        elif isinstance(key, rsa.RSAPublicKey):
            pkcs1 = padding.PKCS1v15()
            key.verify(cert.signature, cert.tbs_certificate_bytes, pkcs1, cert.signature_hash_algorithm)
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _key_bytes(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _copied_extensions(extensions: x509.Extensions) -> dict[str, tuple[bool, object]]:
    """The extensions a certificate takes over from its CSR (key identifiers are the CA's to add)."""
    return {
        ext.oid.dotted_string: (ext.critical, ext.value)
        for ext in extensions
        if not isinstance(ext.value, x509.SubjectKeyIdentifier | x509.AuthorityKeyIdentifier)
    }


def _extension(cert_or_csr, kind):
    try:
        return cert_or_csr.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def authority_key_identifier(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = _extension(ca_cert, x509.SubjectKeyIdentifier)
    if ski is not None:
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())


def renewal_reason(
    current: x509.Certificate | None,
    csr: x509.CertificateSigningRequest,
    ca_cert: x509.Certificate,
    now: dt.datetime,
    renew_before_days: int,
    revoked_serials: Iterable[int] = (),
) -> str | None:
    """Why `current` must be replaced by a certificate for `csr`, or None to keep it: missing, not
    issued by this CA, another key, subject or extensions than the CSR asks for (SANs, key usage,
    CRL distribution point), revoked, or not valid `renew_before_days` from now (the renewal window)."""
    if current is None:
        return "no certificate yet"
    if not signed_by(current, ca_cert):
        return "not issued by the current CA certificate"
    if _key_bytes(current.public_key()) != _key_bytes(csr.public_key()):
        return "the key changed"
    if current.subject != csr.subject:
        return "the subject changed"
    if _copied_extensions(current.extensions) != _copied_extensions(csr.extensions):
        return "the names or key usages asked for changed"
    wanted_ski = _extension(csr, x509.SubjectKeyIdentifier) or x509.SubjectKeyIdentifier.from_public_key(
        csr.public_key()
    )
    if _extension(current, x509.SubjectKeyIdentifier) != wanted_ski:
        return "the subject key identifier does not match the key"
    if _extension(current, x509.AuthorityKeyIdentifier) != authority_key_identifier(ca_cert):
        return "the authority key identifier does not name the current CA key"
    if current.serial_number in set(revoked_serials):
        return "the certificate is revoked"
    renewal = now + dt.timedelta(days=renew_before_days)
    if not _utc(current, "not_valid_before") <= renewal <= _utc(current, "not_valid_after"):
        return f"not valid {renew_before_days} days from now (renewal window)"
    return None


def sign_csr(
    csr: x509.CertificateSigningRequest,
    ca_cert: x509.Certificate,
    ca_key,
    now: dt.datetime,
    valid_days: int,
) -> x509.Certificate:
    """A certificate for `csr` valid from now for `valid_days`, with the CSR's extensions."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca_cert.subject)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=valid_days))
        .public_key(csr.public_key())
    )
    for ext in csr.extensions:
        if not isinstance(ext.value, x509.AuthorityKeyIdentifier):
            builder = builder.add_extension(ext.value, critical=ext.critical)
    if _extension(csr, x509.SubjectKeyIdentifier) is None:
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), False)
    builder = builder.add_extension(authority_key_identifier(ca_cert), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _issued(name: str, cert: x509.Certificate | None, reason: str | None, pem: str = "") -> Issued:
    if cert is None:
        return Issued(name, pem, reason, "", "")
    not_after = _iso(_utc(cert, "not_valid_after"))
    return Issued(name, pem or _pem(cert), reason, format(cert.serial_number, "X"), not_after)


def sign_batch(
    requests: Sequence[SignRequest],
    ca_cert: x509.Certificate,
    load_key: Callable[[], object],
    now: dt.datetime,
    valid_days: int,
    renew_before_days: int,
    revoked_serials: Iterable[int] = (),
    check: bool = False,
) -> list[Issued]:
    """Check every request, then sign those due. An unreadable CSR, or one whose signature does not
    match its key, stops the batch before the CA key is opened; the key is opened once, and only
    when something is due. In check mode nothing is signed: a due holder gets its current
    certificate back, with the reason it would be renewed."""
    revoked = set(revoked_serials)
    planned = []
    problems: list[str] = []
    for request in requests:
        try:
            csr = x509.load_pem_x509_csr(request.csr.encode())
        except ValueError as exc:
            problems.append(f"{request.name}: the CSR cannot be parsed ({exc})")
            continue
        if not csr.is_signature_valid:
            problems.append(f"{request.name}: the CSR's signature does not match its key")
            continue
        current = load_certificate(request.certificate)
        reason = renewal_reason(current, csr, ca_cert, now, renew_before_days, revoked)
        if request.force:
            reason = "forced"
        planned.append((request, csr, current, reason))
    if problems:
        raise PkiError("refusing to sign: " + "; ".join(problems))
    ca_key = None
    issued = []
    for request, csr, current, reason in planned:
        if reason is None or check:
            issued.append(_issued(request.name, current, reason, request.certificate if current else ""))
            continue
        if ca_key is None:
            ca_key = load_key()
        issued.append(_issued(request.name, sign_csr(csr, ca_cert, ca_key, now, valid_days), reason))
    return issued


def client_certificate_path(ca_dir: Path, name: str) -> Path:
    """issued/<name>.crt, for a name that is a plain file name (it is one on the controller too)."""
    if not CLIENT_NAME.fullmatch(name):
        raise PkiError(f"client name '{name}' is not 1-64 letters, digits, '.', '_' or '-'")
    return ca_dir / "issued" / f"{name}.crt"


def keep_issued(ca_dir: Path, name: str, pem: str, current: bool, check: bool) -> bool:
    """Keep a client certificate the CA signed: as issued/<name>.crt (unless `current`, already
    there) and as issued/history/<name>/<serial>.crt, so that revoking the name later revokes
    every certificate of it that is still valid. Returns whether a file was (or would be) written."""
    cert = x509.load_pem_x509_certificate(pem.encode())
    history = ca_dir / "issued" / "history" / name / f"{cert.serial_number:X}.crt"
    targets = [history] if current else [client_certificate_path(ca_dir, name), history]
    missing = [t for t in targets if not t.is_file() or load_certificate(t.read_bytes()) != cert]
    if check or not missing:
        return bool(missing)
    history.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    for target in missing:
        write_atomic(target, pem.encode(), 0o644)
    return True


def batch(
    ca_dir: Path,
    passphrase: bytes,
    servers: Sequence[SignRequest],
    clients: Sequence[SignRequest],
    valid_days: int,
    renew_before_days: int,
    revoked_names: Iterable[str] = (),
    check: bool = False,
    now: dt.datetime | None = None,
) -> dict:
    """One run's signing on the CA host: every server request (the certificate each host holds
    comes with it) and every client request (the CA keeps those in issued/). Revoked client names,
    from the revocation database or `revoked_names`, are refused and never signed. Returns the
    certificates, what was signed and why, and the CA certificate and CRL every host installs."""
    require_cryptography()
    now = now or _now()
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    entries, db_names = load_db_with_names(ca_dir / DB_NAME)
    refused = sorted({c.name for c in clients} & {*db_names, *revoked_names})
    client_requests = []
    for request in clients:
        if request.name in refused:
            continue
        path = client_certificate_path(ca_dir, request.name)
        client_requests.append(replace(request, certificate=path.read_text() if path.is_file() else ""))
    signed = sign_batch(
        [*servers, *client_requests],
        ca_cert,
        lambda: load_ca_key(ca_dir, passphrase),
        now,
        valid_days,
        renew_before_days,
        (e.serial for e in entries),
        check,
    )
    server_results, client_results = signed[: len(servers)], signed[len(servers) :]
    kept = False
    for request, result in zip(client_requests, client_results, strict=True):
        # The current certificate predates issued/history/ when its copy there is missing.
        if request.certificate and load_certificate(request.certificate):
            kept = keep_issued(ca_dir, request.name, request.certificate, True, check) or kept
        if result.reason is not None and not check:
            keep_issued(ca_dir, request.name, result.certificate, False, False)
    crl = ca_dir / "crl.pem"
    return {
        "changed": kept or any(r.reason is not None for r in signed),
        "servers": {r.name: r.as_dict() for r in server_results},
        "clients": {r.name: r.as_dict() for r in client_results},
        "refused": refused,
        "ca_certificate": (ca_dir / "ca.crt").read_text(),
        "crl": crl.read_text() if crl.exists() else "",
    }


# ---------------------------------------------------------------------------------------------
# CLI
# This file is also a command on managed hosts (installed by the roles): the lines where pylint's
# ansible-bad-function check is off are that command's own output and exit status, never
# reached from a module.


def _now() -> dt.datetime:
    return dt.datetime.now(UTC).replace(microsecond=0)


def _read_passphrase(args: argparse.Namespace) -> bytes:
    if args.passphrase_stdin:
        return sys.stdin.buffer.read().rstrip(b"\n")
    credentials = Path(os.environ.get("CREDENTIALS_DIRECTORY", "/nonexistent"))
    path = Path(args.passphrase_file or credentials / CREDENTIAL)
    try:
        return path.read_bytes().rstrip(b"\n")
    except OSError as exc:
        raise PkiError(f"cannot read the CA passphrase from {path}: {exc.strerror}") from None


def load_ca_key(ca_dir: Path, passphrase: bytes):
    try:
        return serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), passphrase or None)
    except (TypeError, ValueError):
        raise PkiError(f"the CA key {ca_dir / 'ca.key'} does not open with the given passphrase") from None
    except OSError as exc:
        raise PkiError(f"cannot read the CA key {ca_dir / 'ca.key'}: {exc.strerror}") from None


def refresh(args: argparse.Namespace) -> dict:
    ca_dir = Path(args.ca_dir)
    now = _now()
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    db_path = ca_dir / DB_NAME
    old_db, old_names = load_db_with_names(db_path)
    revocations = []
    certs = [tuple(item.partition("=")[::2]) for item in args.revoke]
    certs += [(name, str(path)) for name in args.revoke_name for path in issued_certificates(ca_dir, name)]
    for name, cert_path in certs:
        # A name revoked before it was ever issued has no serial to list.
        if Path(cert_path).exists():
            revocations.append(revocation_of(Path(cert_path).read_bytes(), name, now))
    db = prune(merge(old_db, revocations), now)
    names = sorted({*old_names, *args.revoke_name, *(name for name, _cert in certs), *(e.name for e in db)})
    crl_path = ca_dir / "crl.pem"
    current = crl_state(load_crl(crl_path.read_bytes()), ca_cert) if crl_path.exists() else None
    reason = "forced" if args.force else resign_reason(current, db, now, args.refresh_days)
    result = {
        "changed": False,
        "reason": reason,
        "revoked": [e.to_json() for e in db],
        "revoked_names": names,
        "number": current.number if current else None,
    }
    # An empty database is still written once, so its owner and mode hold from the first run.
    db_changed = (
        not db_path.exists()
        or [e.to_json() for e in db] != [e.to_json() for e in old_db]
        or names != _stored_names(db_path)
    )
    if args.check:
        result["changed"] = bool(reason) or db_changed
        return result
    if db_changed:
        save_db(db_path, db, names)
        result["changed"] = True
    if reason:
        ca_key = load_ca_key(ca_dir, _read_passphrase(args))
        number = (current.number if current else 0) + 1
        crl = build_crl(ca_cert, ca_key, db, number, now, args.valid_days)
        write_atomic(crl_path, crl.public_bytes(serialization.Encoding.PEM), 0o644)
        write_atomic(ca_dir / "crl.der", crl.public_bytes(serialization.Encoding.DER), 0o644)
        result.update(changed=True, number=number)
    if args.publish_dir:
        result["published"] = publish(ca_dir, Path(args.publish_dir))
        result["changed"] = result["changed"] or bool(result["published"])
    return result


def _stored_names(db_path: Path) -> list[str] | None:
    """The names list as written in the file (None before names were kept): a database from an
    earlier version is rewritten once with them."""
    if not db_path.exists():
        return None
    names = json.loads(db_path.read_text()).get("names")
    return sorted(names) if isinstance(names, list) else None


def publish(ca_dir: Path, publish_dir: Path) -> list[str]:
    """Copy the CRL (PEM and DER) and CA certificate where the web server reads them."""
    written = []
    for name in ("crl.pem", "crl.der", "ca.crt"):
        data = (ca_dir / name).read_bytes()
        target = publish_dir / name
        if not target.exists() or target.read_bytes() != data:
            write_atomic(target, data, 0o644)
            written.append(name)
    return written


def crl_opener() -> urllib.request.OpenerDirector:
    """urllib for the ways a CRL comes: http(s) (the distribution point, plain http by default,
    pki_crl_url may say https) and file (a push on stdin); no ftp or data URLs, no proxies from
    the environment; HTTP errors raise. This command runs on hosts without Ansible, so
    ansible.module_utils.urls is not there to use."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.FileHandler(),
        urllib.request.UnknownHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def fetch(args: argparse.Namespace) -> dict:
    ca_cert = x509.load_pem_x509_certificate(Path(args.ca).read_bytes())
    dest = Path(args.dest)
    try:
        with crl_opener().open(args.url, timeout=args.timeout) as response:
            data = response.read(10 * 1024 * 1024)
        fetched = load_crl(data)
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot fetch a CRL from {args.url} ({exc}); keeping the installed one") from None
    state = crl_state(fetched, ca_cert)
    if not state.signed_by_ca:
        raise PkiError(f"the CRL from {args.url} is not signed by the installed CA; keeping the old one")
    installed = None
    if dest.exists():
        try:
            installed = crl_state(load_crl(dest.read_bytes()), ca_cert)
        except ValueError:
            installed = None
    if not newer(state, installed):
        return {"changed": False, "number": installed.number if installed else None}
    write_atomic(dest, fetched.public_bytes(serialization.Encoding.PEM), 0o644)
    if args.reload:
        subprocess.run(["systemctl", "try-reload-or-restart", *args.reload], check=False)
    return {"changed": True, "number": state.number}


def check_key(args: argparse.Namespace) -> dict:
    load_ca_key(Path(args.ca_dir), _read_passphrase(args))
    return {"changed": False}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="localguard-pki", description=__doc__.split("\n\n", maxsplit=1)[0])
    sub = p.add_subparsers(dest="command", required=True)

    def passphrase(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--ca-dir", default="/etc/localguard/ca")
        cmd.add_argument("--passphrase-stdin", action="store_true")
        cmd.add_argument("--passphrase-file", help=f"default: $CREDENTIALS_DIRECTORY/{CREDENTIAL}")

    r = sub.add_parser("refresh", help="record revocations and re-sign the CRL when needed")
    passphrase(r)
    r.add_argument("--valid-days", type=int, default=30)
    r.add_argument("--refresh-days", type=int, default=7)
    r.add_argument("--revoke", action="append", default=[], metavar="NAME=CERT")
    r.add_argument(
        "--revoke-name",
        action="append",
        default=[],
        metavar="NAME",
        help="revoke every certificate the CA keeps for NAME (current and earlier) and never sign it again",
    )
    r.add_argument("--publish-dir")
    r.add_argument("--force", action="store_true")
    r.add_argument("--check", action="store_true", help="report what would change, change nothing")
    r.set_defaults(func=refresh)

    f = sub.add_parser("fetch", help="install a newer CRL signed by the installed CA")
    f.add_argument("--url", required=True)
    f.add_argument("--ca", default="/etc/localguard/pki/ca.crt")
    f.add_argument("--dest", default="/etc/localguard/pki/crl.pem")
    f.add_argument("--reload", action="append", default=[], metavar="UNIT")
    f.add_argument("--timeout", type=float, default=20)
    f.set_defaults(func=fetch)

    k = sub.add_parser("check-key", help="check that the CA key opens with the passphrase")
    passphrase(k)
    k.set_defaults(func=check_key)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        require_cryptography()
        result = args.func(args)
    except PkiError as exc:
        print(f"localguard-pki {args.command}: {exc}", file=sys.stderr)  # pylint: disable=ansible-bad-function
        return 1
    print(json.dumps(result, sort_keys=True))  # pylint: disable=ansible-bad-function
    return 0


if __name__ == "__main__":
    sys.exit(main())  # pylint: disable=ansible-bad-function
