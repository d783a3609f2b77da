#!/usr/bin/python3
# Copyright (c) 2026, localguard contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""localguard API keys: the registry, its lifecycle, the signed key list and the gateway side.

Plain functions on top of the standard library and `cryptography` (Ed25519), no Ansible imports.
The localguard_api_key modules use them on the registry host; the same file is installed on every
host as /usr/local/sbin/localguard-keys, a CLI that prints JSON on stdout, a human message on
stderr, and never a key:

  registry host  revoke (--name N | --id I), list, publish
  gateways       apply, fetch (mTLS loop run by systemd), status, usage

Only sha256(key) is ever stored; the plaintext exists in the module result that made it and in
the delivery file. It must run on Debian 12 (python3 3.11, python3-cryptography 38).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import dataclasses
import datetime as dt
import fcntl
import gzip
import hashlib
import http.client
import json
import os
import re
import secrets
import ssl
import stat
import sys
import tempfile
import time
import urllib.parse
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Loading must not need `cryptography`: Ansible's import check loads module_utils without it, and
# the registry reports and the usage merge work without it; signing and verifying say they need it.
try:
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
except ImportError as exc:
    CRYPTOGRAPHY_IMPORT_ERROR: ImportError | None = exc
else:
    CRYPTOGRAPHY_IMPORT_ERROR = None

UTC = dt.UTC
FORMAT = 1
TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

ROUTE_CLASSES = ("chat", "completions", "embeddings", "models", "tokenize", "health")
ENGINES = ("llama_cpp", "ollama", "tgi", "vllm")
STATUSES = ("active", "retiring", "revoked")
USABLE = ("active", "retiring")

DEFAULT_MAX_AGE = 90 * 86400
DEFAULT_OVERLAP = 86400
LOCK_TIMEOUT = 30.0
FETCH_TIMEOUT = 5.0
FETCH_MAX_BYTES = 64 * 1024 * 1024
FAILURE_LOG_INTERVAL = 60.0

REGISTRY = Path("/etc/localguard/keys/registry.json")
REGISTRY_LOCK = ".registry.lock"
SIGNING_KEY = Path("/etc/localguard/keys/keylist-signing.key")
PUBLISHED = Path("/var/www/localguard-keys/keylist.json")
GATEWAY_STATE = Path("/var/lib/localguard/gateway-keys")
STATIC_KEYS = Path("/etc/localguard/gateway/static-keys.json")
PINNED_PUBKEY = Path("/etc/localguard/gateway/keylist-signing.pub")

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
KEY_RE = re.compile(r"^lgk_[A-Za-z0-9_-]{43}[0-9a-f]{8}$")
RATE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
DURATION_RE = re.compile(r"^([0-9]+)([smhd])$")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Operator-supplied keys must survive the gateway's `Bearer\s+(\S+)` match unchanged.
IMPORTED_KEY_RE = re.compile(r"^[\x21-\x7e]{32,}$")


class ApiKeyError(Exception):
    """A refusal or failure (exit 1) whose message names what is wrong and never holds a key."""

    exit_code = 1


def require_cryptography() -> None:
    """Name the missing library instead of failing later with a NameError."""
    if CRYPTOGRAPHY_IMPORT_ERROR is not None:
        raise ApiKeyError(f"the Python library cryptography is required: {CRYPTOGRAPHY_IMPORT_ERROR}")


class Rejected(ApiKeyError):
    """Input refused as untrustworthy (exit 2): bad signature, older serial, corrupt registry."""

    exit_code = 2


class RegistryMissing(ApiKeyError):
    pass


class RegistryCorrupt(Rejected):
    pass


class LockTimeout(ApiKeyError):
    pass


class _Reported(ApiKeyError):
    """Already logged in the fetch loop's words; main() only returns its exit code."""


# ---------------------------------------------------------------------------------------------
# Time and durations


def format_ts(when: dt.datetime) -> str:
    return when.astimezone(UTC).strftime(TS_FORMAT)


def parse_ts(text: str) -> dt.datetime:
    """`YYYY-MM-DDTHH:MM:SSZ` only: one spelling, so timestamps also compare as strings."""
    if not isinstance(text, str):
        raise ValueError(f"timestamp {text!r} is not a string")
    return dt.datetime.strptime(text, TS_FORMAT).replace(tzinfo=UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC).replace(microsecond=0)


def parse_duration(text: str) -> int:
    """'90d' -> seconds. Only <int><s|m|h|d>: '1.5d' or '2w' are refused, not guessed."""
    match = DURATION_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    if not match:
        raise ApiKeyError(f"duration {text!r} is not <int><s|m|h|d> (e.g. 90d, 24h, 30s)")
    return int(match.group(1)) * DURATION_UNITS[match.group(2)]


# ---------------------------------------------------------------------------------------------
# Keys


def _checksum(body: str) -> str:
    return format(zlib.crc32(body.encode("ascii")) & 0xFFFFFFFF, "08x")


def generate_key() -> str:
    """lgk_ + 43 chars of base64url (256 bits from `secrets`) + CRC32 of those 43 chars, so a
    mistyped or truncated key is recognised before it is ever sent."""
    body = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")
    return f"lgk_{body}{_checksum(body)}"


def looks_like_key(text: object) -> bool:
    if not isinstance(text, str) or not KEY_RE.fullmatch(text):
        return False
    return _checksum(text[4:47]) == text[47:]


def acceptable_import(text: object) -> bool:
    """An operator-supplied key: a well-formed lgk_ key, or any other 32+ printable characters
    (keys made before localguard); an lgk_ key with a bad checksum is a typo, not a key."""
    if not isinstance(text, str):
        return False
    if text.startswith("lgk_"):
        return looks_like_key(text)
    return bool(IMPORTED_KEY_RE.fullmatch(text))


def sha256_hex(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Validation of what a key may reach


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ApiKeyError(f"key name {name!r} must match {NAME_RE.pattern}")
    return name


def _subset(values: object, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise ApiKeyError(f"{what} must be a list of {', '.join(allowed)} (empty = all)")
    unknown = sorted({str(v) for v in values if v not in allowed})
    if unknown:
        raise ApiKeyError(f"unknown {what} {', '.join(unknown)}; allowed: {', '.join(allowed)} (empty = all)")
    return tuple(sorted(set(values)))


def check_scopes(scopes: object) -> tuple[str, ...]:
    return _subset(scopes, ROUTE_CLASSES, "scopes")


def check_engines(engines: object) -> tuple[str, ...]:
    return _subset(engines, ENGINES, "engines")


def check_rate(rate: object) -> str:
    if rate == "":
        return ""
    if not isinstance(rate, str) or not RATE_RE.fullmatch(rate):
        raise ApiKeyError(
            f"rate {rate!r} must be a tier name matching {RATE_RE.pattern} or '' (default rate)"
        )
    return rate


def check_owner(owner: object) -> str:
    if not isinstance(owner, str) or len(owner) > 200 or not owner.isprintable():
        raise ApiKeyError("owner must be printable text of at most 200 characters")
    return owner


@dataclass(frozen=True)
class KeySpec:
    """What the caller asks for a name; None keeps what the name's newest key says (for a new
    name: owner '', every scope and engine, the default rate, 90 days, 24 hours)."""

    owner: str | None = None
    scopes: tuple[str, ...] | None = None
    engines: tuple[str, ...] | None = None
    rate: str | None = None
    max_age: int | None = None
    overlap: int | None = None


def make_spec(
    owner: str | None = None,
    scopes: Sequence[str] | None = None,
    engines: Sequence[str] | None = None,
    rate: str | None = None,
    max_age: str | None = None,
    overlap: str | None = None,
) -> KeySpec:
    spec = KeySpec(
        owner=None if owner is None else check_owner(owner),
        scopes=None if scopes is None else check_scopes(scopes),
        engines=None if engines is None else check_engines(engines),
        rate=None if rate is None else check_rate(rate),
        max_age=None if max_age is None else parse_duration(max_age),
        overlap=None if overlap is None else parse_duration(overlap),
    )
    if spec.max_age == 0:
        raise ApiKeyError("max_age must be longer than 0s")
    return spec


# ---------------------------------------------------------------------------------------------
# Registry records


_RECORD_TYPES: dict[str, type] = {
    "id": str,
    "name": str,
    "owner": str,
    "scopes": list,
    "engines": list,
    "rate": str,
    "sha256": str,
    "created": str,
    "not_after": str,
    "max_age_seconds": int,
    "overlap_seconds": int,
    "status": str,
    "delivered": bool,
    "retire_after": str,
    "rotated_from": str,
    "revoked_at": str,
}


def _typed(data: Mapping, types: Mapping[str, type], what: str) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"{what} is not an object")
    missing = sorted(set(types) - set(data))
    unknown = sorted(set(data) - set(types))
    if missing:
        raise ValueError(f"{what} lacks {', '.join(missing)}")
    if unknown:
        raise ValueError(f"{what} has unknown field(s) {', '.join(unknown)}")
    for field, kind in types.items():
        value = data[field]
        # bool is an int to Python; a count of true is still corrupt.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{what}: {field} must be {kind.__name__}")


@dataclass(frozen=True)
class Record:
    id: str
    name: str
    owner: str
    scopes: tuple[str, ...]
    engines: tuple[str, ...]
    rate: str
    sha256: str
    created: str
    not_after: str
    max_age_seconds: int
    overlap_seconds: int
    status: str
    delivered: bool
    retire_after: str = ""
    rotated_from: str = ""
    revoked_at: str = ""

    @property
    def generation(self) -> int:
        return int(self.id.rsplit(".", 1)[1])

    def effective_not_after(self) -> dt.datetime:
        """When gateways stop accepting it: a retiring key's overlap ends on its own."""
        end = parse_ts(self.not_after)
        if self.status == "retiring" and self.retire_after:
            end = min(end, parse_ts(self.retire_after))
        return end

    def usable(self, now: dt.datetime) -> bool:
        return self.status in USABLE and self.effective_not_after() > now

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["scopes"] = list(self.scopes)
        data["engines"] = list(self.engines)
        return data

    def public(self) -> dict:
        """The record as shown to people: everything but the hash."""
        data = self.to_json()
        del data["sha256"]
        return data

    @classmethod
    def from_json(cls, data: Mapping, where: str) -> Record:
        _typed(data, _RECORD_TYPES, where)
        where = f"{where} ({data['id']})"
        name = data["name"]
        if not NAME_RE.fullmatch(name):
            raise ValueError(f"{where}: bad name {name!r}")
        prefix, generation = data["id"].rpartition(".")[::2]
        if prefix != name or not generation.isdigit() or int(generation) < 1:
            raise ValueError(f"{where}: id is not <name>.<generation>")
        if not SHA256_RE.fullmatch(data["sha256"]):
            raise ValueError(f"{where}: sha256 is not 64 lowercase hex digits")
        if data["status"] not in STATUSES:
            raise ValueError(f"{where}: status must be one of {', '.join(STATUSES)}")
        for field in ("created", "not_after"):
            parse_ts(data[field])
        for field in ("retire_after", "revoked_at"):
            if data[field]:
                parse_ts(data[field])
        if data["max_age_seconds"] < 0 or data["overlap_seconds"] < 0:
            raise ValueError(f"{where}: negative duration")
        try:
            scopes = check_scopes(data["scopes"])
            engines = check_engines(data["engines"])
            rate = check_rate(data["rate"])
        except ApiKeyError as exc:
            raise ValueError(f"{where}: {exc}") from None
        return cls(**{**data, "scopes": scopes, "engines": engines, "rate": rate})


@dataclass(frozen=True)
class Registry:
    serial: int
    updated: str
    keys: tuple[Record, ...] = ()

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "serial": self.serial,
            "updated": self.updated,
            "keys": [r.to_json() for r in self.keys],
        }

    @classmethod
    def from_json(cls, data: object) -> Registry:
        _typed(data, {"format": int, "serial": int, "updated": str, "keys": list}, "the registry")
        if data["format"] != FORMAT:
            raise ValueError(f"format {data['format']} is not {FORMAT}")
        if data["serial"] < 0:
            raise ValueError("serial is negative")
        parse_ts(data["updated"])
        keys = [Record.from_json(r, f"record {i}") for i, r in enumerate(data["keys"])]
        for field in ("id", "sha256"):
            values = [getattr(r, field) for r in keys]
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise ValueError(f"repeated {field} {', '.join(repeated)}")
        return cls(data["serial"], data["updated"], _sorted(keys))

    def of(self, name: str) -> list[Record]:
        return [r for r in self.keys if r.name == name]

    def by_id(self, key_id: str) -> Record | None:
        return next((r for r in self.keys if r.id == key_id), None)

    def names(self) -> list[str]:
        return sorted({r.name for r in self.keys})


def _sorted(records: Iterable[Record]) -> tuple[Record, ...]:
    # By id, with generation 10 after 9.
    return tuple(sorted(records, key=lambda r: (r.name, r.generation)))


def new_registry(now: dt.datetime, serial: int = 0) -> Registry:
    return Registry(serial, format_ts(now), ())


# ---------------------------------------------------------------------------------------------
# Files: atomic writes, locks, the registry on disk


Owner = tuple[int, int]  # (uid, gid) to give a file, when running as root


def write_atomic(path: Path, data: bytes, mode: int, owner: Owner | None = None) -> None:
    """Write to a temp file beside `path`, fsync, rename over: readers see old or new, never half,
    and a crash leaves the old file and no temp file behind."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            if owner is not None:
                os.fchown(out.fileno(), *owner)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def file_lock(path: Path, timeout: float = LOCK_TIMEOUT, owner: Owner | None = None) -> Iterator[None]:
    """Exclusive flock on `path`, waiting at most `timeout` seconds."""
    try:
        # No symlinks: root must not be led to chown another file through a link planted in a
        # directory lg-keys can write.
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise ApiKeyError(f"cannot open lock file {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if owner is not None and (st.st_uid, st.st_gid) != owner:
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                raise ApiKeyError(f"lock file {path} is not a plain file of its own")
            os.fchown(fd, *owner)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"{path} is still held by another localguard-keys or module run after "
                        f"{timeout:g} s; try again when it has finished"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def registry_lock(registry_path: Path, timeout: float = LOCK_TIMEOUT) -> contextlib.AbstractContextManager:
    return file_lock(registry_path.parent / REGISTRY_LOCK, timeout)


def load_registry(
    path: Path, *, create: bool = False, now: dt.datetime | None = None, serial: int = 0
) -> Registry:
    """The registry at `path`. Missing: an error, or an empty one (not yet written) if `create`."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        if create:
            return new_registry(now or utcnow(), serial)
        raise RegistryMissing(
            f"key registry {path} does not exist; the key_registry role creates it (create: true)"
        ) from None
    except OSError as exc:
        raise ApiKeyError(f"cannot read key registry {path}: {exc.strerror}") from None
    try:
        return Registry.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise RegistryCorrupt(f"key registry {path} is corrupt ({exc}); nothing was written") from None


def registry_bytes(registry: Registry) -> bytes:
    return (json.dumps(registry.to_json(), indent=2, sort_keys=True) + "\n").encode()


def save_registry(path: Path, registry: Registry) -> None:
    write_atomic(path, registry_bytes(registry), 0o600)


# ---------------------------------------------------------------------------------------------
# Lifecycle: pure functions of (registry, name, now, ...) -> Outcome. Check mode computes the
# same registry with an empty hash instead of generating a key.


@dataclass(frozen=True)
class Outcome:
    registry: Registry
    changes: tuple[dict, ...] = ()
    key: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def _finish(old: Registry, records: Iterable[Record], changes: list[dict], now: dt.datetime, key=None):
    if not changes:
        return Outcome(old)
    registry = Registry(old.serial + 1, format_ts(now), _sorted(records))
    return Outcome(registry, tuple(changes), key)


def _secret(check: bool, supplied: str | None = None) -> tuple[str | None, str]:
    if supplied is not None:
        return None, sha256_hex(supplied)
    if check:
        return None, ""
    key = generate_key()
    return key, sha256_hex(key)


def _current(registry: Registry, name: str) -> Record | None:
    """The name's newest active record: the key clients should be using (or about to)."""
    active = [r for r in registry.of(name) if r.status == "active"]
    return max(active, key=lambda r: r.generation) if active else None


def _next_id(registry: Registry, name: str) -> str:
    return f"{name}.{max((r.generation for r in registry.of(name)), default=0) + 1}"


def _new_record(
    key_id: str, name: str, sha: str, spec: KeySpec, base: Record | None, now: dt.datetime, **extra
) -> Record:
    def pick(field: str, default, base_field: str = ""):
        wanted = getattr(spec, field)
        if wanted is not None:
            return wanted
        return getattr(base, base_field or field) if base else default

    max_age = pick("max_age", DEFAULT_MAX_AGE, "max_age_seconds")
    overlap = pick("overlap", DEFAULT_OVERLAP, "overlap_seconds")
    return Record(
        id=key_id,
        name=name,
        owner=pick("owner", ""),
        scopes=pick("scopes", ()),
        engines=pick("engines", ()),
        rate=pick("rate", ""),
        sha256=sha,
        created=format_ts(now),
        # Due for rotation after max_age, still valid for one more overlap so that a rotation
        # run on the day it falls due has time to deliver the successor.
        not_after=format_ts(now + dt.timedelta(seconds=max_age + overlap)),
        max_age_seconds=max_age,
        overlap_seconds=overlap,
        status="active",
        **{"delivered": False, **extra},
    )


def _update_meta(records: list[Record], name: str, spec: KeySpec, changes: list[dict]) -> list[Record]:
    """Owner, scopes, engines and rate belong to the name: bring its live records to them."""
    out = []
    for record in records:
        if record.name == name and record.status in USABLE:
            fields = {
                f: getattr(spec, f)
                for f in ("owner", "scopes", "engines", "rate")
                if getattr(spec, f) is not None and getattr(spec, f) != getattr(record, f)
            }
            if fields:
                record = dataclasses.replace(record, **fields)
                changes.append({"action": "update", "id": record.id, "fields": sorted(fields)})
        out.append(record)
    return out


def ensure_present(
    registry: Registry,
    name: str,
    now: dt.datetime,
    spec: KeySpec = KeySpec(),
    *,
    key: str | None = None,
    check: bool = False,
) -> Outcome:
    """A usable key for `name`: made (or imported from `key`) when there is none."""
    check_name(name)
    records = list(registry.keys)
    changes: list[dict] = []
    usable = [r for r in registry.of(name) if r.usable(now)]
    if key is not None and not acceptable_import(key):
        raise ApiKeyError(
            "the given key is neither an lgk_ key with a valid checksum nor 32+ printable characters"
        )
    if usable:
        if key is not None and sha256_hex(key) not in {r.sha256 for r in usable}:
            raise ApiKeyError(
                f"{name} already has a usable key ({', '.join(r.id for r in usable)}) that is not the "
                "given one; rotate or revoke it first"
            )
        return _finish(registry, _update_meta(records, name, spec, changes), changes, now)
    plaintext, sha = _secret(check, key)
    if key is not None and sha in {r.sha256 for r in registry.keys}:
        raise ApiKeyError("the given key is already registered under another id")
    key_id = _next_id(registry, name)
    # An imported key is already in its owner's hands: nothing to deliver.
    records.append(_new_record(key_id, name, sha, spec, None, now, delivered=key is not None))
    changes.append({"action": "import" if key is not None else "create", "id": key_id})
    return _finish(registry, records, changes, now, plaintext)


def rotation_due(record: Record, now: dt.datetime, max_age: int | None = None) -> bool:
    """Due once it is max_age old; a max_age lowered since it was made counts at once."""
    age = record.max_age_seconds if max_age is None else min(max_age, record.max_age_seconds)
    return now >= parse_ts(record.created) + dt.timedelta(seconds=age)


def rotate(
    registry: Registry,
    name: str,
    now: dt.datetime,
    spec: KeySpec = KeySpec(),
    *,
    force: bool = False,
    retire: bool = False,
    check: bool = False,
) -> Outcome:
    """One rotation step for `name`, safe to rerun:
    1. with `retire`, drop retiring records whose overlap has ended;
    2. an undelivered newest key (its plaintext died with an earlier run) gets a fresh key;
    3. else a delivered key that is due (or `force`) gets a successor, undelivered; the old key
       stays active until `deliver` retires it.
    """
    check_name(name)
    changes: list[dict] = []
    records = list(registry.keys)
    if retire:
        kept = []
        for r in records:
            if (
                r.name == name
                and r.status == "retiring"
                and r.retire_after
                and parse_ts(r.retire_after) <= now
            ):
                changes.append({"action": "remove", "id": r.id})
            else:
                kept.append(r)
        records = kept
    current = _current(registry, name)
    plaintext = None
    if current is None:
        plaintext, sha = _secret(check)
        key_id = _next_id(registry, name)
        records.append(_new_record(key_id, name, sha, spec, None, now))
        changes.append({"action": "create", "id": key_id})
    elif not current.delivered:
        plaintext, sha = _secret(check)
        fresh = _new_record(current.id, name, sha, spec, current, now, rotated_from=current.rotated_from)
        records = [fresh if r.id == current.id else r for r in records]
        changes.append({"action": "replace", "id": current.id})
    elif force or rotation_due(current, now, spec.max_age):
        plaintext, sha = _secret(check)
        key_id = _next_id(registry, name)
        records.append(_new_record(key_id, name, sha, spec, current, now, rotated_from=current.id))
        changes.append({"action": "rotate", "id": key_id, "from": current.id})
    records = _update_meta(records, name, spec, changes)
    return _finish(registry, records, changes, now, plaintext)


def deliver(
    registry: Registry, name: str, key: str, now: dt.datetime, *, overlap: int | None = None
) -> Outcome:
    """Record that `key` reached its owner: it must be the name's newest active key. Its
    predecessor turns retiring and stays accepted for `overlap` (default: the overlap it was
    made with)."""
    check_name(name)
    sha = sha256_hex(key)
    match = next((r for r in registry.of(name) if r.sha256 == sha), None)
    if match is None:
        raise ApiKeyError(f"the given key is not a key of {name}")
    current = _current(registry, name)
    if match.status != "active" or current is None or match.id != current.id:
        raise ApiKeyError(f"the given key is {match.id} ({match.status}), not {name}'s newest active key")
    changes: list[dict] = []
    records = list(registry.keys)
    if not match.delivered:
        records = [dataclasses.replace(r, delivered=True) if r.id == match.id else r for r in records]
        changes.append({"action": "deliver", "id": match.id})
    predecessor = registry.by_id(match.rotated_from) if match.rotated_from else None
    if predecessor and predecessor.status == "active":
        grace = predecessor.overlap_seconds if overlap is None else overlap
        retire_after = format_ts(now + dt.timedelta(seconds=grace))
        records = [
            dataclasses.replace(r, status="retiring", retire_after=retire_after)
            if r.id == predecessor.id
            else r
            for r in records
        ]
        changes.append({"action": "retire", "id": predecessor.id, "retire_after": retire_after})
    return _finish(registry, records, changes, now)


def revoke(
    registry: Registry, now: dt.datetime, *, name: str | None = None, key_id: str | None = None
) -> Outcome:
    """Revoke one generation (`key_id`) or every live generation of `name`."""
    if key_id:
        target = registry.by_id(key_id)
        if target is None:
            raise ApiKeyError(f"no key with id {key_id!r} in the registry")
        if name and target.name != name:
            raise ApiKeyError(f"key {key_id} belongs to {target.name}, not {name}")
        ids = {key_id} if target.status != "revoked" else set()
    elif name:
        check_name(name)
        ids = {r.id for r in registry.of(name) if r.status in USABLE}
    else:
        raise ApiKeyError("revoke needs a name or a key id")
    stamp = format_ts(now)
    records = [
        dataclasses.replace(r, status="revoked", revoked_at=stamp) if r.id in ids else r
        for r in registry.keys
    ]
    changes = [{"action": "revoke", "id": i} for i in sorted(ids)]
    return _finish(registry, records, changes, now)


def remove(registry: Registry, name: str, now: dt.datetime) -> Outcome:
    """Forget every record of `name` (state=absent)."""
    check_name(name)
    changes = [{"action": "remove", "id": r.id} for r in registry.of(name)]
    return _finish(registry, [r for r in registry.keys if r.name != name], changes, now)


def write_delivery(path: Path, key: str, check: bool = False) -> bool:
    """The delivery file holds the key and a newline, 0600; True if it was (or would be) written."""
    data = (key + "\n").encode()
    try:
        st = path.stat()
        if path.read_bytes() == data and st.st_mode & 0o777 == 0o600:
            return False
    except FileNotFoundError:
        pass
    if not check:
        write_atomic(path, data, 0o600)
    return True


# ---------------------------------------------------------------------------------------------
# Reports for the rotation playbook


def due_names(registry: Registry, now: dt.datetime) -> list[str]:
    """Names whose newest active key is due for rotation or was never delivered."""
    due = []
    for name in registry.names():
        current = _current(registry, name)
        if current and (not current.delivered or rotation_due(current, now)):
            due.append(name)
    return due


def retirable_names(registry: Registry, now: dt.datetime) -> list[str]:
    return sorted(
        {
            r.name
            for r in registry.keys
            if r.status == "retiring" and r.retire_after and parse_ts(r.retire_after) <= now
        }
    )


def expired_ids(registry: Registry, now: dt.datetime) -> list[str]:
    return [r.id for r in registry.keys if r.status in USABLE and parse_ts(r.not_after) <= now]


def stale_keys(registry: Registry, usage: Mapping, seconds: int, now: dt.datetime) -> list[str]:
    """Ids of delivered active keys unused for `seconds`: never seen in the usage report and made
    longer ago than that, or last seen longer ago than that."""
    cutoff = now - dt.timedelta(seconds=seconds)
    stale = []
    for record in registry.keys:
        if record.status != "active" or not record.delivered:
            continue
        last = parse_ts(record.created)
        seen = usage.get(record.id) if isinstance(usage, Mapping) else None
        if isinstance(seen, Mapping):
            with contextlib.suppress(ValueError):
                last = max(last, parse_ts(seen.get("last_seen", "")))
        if last < cutoff:
            stale.append(record.id)
    return stale


# ---------------------------------------------------------------------------------------------
# The signed key list


def canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def fingerprint(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    require_cryptography()
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ApiKeyError(f"cannot read the key list signing key {path}: {exc.strerror}") from None
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ApiKeyError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ApiKeyError(f"{path} is not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    require_cryptography()
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise ApiKeyError(f"cannot read the pinned key list public key {path}: {exc.strerror}") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ApiKeyError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ApiKeyError(f"{path} is not an Ed25519 public key")
    return key


def _entry(record: Record) -> dict:
    return {
        "id": record.id,
        "not_after": format_ts(record.effective_not_after()),
        "status": record.status,
        "scopes": list(record.scopes),
        "engines": list(record.engines),
        "rate": record.rate,
    }


def build_payload(registry: Registry, now: dt.datetime) -> dict:
    """What gateways get: active and retiring keys not yet expired, a retiring one ending at
    its retire_after, so the overlap ends on every gateway without another run."""
    return {
        "format": FORMAT,
        "serial": registry.serial,
        "issued": format_ts(now),
        "keys": {r.sha256: _entry(r) for r in registry.keys if r.usable(now)},
    }


def sign_payload(payload: Mapping, private_key: Ed25519PrivateKey) -> dict:
    data = canonical_json(payload)
    return {
        "format": FORMAT,
        "payload": base64.b64encode(data).decode("ascii"),
        "signature": base64.b64encode(private_key.sign(data)).decode("ascii"),
        "signer": fingerprint(private_key.public_key()),
    }


def envelope_bytes(envelope: Mapping) -> bytes:
    return json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode() + b"\n"


_ENTRY_TYPES = {"id": str, "not_after": str, "status": str, "scopes": list, "engines": list, "rate": str}


def _check_entry(sha: object, entry: object, where: str) -> dict:
    if not isinstance(sha, str) or not SHA256_RE.fullmatch(sha):
        raise ValueError(f"{where}: key {sha!r} is not a sha256 hex digest")
    _typed(entry, _ENTRY_TYPES, f"{where} {sha[:12]}")
    parse_ts(entry["not_after"])
    if entry["status"] not in STATUSES:
        raise ValueError(f"{where} {entry['id']}: bad status {entry['status']!r}")
    try:
        return {
            **entry,
            "scopes": list(check_scopes(entry["scopes"])),
            "engines": list(check_engines(entry["engines"])),
            "rate": check_rate(entry["rate"]),
        }
    except ApiKeyError as exc:
        raise ValueError(f"{where} {entry['id']}: {exc}") from None


def verify_envelope(data: bytes, public_key: Ed25519PublicKey) -> dict:
    """The payload of a signed key list, once its signer is the pinned key, its signature holds
    and its format is ours; anything else is Rejected."""
    try:
        envelope = json.loads(data)
        _typed(envelope, {"format": int, "payload": str, "signature": str, "signer": str}, "the key list")
        if envelope["format"] != FORMAT:
            raise ValueError(f"format {envelope['format']} is not {FORMAT}")
        payload_bytes = base64.b64decode(envelope["payload"], validate=True)
        signature = base64.b64decode(envelope["signature"], validate=True)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise Rejected(f"malformed key list ({exc})") from None
    pinned = fingerprint(public_key)
    if envelope["signer"] != pinned:
        raise Rejected(
            f"key list signed by {envelope['signer'][:16]}..., not the pinned key {pinned[:16]}..."
        )
    try:
        public_key.verify(signature, payload_bytes)
    except InvalidSignature:
        raise Rejected("bad key list signature") from None
    try:
        payload = json.loads(payload_bytes)
        _typed(payload, {"format": int, "serial": int, "issued": str, "keys": dict}, "the key list payload")
        if payload["format"] != FORMAT or payload["serial"] < 0:
            raise ValueError("bad format or serial")
        parse_ts(payload["issued"])
        payload["keys"] = {sha: _check_entry(sha, e, "key list entry") for sha, e in payload["keys"].items()}
    except (ValueError, TypeError) as exc:
        raise Rejected(f"signed key list with a malformed payload ({exc})") from None
    return payload


def published_serial(path: Path, public_key: Ed25519PublicKey) -> int | None:
    """The serial of the list published at `path`, None if missing or not signed by this key."""
    try:
        return verify_envelope(path.read_bytes(), public_key)["serial"]
    except (OSError, Rejected):
        return None


def publish_stale(registry: Registry, path: Path, public_key: Ed25519PublicKey) -> bool:
    """Whether the published list is missing, not signed by this key, or older than the registry."""
    published = published_serial(path, public_key)
    return published is None or published < registry.serial


def publish_keylist(registry: Registry, private_key: Ed25519PrivateKey, path: Path, now: dt.datetime) -> dict:
    payload = build_payload(registry, now)
    try:
        write_atomic(path, envelope_bytes(sign_payload(payload, private_key)), 0o644)
    except OSError as exc:
        raise ApiKeyError(f"cannot publish the key list to {path}: {exc.strerror}") from None
    return {"serial": registry.serial, "keys": len(payload["keys"]), "published": str(path)}


# ---------------------------------------------------------------------------------------------
# Gateway side: verify, apply, one file per usable key under by-hash/


def load_static(path: Path) -> dict[str, dict]:
    """Inventory keys ({sha256: entry}); a missing file means none."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ApiKeyError(f"cannot read static keys {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ApiKeyError(f"static keys {path} are not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ApiKeyError(f"static keys {path} are not an object of sha256 -> key")
    out = {}
    try:
        for sha, entry in data.items():
            # Written by older gateway roles without scopes, engines and rate: all of them.
            full = {"scopes": [], "engines": [], "rate": "", **entry} if isinstance(entry, dict) else entry
            out[sha] = _check_entry(sha, full, "static key")
    except (ValueError, TypeError) as exc:
        raise ApiKeyError(f"static keys {path}: {exc}") from None
    return out


def usable_keys(static: Mapping[str, dict], listed: Mapping[str, dict], now: dt.datetime) -> dict[str, dict]:
    """by-hash content: static and listed keys still valid; a hash revoked in the inventory stays
    out even if the list carries it."""
    blocked = {sha for sha, e in static.items() if e["status"] == "revoked"}
    out = {}
    for source in (static, listed):
        for sha, e in source.items():
            if sha in blocked or e["status"] not in USABLE or parse_ts(e["not_after"]) <= now:
                continue
            out[sha] = {f: e[f] for f in _ENTRY_TYPES}
    return dict(sorted(out.items()))


def sync_by_hash(directory: Path, wanted: Mapping[str, dict], owner: Owner | None = None) -> int:
    """Make `directory` hold exactly one file per wanted hash; returns how many files changed."""
    if not directory.is_dir():
        directory.mkdir(mode=0o750)
        if owner is not None:
            os.chown(directory, *owner)
    changed = 0
    for sha, entry in wanted.items():
        path = directory / sha
        data = canonical_json(entry)
        try:
            st = path.lstat()
            same = (
                path.read_bytes() == data
                and st.st_mode & 0o777 == 0o640
                and (owner is None or (st.st_uid, st.st_gid) == owner)
            )
        except OSError:
            same = False
        if not same:
            write_atomic(path, data, 0o640, owner)
            changed += 1
    for path in directory.iterdir():
        if path.name not in wanted and not path.is_dir():
            path.unlink(missing_ok=True)
            changed += 1
    return changed


def _state_owner(state_dir: Path) -> Owner | None:
    """Run as root (the playbook's push), files go to the state dir's owner and group: nginx's
    group reads by-hash/, and lg-keys' fetch service can still read current.json and the lock.
    Run as lg-keys, the setgid directory gives them the group."""
    if os.geteuid() != 0:
        return None
    st = state_dir.stat()
    return st.st_uid, st.st_gid


def _current_payload(state_dir: Path, public_key: Ed25519PublicKey | None) -> dict | None:
    path = state_dir / "current.json"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if public_key is None:
        raise Rejected("there is no pinned public key to verify it with")
    return verify_envelope(data, public_key)


def apply_keylist(
    state_dir: Path,
    static_path: Path,
    public_key: Ed25519PublicKey | None,
    new_list: bytes | None = None,
    now: dt.datetime | None = None,
) -> dict:
    """Verify `new_list` against the pinned key and make it current unless its serial is lower
    (Rejected) or equal (kept as is); then rebuild by-hash from static + current. Without a
    pinned key (pull path off) only static keys can be applied."""
    now = now or utcnow()
    if not state_dir.is_dir():
        raise ApiKeyError(f"state directory {state_dir} does not exist")
    if new_list is not None and public_key is None:
        raise ApiKeyError("no pinned public key to verify the key list with")
    owner = _state_owner(state_dir)
    with file_lock(state_dir / ".lock", owner=owner):
        try:
            current = _current_payload(state_dir, public_key)
        except Rejected as exc:
            if new_list is None:
                raise Rejected(
                    f"{state_dir / 'current.json'} no longer verifies ({exc}); by-hash left as is"
                ) from None
            current = None  # A fresh verified list replaces it (the pinned key may have changed).
        changed = False
        if new_list is not None:
            payload = verify_envelope(new_list, public_key)
            if current is not None and payload["serial"] < current["serial"]:
                raise Rejected(f"older serial {payload['serial']} < current {current['serial']}")
            if current is None or payload["serial"] > current["serial"]:
                write_atomic(state_dir / "current.json", new_list, 0o640, owner)
                current = payload
                changed = True
        static = load_static(static_path)
        wanted = usable_keys(static, current["keys"] if current else {}, now)
        changed = sync_by_hash(state_dir / "by-hash", wanted, owner) > 0 or changed
    return {"serial": current["serial"] if current else None, "changed": changed, "keys": len(wanted)}


def gateway_status(state_dir: Path) -> dict:
    """What a gateway enforces now (current.json was verified before it was written)."""
    path = state_dir / "current.json"
    result: dict = {"serial": None, "issued": None, "keys": 0, "applied_at": None}
    try:
        envelope = json.loads(path.read_bytes())
        payload = json.loads(base64.b64decode(envelope["payload"]))
        result.update(
            serial=payload["serial"],
            issued=payload["issued"],
            applied_at=format_ts(dt.datetime.fromtimestamp(path.stat().st_mtime, UTC)),
        )
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ApiKeyError(f"cannot read {path}: {exc}") from None
    by_hash = state_dir / "by-hash"
    if by_hash.is_dir():
        result["keys"] = sum(1 for p in by_hash.iterdir() if SHA256_RE.fullmatch(p.name))
    return result


def fetch_keylist(
    url: str, ca: Path, cert: Path, key: Path, etag: str | None = None, timeout: float = FETCH_TIMEOUT
) -> tuple[int, bytes | None, str | None]:
    """GET the list over mTLS (server checked against `ca` and the URL's host name).
    Returns (200, body, etag) or (304, None, etag)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ApiKeyError(f"key list URL {url!r} must be https://host[:port]/path")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    connection = http.client.HTTPSConnection(
        parts.hostname, parts.port or 443, context=context, timeout=timeout
    )
    try:
        headers = {"User-Agent": "localguard-keys", "Accept": "application/json"}
        if etag:
            headers["If-None-Match"] = etag
        connection.request(
            "GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), headers=headers
        )
        response = connection.getresponse()
        if response.status == 304:
            return 304, None, etag
        if response.status != 200:
            raise ApiKeyError(f"HTTP {response.status} from {url}")
        body = response.read(FETCH_MAX_BYTES + 1)
        if len(body) > FETCH_MAX_BYTES:
            raise ApiKeyError(f"key list from {url} is larger than {FETCH_MAX_BYTES} bytes")
        return 200, body, response.getheader("ETag")
    finally:
        connection.close()


class FailureLog:
    """The first failure of a run of failures is logged, then at most once per interval."""

    def __init__(self, interval: float = FAILURE_LOG_INTERVAL, clock=time.monotonic, stream=None) -> None:
        self.interval = interval
        self.clock = clock
        self.stream = stream
        self.failing = False
        self.last = 0.0

    def failure(self, serial: int | None, reason: str) -> bool:
        now = self.clock()
        if self.failing and now - self.last < self.interval:
            return False
        self.failing = True
        self.last = now
        shown = "none" if serial is None else serial
        print(  # pylint: disable=ansible-bad-function
            f"localguard-keys: keeping verified key list serial {shown}: {reason}",
            file=self.stream or sys.stderr,
        )
        return True

    def success(self, serial: int | None) -> None:
        if self.failing:
            print(  # pylint: disable=ansible-bad-function
                f"localguard-keys: key list fetch works again, serial {serial}",
                file=self.stream or sys.stderr,
            )
        self.failing = False


# ---------------------------------------------------------------------------------------------
# Usage report from the gateway's JSON access log


def _log_time(text: object) -> dt.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when.replace(tzinfo=when.tzinfo or UTC).astimezone(UTC)


def usage_report(lines: Iterable[str | bytes], report: dict | None = None) -> dict:
    """{key_id: {last_seen, remote, requests}} from lg_json access log lines; malformed lines
    and requests without a key id are skipped."""
    seen: dict[str, list] = {}
    for key_id, entry in (report or {}).items():
        seen[key_id] = [parse_ts(entry["last_seen"]), entry["remote"], entry["requests"]]
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        key_id = event.get("key_id")
        when = _log_time(event.get("time"))
        if not isinstance(key_id, str) or key_id in ("", "-") or when is None:
            continue
        remote = event.get("remote") if isinstance(event.get("remote"), str) else ""
        entry = seen.setdefault(key_id, [when, remote, 0])
        entry[2] += 1
        if when >= entry[0]:
            entry[0], entry[1] = when, remote
    return {
        k: {"last_seen": format_ts(v[0]), "remote": v[1], "requests": v[2]} for k, v in sorted(seen.items())
    }


def merge_usage(reports: Iterable[Mapping]) -> dict:
    """One fleet report from the gateways' usage reports: the latest use wins, requests add up."""
    merged: dict[str, dict] = {}
    for report in reports:
        for key_id, entry in report.items():
            known = merged.get(key_id)
            if known is None:
                merged[key_id] = dict(entry)
                continue
            requests = known["requests"] + entry["requests"]
            if parse_ts(entry["last_seen"]) > parse_ts(known["last_seen"]):
                known.update(entry)
            known["requests"] = requests
    return dict(sorted(merged.items()))


def read_usage(paths: Iterable[Path]) -> dict:
    report: dict = {}
    for path in paths:
        try:
            with path.open("rb") as probe:
                packed = probe.read(2) == b"\x1f\x8b"
            opener = gzip.open if packed else open
            with opener(path, "rb") as stream:
                report = usage_report(stream, report)
        except (OSError, EOFError) as exc:
            raise ApiKeyError(f"cannot read access log {path}: {exc}") from None
    return report


# ---------------------------------------------------------------------------------------------
# CLI
# This file is also a command on managed hosts (installed by the roles): the lines where pylint's
# ansible-bad-function check is off are that command's own output and exit status, never
# reached from a module.


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse exits 2, which here means "rejected input"
        self.print_usage(sys.stderr)
        print(f"{self.prog}: {message}", file=sys.stderr)  # pylint: disable=ansible-bad-function
        sys.exit(1)  # pylint: disable=ansible-bad-function


def _cmd_revoke(args: argparse.Namespace) -> dict:
    registry_path = Path(args.registry)
    now = utcnow()
    with registry_lock(registry_path):
        registry = load_registry(registry_path)
        outcome = revoke(registry, now, name=args.name, key_id=args.id)
        if outcome.changed:
            save_registry(registry_path, outcome.registry)
            publish_keylist(
                outcome.registry, load_signing_key(Path(args.signing_key)), Path(args.publish), now
            )
    revoked = [c["id"] for c in outcome.changes]
    _say(f"revoked {', '.join(revoked)}" if revoked else "nothing to revoke")
    return {"changed": outcome.changed, "serial": outcome.registry.serial, "revoked": revoked}


def _cmd_list(args: argparse.Namespace) -> dict:
    registry = load_registry(Path(args.registry))
    return {
        "serial": registry.serial,
        "updated": registry.updated,
        "keys": [r.public() for r in registry.keys],
    }


def _cmd_publish(args: argparse.Namespace) -> dict:
    registry_path = Path(args.registry)
    target = Path(args.publish)
    with registry_lock(registry_path):
        registry = load_registry(registry_path)
        signing_key = load_signing_key(Path(args.signing_key))
        if args.if_stale and not publish_stale(registry, target, signing_key.public_key()):
            return {"changed": False, "serial": registry.serial, "published": str(target)}
        result = publish_keylist(registry, signing_key, target, utcnow())
    _say(f"published serial {result['serial']} with {result['keys']} keys to {result['published']}")
    return {**result, "changed": True}


def _gateway_key(args: argparse.Namespace, required: bool = True) -> Ed25519PublicKey | None:
    path = Path(args.pubkey)
    if not required and not path.exists():
        return None
    return load_public_key(path)


def _cmd_apply(args: argparse.Namespace) -> dict:
    new_list = None
    if args.list:
        try:
            new_list = Path(args.list).read_bytes()
        except OSError as exc:
            raise ApiKeyError(f"cannot read key list {args.list}: {exc.strerror}") from None
    public_key = _gateway_key(args, required=new_list is not None)
    result = apply_keylist(Path(args.state_dir), Path(args.static), public_key, new_list)
    if result["changed"]:
        _say(f"applied key list serial {result['serial']}: {result['keys']} keys")
    return result


def _fetch_once(args: argparse.Namespace, etag: str | None) -> tuple[dict, str | None]:
    state_dir = Path(args.state_dir)
    status, body, new_etag = fetch_keylist(
        args.url, Path(args.ca), Path(args.cert), Path(args.key), etag, args.timeout
    )
    if status == 304:
        now = gateway_status(state_dir)
        return {"serial": now["serial"], "changed": False, "keys": now["keys"]}, etag
    # The ETag is kept only once the list is applied, so a refused list is fetched (and refused) again.
    return apply_keylist(state_dir, Path(args.static), _gateway_key(args), body), new_etag


def _cmd_fetch(args: argparse.Namespace) -> dict:
    log = FailureLog()
    etag = None
    while True:
        try:
            result, etag = _fetch_once(args, etag)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the verified list stays in force
            reason = str(exc) if isinstance(exc, ApiKeyError) else f"{type(exc).__name__}: {exc}"
            try:
                serial = gateway_status(Path(args.state_dir))["serial"]
            except ApiKeyError:
                serial = None
            log.failure(serial, reason)
            if args.once:
                reported = _Reported(reason)
                reported.exit_code = getattr(exc, "exit_code", 1)
                raise reported from None
        else:
            log.success(result["serial"])
            if result["changed"]:
                _say(f"applied key list serial {result['serial']}: {result['keys']} keys")
            if args.once:
                return result
            if result["changed"]:
                print(json.dumps(result, sort_keys=True), flush=True)  # pylint: disable=ansible-bad-function
        time.sleep(args.interval)


def _cmd_status(args: argparse.Namespace) -> dict:
    return gateway_status(Path(args.state_dir))


def _cmd_usage(args: argparse.Namespace) -> dict:
    return read_usage(Path(p) for p in args.log)


def _say(message: str) -> None:
    print(f"localguard-keys: {message}", file=sys.stderr)  # pylint: disable=ansible-bad-function


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="localguard-keys", description=__doc__.split("\n\n", maxsplit=1)[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def registry_paths(cmd: argparse.ArgumentParser, signing: bool = True) -> None:
        cmd.add_argument("--registry", default=str(REGISTRY))
        if signing:
            cmd.add_argument("--signing-key", default=str(SIGNING_KEY))
            cmd.add_argument("--publish", default=str(PUBLISHED))

    def gateway_paths(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--pubkey", default=str(PINNED_PUBKEY))
        cmd.add_argument("--state-dir", default=str(GATEWAY_STATE))
        cmd.add_argument("--static", default=str(STATIC_KEYS))

    r = sub.add_parser("revoke", help="revoke a name's keys or one key id, then publish")
    who = r.add_mutually_exclusive_group(required=True)
    who.add_argument("--name")
    who.add_argument("--id")
    registry_paths(r)
    r.set_defaults(func=_cmd_revoke)

    ls = sub.add_parser("list", help="the registry's records, without hashes")
    registry_paths(ls, signing=False)
    ls.set_defaults(func=_cmd_list)

    pb = sub.add_parser("publish", help="sign and publish the key list")
    pb.add_argument(
        "--if-stale", action="store_true", help="only if the published list is missing, foreign or older"
    )
    registry_paths(pb)
    pb.set_defaults(func=_cmd_publish)

    a = sub.add_parser("apply", help="verify a signed list and rebuild by-hash (without --list: re-merge)")
    a.add_argument("--list")
    gateway_paths(a)
    a.set_defaults(func=_cmd_apply)

    f = sub.add_parser("fetch", help="fetch the signed list over mTLS and apply it, every --interval seconds")
    f.add_argument("--url", required=True)
    f.add_argument("--ca", required=True)
    f.add_argument("--cert", required=True)
    f.add_argument("--key", required=True)
    f.add_argument("--interval", type=float, default=2.0)
    f.add_argument("--timeout", type=float, default=FETCH_TIMEOUT)
    f.add_argument("--once", action="store_true")
    gateway_paths(f)
    f.set_defaults(func=_cmd_fetch)

    s = sub.add_parser("status", help="the key list this gateway enforces")
    s.add_argument("--state-dir", default=str(GATEWAY_STATE))
    s.set_defaults(func=_cmd_status)

    u = sub.add_parser("usage", help="per key id: last seen, from where, how many requests")
    u.add_argument("--log", nargs="+", required=True, metavar="FILE")
    u.set_defaults(func=_cmd_usage)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        result = args.func(args)
    except _Reported as exc:
        return exc.exit_code
    except ApiKeyError as exc:
        print(f"localguard-keys {args.command}: {exc}", file=sys.stderr)  # pylint: disable=ansible-bad-function
        return exc.exit_code
    except OSError as exc:
        print(f"localguard-keys {args.command}: {exc}", file=sys.stderr)  # pylint: disable=ansible-bad-function
        return 1
    print(json.dumps(result, sort_keys=True))  # pylint: disable=ansible-bad-function
    return 0


if __name__ == "__main__":
    sys.exit(main())  # pylint: disable=ansible-bad-function
