#!/usr/bin/python3
"""localguard PKI core: what a host may be issued, the revocation database, the CRL.

Plain functions on top of `cryptography`, no Ansible imports. The controller uses them through
the localguard_pki filters (expected SANs, CSR checks, name constraints); the same file is
installed on managed hosts as a small CLI run by systemd timers:

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
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

UTC = dt.UTC
DB_NAME = "revoked.json"
CREDENTIAL = "ca-passphrase"
# A host certificate serves TLS and identifies the host as a client (key list, log collector).
HOST_EKU = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)


class PkiError(Exception):
    """A refusal or failure whose message names what is wrong and never holds a secret."""


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
            kind, _, value = san.partition(":")
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
# CLI


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
    names = sorted({*old_names, *args.revoke_name, *(name for name, _ in certs), *(e.name for e in db)})
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


def fetch(args: argparse.Namespace) -> dict:
    ca_cert = x509.load_pem_x509_certificate(Path(args.ca).read_bytes())
    dest = Path(args.dest)
    try:
        with urllib.request.urlopen(args.url, timeout=args.timeout) as response:  # noqa: S310 - http CDP by design
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
    p = argparse.ArgumentParser(prog="localguard-pki", description=__doc__.split("\n\n")[0])
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
        result = args.func(args)
    except PkiError as exc:
        print(f"localguard-pki {args.command}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
