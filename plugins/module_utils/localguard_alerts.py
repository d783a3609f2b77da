#!/usr/bin/python3
# Copyright (c) 2026, localguard contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""localguard alert engine: turns the collector's log lines into alerts.

rsyslog on the collector pipes selected lines to this program (omprog), one JSON envelope per
line on stdin: {"received", "host", "tag", "msg"}. Each alert is one JSON line appended to
<alert_dir>/<YYYY-MM-DD>.json and handed to an optional hook command on its stdin.

  python3 localguard_alerts.py --config /etc/localguard/alerts/config.json
  python3 localguard_alerts.py --config FILE --check      (validate the config only)

The logic (load_config, AlertEngine.process) is pure and clock-injected; the I/O around it is
thin. Everything in `msg` is attacker-controlled: a bad line is skipped and counted, never fatal,
and only capped, control-character-free fields are copied into an alert. Standard library only,
no imports from other localguard modules: it runs on Debian 12 (python3 3.11) as a single file.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import zoneinfo
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

UTC = dt.UTC
TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
CONFIG = Path("/etc/localguard/alerts/config.json")
STATE_VERSION = 1

# Attacker-controlled text: bounded before it is parsed, copied or remembered.
MAX_LINE = 1024 * 1024
MAX_FIELD = 256
MAX_SUBJECTS = 10_000  # burst trackers per rule; the least recently seen subject goes first
MAX_KEYS = 10_000  # key ids with remembered addresses
MAX_ADDRESSES = 256  # remembered addresses per key id; the oldest goes first
# C0/C1 controls, zero-width and bidi overrides: an alert read in a terminal must show what was sent.
UNPRINTABLE_RE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")

GATEWAY_TAG = "localguard-gateway"
EGRESS_PREFIX = "localguard-engine-egress-drop"
DROP_PREFIX_RE = re.compile(
    r"(?<![\w-])localguard-(?:engine-egress|output|input|invalid|forward|engine-local)-drop(?![\w-])"
)
KV_RE = re.compile(r"(?<![\w=])([A-Z]+)=(\S*)")
# "Restore Ban" (fail2ban restarting) is a ban already alerted on, "Unban" is not a ban.
BAN_RE = re.compile(r"\[(?P<jail>[^\]\s]{1,64})\]\s+Ban\s+(?P<address>\S+)")
GENERATION_RE = re.compile(r"\.[0-9]+$")
WINDOW_RE = re.compile(r"^([0-9]{2}):([0-9]{2})-([0-9]{2}):([0-9]{2})$")
WINDOW_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

Severity = Literal["info", "warning", "critical"]
RULES = (
    "admin_route",
    "engine_egress",
    "key_new_address",
    "key_hours",
    "rate_limited_burst",
    "unauthorized_burst",
    "address_banned",
)
# The settings each rule takes, with their defaults; `enabled` is common to all.
RULE_DEFAULTS: dict[str, dict[str, object]] = {
    "admin_route": {},
    "engine_egress": {},
    "key_new_address": {},
    "key_hours": {"windows": {"*": "00:00-24:00"}},
    "rate_limited_burst": {"count": 20, "seconds": 60},
    "unauthorized_burst": {"count": 30, "seconds": 60},
    "address_banned": {},
}
TOP_DEFAULTS: dict[str, object] = {
    "alert_dir": "/var/log/localguard/alerts",
    "state_file": "/var/lib/localguard-alerts/state.json",
    "hook": [],
    "hook_timeout": 10,
    "timezone": "UTC",
    "rules": {},
}


class ConfigError(Exception):
    """The config file is unusable; the message names the key and what is wrong (exit 2)."""


# ---------------------------------------------------------------------------------------------
# Config


@dataclass(frozen=True)
class Window:
    """Seconds of the day, end exclusive; end < start crosses midnight."""

    start: int
    end: int
    text: str

    def contains(self, second: int) -> bool:
        if self.start < self.end:
            return self.start <= second < self.end
        return second >= self.start or second < self.end


@dataclass(frozen=True)
class Rule:
    enabled: bool = True
    count: int = 0
    seconds: int = 0
    windows: Mapping[str, Window] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    alert_dir: Path
    state_file: Path
    hook: tuple[str, ...]
    hook_timeout: float
    timezone: dt.tzinfo
    rules: Mapping[str, Rule]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _known_keys(data: Mapping, allowed: Sequence[str], where: str) -> None:
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(allowed)}")


def _text_setting(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty string, not {value!r}")
    return value


def _int_setting(value: object, where: str, low: int, high: int) -> int:
    if not _is_int(value) or not low <= value <= high:
        raise ConfigError(f"{where} must be an integer from {low} to {high}, not {value!r}")
    return value


def parse_window(text: object, where: str = "window") -> Window:
    """A window from "HH:MM-HH:MM"; "24:00" only as an end; start == end is refused as ambiguous."""
    match = WINDOW_RE.match(text) if isinstance(text, str) else None
    if not match:
        raise ConfigError(f'{where} must be "HH:MM-HH:MM", not {text!r}')
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
        raise ConfigError(f"{where} {text!r}: hours are 00-23 (24:00 only as an end), minutes 00-59")
    start, end = h1 * 3600 + m1 * 60, h2 * 3600 + m2 * 60
    if start == end:
        raise ConfigError(f"{where} {text!r} is empty or ambiguous; all day is 00:00-24:00")
    return Window(start, end, text)


def _windows(value: object, where: str) -> dict[str, Window]:
    if not isinstance(value, Mapping):
        raise ConfigError(f'{where} must be a mapping of key name or "*" to "HH:MM-HH:MM"')
    windows = {}
    for name, text in value.items():
        if name != "*" and not (isinstance(name, str) and WINDOW_NAME_RE.match(name)):
            raise ConfigError(f'{where}: {name!r} is not a key name or "*"')
        if name != "*" and GENERATION_RE.search(name):
            # Windows apply to every generation of a key: team-a, not team-a.3.
            raise ConfigError(f"{where}: {name!r} looks like a key id; use the key name without .<digits>")
        windows[name] = parse_window(text, f"{where}.{name}")
    return windows


def _rule(name: str, data: object) -> Rule:
    where = f"rules.{name}"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping, not {data!r}")
    defaults = RULE_DEFAULTS[name]
    _known_keys(data, ("enabled", *defaults), where)
    merged = {**defaults, **data}
    enabled = merged.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}.enabled must be true or false, not {enabled!r}")
    rule = Rule(enabled=enabled)
    if "count" in defaults:
        rule = dataclasses.replace(
            rule,
            count=_int_setting(merged["count"], f"{where}.count", 1, 100_000),
            seconds=_int_setting(merged["seconds"], f"{where}.seconds", 1, 86_400),
        )
    if "windows" in defaults:
        rule = dataclasses.replace(rule, windows=_windows(merged["windows"], f"{where}.windows"))
    return rule


def _timezone(name: object) -> dt.tzinfo:
    name = _text_setting(name, "timezone")
    if name == "UTC":  # needs no tz database
        return UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ConfigError(f"timezone {name!r} is not a known IANA time zone") from exc


def load_config(data: object) -> Config:
    """The validated config; a missing key takes the default, an unknown one is an error."""
    if not isinstance(data, Mapping):
        raise ConfigError("the config must be a JSON object")
    _known_keys(data, tuple(TOP_DEFAULTS), "config")
    merged = {**TOP_DEFAULTS, **data}
    hook = merged["hook"]
    if not isinstance(hook, list) or not all(isinstance(arg, str) and arg for arg in hook):
        raise ConfigError(f"hook must be a list of non-empty strings (an argv, no shell), not {hook!r}")
    timeout = merged["hook_timeout"]
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 3600:
        raise ConfigError(f"hook_timeout must be a number of seconds in (0, 3600], not {timeout!r}")
    rules = merged["rules"]
    if not isinstance(rules, Mapping):
        raise ConfigError("rules must be a mapping of rule name to settings")
    _known_keys(rules, RULES, "rules")
    return Config(
        alert_dir=Path(_text_setting(merged["alert_dir"], "alert_dir")),
        state_file=Path(_text_setting(merged["state_file"], "state_file")),
        hook=tuple(hook),
        hook_timeout=float(timeout),
        timezone=_timezone(merged["timezone"]),
        rules={name: _rule(name, rules.get(name, {})) for name in RULES},
    )


# ---------------------------------------------------------------------------------------------
# State: the addresses each key id has been used from


def load_state(data: object) -> dict:
    """A clean state from decoded JSON; raises ValueError when it is not a state at all."""
    if not isinstance(data, Mapping) or data.get("version") != STATE_VERSION:
        raise ValueError(f"not a version {STATE_VERSION} state object")
    known = data.get("known_addresses")
    if not isinstance(known, Mapping):
        raise ValueError("known_addresses is not an object")
    clean: dict[str, list[str]] = {}
    for key_id, addresses in list(known.items())[:MAX_KEYS]:
        if not isinstance(key_id, str) or not isinstance(addresses, list):
            raise ValueError(f"known_addresses[{key_id!r}] is not a list")
        kept = [a[:MAX_FIELD] for a in addresses if isinstance(a, str) and a]
        if kept:
            clean[key_id[:MAX_FIELD]] = list(dict.fromkeys(kept))[-MAX_ADDRESSES:]
    return {"version": STATE_VERSION, "known_addresses": clean}


def empty_state() -> dict:
    return {"version": STATE_VERSION, "known_addresses": {}}


# ---------------------------------------------------------------------------------------------
# Parsing the envelope and its message


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


def format_ts(when: dt.datetime) -> str:
    return when.astimezone(UTC).strftime(TS_FORMAT)


def clean_text(value: object) -> str | None:
    """A string fit to copy into an alert: capped, controls replaced; anything else is None."""
    if not isinstance(value, str):
        return None
    return UNPRINTABLE_RE.sub("?", value[:MAX_FIELD])


def parse_time(value: object) -> dt.datetime | None:
    """RFC3339 (or any ISO 8601) as an aware UTC datetime; naive means UTC; junk is None."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    try:
        return when.replace(tzinfo=when.tzinfo or UTC).astimezone(UTC)
    except (OverflowError, ValueError):  # year 1 or 9999 with an offset
        return None


def parse_status(value: object) -> int | None:
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 3:
        value = int(value)
    return value if _is_int(value) and 100 <= value <= 999 else None


def key_name(key_id: str) -> str:
    """team-a.3 -> team-a: a window covers every generation of a key."""
    return GENERATION_RE.sub("", key_id)


def parse_drop(msg: str) -> dict | None:
    """A firewall drop line: its prefix and KEY=VALUE fields after it; None when it is not one."""
    match = DROP_PREFIX_RE.search(msg)
    if not match:
        return None
    fields: dict[str, str] = {}
    for key, value in KV_RE.findall(msg[match.end() :]):
        fields.setdefault(key, value)
    return {"prefix": match.group(0), "fields": fields}


def parse_ban(msg: str) -> dict | None:
    match = BAN_RE.search(msg)
    return match.groupdict() if match else None


def _number(value: str | None) -> int | None:
    if value and value.isascii() and value.isdigit() and len(value) <= 10:
        return int(value)
    return None


# ---------------------------------------------------------------------------------------------
# Bursts


@dataclass
class _Track:
    events: list[tuple[float, str]] = dataclasses.field(default_factory=list)
    quiet_until: float = float("-inf")


class BurstCounter:
    """`count` events for one subject within `seconds` (by the events' own times) is a burst; after
    one, that subject is quiet for `seconds`. Memory stays bounded: at most `count` events per
    subject and `max_subjects` subjects."""

    def __init__(self, count: int, seconds: int, max_subjects: int = MAX_SUBJECTS) -> None:
        self.count = count
        self.seconds = seconds
        self.max_subjects = max_subjects
        self._subjects: dict[Hashable, _Track] = {}

    def hit(self, subject: Hashable, when: float, origin: str) -> list[tuple[float, str]] | None:
        """Record one event; the events of the burst when this one completes a burst."""
        track = self._subjects.pop(subject, None) or _Track()
        self._subjects[subject] = track  # most recently seen last
        while len(self._subjects) > self.max_subjects:
            del self._subjects[next(iter(self._subjects))]
        # Lines from several hosts arrive slightly out of order: keep the events sorted.
        bisect.insort(track.events, (when, origin))
        horizon = track.events[-1][0] - self.seconds
        track.events = [event for event in track.events[-self.count :] if event[0] > horizon]
        if len(track.events) < self.count or when < track.quiet_until:
            return None
        burst, track.events = track.events, []
        track.quiet_until = when + self.seconds
        return burst


# ---------------------------------------------------------------------------------------------
# The engine: envelopes in, alerts out, no I/O


class AlertEngine:
    """process(envelope) -> alerts. The clock only stamps alerts (and dates a line that carries no
    usable time); bursts and windows use the line's own time."""

    def __init__(
        self, config: Config, state: dict | None = None, clock: Callable[[], dt.datetime] = utcnow
    ) -> None:
        self.config = config
        self.clock = clock
        self.state = load_state(state) if state is not None else empty_state()
        self.state_changed = False
        self.lines = 0
        self.skipped = 0
        rules = config.rules
        self._rate = BurstCounter(rules["rate_limited_burst"].count, rules["rate_limited_burst"].seconds)
        self._unauth = BurstCounter(rules["unauthorized_burst"].count, rules["unauthorized_burst"].seconds)

    def _on(self, rule: str) -> bool:
        return self.config.rules[rule].enabled

    def _alert(self, rule: str, severity: Severity, host: str, summary: str, **fields: object) -> dict:
        return {
            "time": format_ts(self.clock()),
            "rule": rule,
            "severity": severity,
            "host": host,
            "summary": summary,
            **fields,
        }

    def process_line(self, line: str | bytes) -> list[dict]:
        """One line from rsyslog; undecodable or non-JSON lines are skipped and counted."""
        if isinstance(line, bytes):
            line = line.decode("utf-8", errors="replace")
        if len(line) > MAX_LINE:
            return self.skip_line()
        try:
            envelope = json.loads(line)
        except (ValueError, RecursionError):
            return self.skip_line()
        return self.process(envelope)

    def skip_line(self, counted: bool = False) -> list[dict]:
        """Count a line as read (unless `counted` already) and skipped."""
        self.lines += not counted
        self.skipped += 1
        return []

    def process(self, envelope: object) -> list[dict]:
        """The alerts for one envelope; a malformed envelope is skipped and counted."""
        self.lines += 1
        if not isinstance(envelope, Mapping):
            return self.skip_line(counted=True)
        host, tag, msg = (envelope.get(k) for k in ("host", "tag", "msg"))
        if not isinstance(host, str) or not host or not isinstance(tag, str):
            return self.skip_line(counted=True)
        host = clean_text(host) or ""
        received = parse_time(envelope.get("received"))
        if tag == GATEWAY_TAG:
            if isinstance(msg, str):
                try:
                    msg = json.loads(msg.strip())
                except (ValueError, RecursionError):
                    msg = None
            if not isinstance(msg, Mapping):
                return self.skip_line(counted=True)
            return self._gateway(host, msg, received)
        if not isinstance(msg, str):
            return self.skip_line(counted=True)
        if tag.startswith("ulogd"):
            return self._firewall(host, msg)
        if tag.startswith("fail2ban"):
            return self._fail2ban(host, msg)
        return []

    # --- gateway lines -------------------------------------------------------------------------

    def _gateway(self, host: str, line: Mapping, received: dt.datetime | None) -> list[dict]:
        key_id = clean_text(line.get("key_id")) or ""
        remote = clean_text(line.get("remote")) or ""
        status = parse_status(line.get("status"))
        when = parse_time(line.get("time")) or received or self.clock().astimezone(UTC)
        request_id = clean_text(line.get("request_id"))
        alerts = []
        if self._on("admin_route") and line.get("denied") == "admin":
            alerts.append(self._admin_route(host, line, key_id, remote, status, request_id))
        if key_id and self._on("key_new_address") and status is not None and status != 401 and remote:
            alerts += self._key_new_address(host, key_id, remote, request_id)
        if key_id and self._on("key_hours"):
            alerts += self._key_hours(host, key_id, remote, when, request_id)
        if status == 429 and self._on("rate_limited_burst"):
            alerts += self._rate_limited(host, key_id, remote, when)
        if status == 401 and remote and self._on("unauthorized_burst"):
            alerts += self._unauthorized(host, remote, when)
        return alerts

    def _admin_route(
        self, host: str, line: Mapping, key_id: str, remote: str, status: int | None, request_id: str | None
    ) -> dict:
        method, path = clean_text(line.get("method")), clean_text(line.get("path"))
        return self._alert(
            "admin_route",
            "critical",
            host,
            f"Engine admin route {method} {path} requested on {host} from {remote or 'unknown address'}"
            f" with key {key_id or 'none'} (status {status}).",
            key_id=key_id,
            path=path,
            method=method,
            status=status,
            remote=remote,
            request_id=request_id,
        )

    def _key_new_address(self, host: str, key_id: str, remote: str, request_id: str | None) -> list[dict]:
        known_all = self.state["known_addresses"]
        known = known_all.get(key_id)
        if known is not None and remote in known:
            return []
        self.state_changed = True
        if known is None:
            # The first address of a key is where it was meant to be used: learned, not alerted.
            if len(known_all) >= MAX_KEYS:
                del known_all[next(iter(known_all))]
            known_all[key_id] = [remote]
            return []
        known.append(remote)
        del known[:-MAX_ADDRESSES]
        return [
            self._alert(
                "key_new_address",
                "warning",
                host,
                f"Key {key_id} used on {host} from a new address {remote}"
                f" (known before: {', '.join(known[-6:-1])}).",
                key_id=key_id,
                remote=remote,
                request_id=request_id,
                known_addresses=len(known) - 1,
            )
        ]

    def _key_hours(
        self, host: str, key_id: str, remote: str, when: dt.datetime, request_id: str | None
    ) -> list[dict]:
        windows = self.config.rules["key_hours"].windows
        window = windows.get(key_name(key_id)) or windows.get("*")
        if window is None:
            return []
        local = when.astimezone(self.config.timezone)
        if window.contains(local.hour * 3600 + local.minute * 60 + local.second):
            return []
        return [
            self._alert(
                "key_hours",
                "warning",
                host,
                f"Key {key_id} used on {host} from {remote or 'unknown address'} at"
                f" {local.strftime('%H:%M')} {local.tzname()}, outside its window {window.text}.",
                key_id=key_id,
                remote=remote,
                request_id=request_id,
                local_time=local.isoformat(timespec="seconds"),
                window=window.text,
            )
        ]

    def _rate_limited(self, host: str, key_id: str, remote: str, when: dt.datetime) -> list[dict]:
        subject = key_id or f"addr:{remote}"
        burst = self._rate.hit((host, subject), when.timestamp(), host)
        if burst is None:
            return []
        seconds = self._rate.seconds
        return [
            self._alert(
                "rate_limited_burst",
                "warning",
                host,
                f"{len(burst)} rate-limited (429) requests for {subject} on {host} within {seconds} s.",
                subject=subject,
                key_id=key_id,
                remote=remote,
                count=len(burst),
                seconds=seconds,
            )
        ]

    def _unauthorized(self, host: str, remote: str, when: dt.datetime) -> list[dict]:
        burst = self._unauth.hit(remote, when.timestamp(), host)
        if burst is None:
            return []
        hosts = sorted({origin for _at, origin in burst})
        seconds = self._unauth.seconds
        return [
            self._alert(
                "unauthorized_burst",
                "warning",
                host,
                f"{len(burst)} unauthorized (401) requests from {remote} within {seconds} s"
                f" across {len(hosts)} gateway(s): {', '.join(hosts[:5])}.",
                remote=remote,
                count=len(burst),
                seconds=seconds,
                hosts=hosts[:20],
            )
        ]

    # --- firewall and fail2ban lines -----------------------------------------------------------

    def _firewall(self, host: str, msg: str) -> list[dict]:
        drop = parse_drop(msg)
        if drop is None or drop["prefix"] != EGRESS_PREFIX or not self._on("engine_egress"):
            return []
        fields = drop["fields"]
        dst, proto = clean_text(fields.get("DST")), clean_text(fields.get("PROTO"))
        dport, uid = _number(fields.get("DPT")), _number(fields.get("UID"))
        return [
            self._alert(
                "engine_egress",
                "critical",
                host,
                f"Engine traffic leaving {host} was dropped: uid {uid} to {dst} {proto} port {dport}.",
                dst=dst,
                dport=dport,
                proto=proto,
                uid=uid,
            )
        ]

    def _fail2ban(self, host: str, msg: str) -> list[dict]:
        ban = parse_ban(msg)
        if ban is None or not self._on("address_banned"):
            return []
        jail, address = clean_text(ban["jail"]), clean_text(ban["address"])
        return [
            self._alert(
                "address_banned",
                "warning",
                host,
                f"fail2ban on {host} banned {address} (jail {jail}).",
                jail=jail,
                address=address,
            )
        ]


# ---------------------------------------------------------------------------------------------
# I/O: config, state, alert files, hook
# This file is also a command on managed hosts (installed by the roles): the lines where pylint's
# ansible-bad-function check is off are that command's own output and exit status, never
# reached from a module.


def _say(message: str, stream: IO[str] | None = None) -> None:
    print(f"localguard-alerts: {message}", file=stream or sys.stderr, flush=True)  # pylint: disable=ansible-bad-function


def read_config(path: Path) -> Config:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    return load_config(data)


def read_state(path: Path, stream: IO[str] | None = None) -> dict:
    """The saved state; a missing or corrupt file means starting empty, said on stderr."""
    try:
        return load_state(json.loads(path.read_bytes()))
    except FileNotFoundError:
        _say(f"no state file {path} yet, starting with no known addresses", stream)
    except (OSError, ValueError, RecursionError) as exc:
        _say(f"state file {path} is unusable ({exc}), starting with no known addresses", stream)
    return empty_state()


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Temp file beside `path`, fsync, rename over: a crash leaves the old state or the new one."""
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
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def save_state(path: Path, state: Mapping) -> None:
    write_atomic(path, json.dumps(state, sort_keys=True, indent=1).encode() + b"\n", 0o600)


def alert_bytes(alert: Mapping) -> bytes:
    return json.dumps(alert, ensure_ascii=True, separators=(", ", ": ")).encode() + b"\n"


def write_alert(alert_dir: Path, alert: Mapping) -> Path:
    """Append to <alert_dir>/<UTC date of the alert>.json, created 0640; the dir must exist."""
    path = alert_dir / f"{alert['time'][:10]}.json"
    flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o640)
        os.fchmod(fd, 0o640)  # whatever the umask
    except FileExistsError:
        fd = os.open(path, flags)
    try:
        os.write(fd, alert_bytes(alert))  # one write per line, unbuffered: flushed as it goes
    finally:
        os.close(fd)
    return path


def run_hook(argv: Sequence[str], alert: Mapping, timeout: float) -> str | None:
    """Run the hook (no shell) with the alert on stdin; what went wrong, or None."""
    env = {**os.environ, "LG_ALERT_RULE": str(alert["rule"]), "LG_ALERT_SEVERITY": str(alert["severity"])}
    try:
        # Its own process group, so a hook that forks is killed whole on timeout.
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, start_new_session=True
        )
    except OSError as exc:
        return f"cannot run hook {argv[0]}: {exc.strerror or exc}"
    try:
        proc.communicate(alert_bytes(alert), timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return f"hook {argv[0]} killed after {timeout:g} s"
    if proc.returncode != 0:
        return f"hook {argv[0]} exited {proc.returncode}"
    return None


def run(
    config: Config,
    lines: IO[bytes],
    stream: IO[str] | None = None,
    clock: Callable[[], dt.datetime] = utcnow,
) -> int:
    """Read envelopes until EOF, write and hand on the alerts; nothing in a line stops it."""
    engine = AlertEngine(config, read_state(config.state_file, stream), clock)
    alerts_written, save_failing = 0, False
    while True:
        line = lines.readline(MAX_LINE + 1)
        if not line:
            break
        skipped = engine.skipped
        if len(line) > MAX_LINE:
            while not line.endswith(b"\n") and (line := lines.readline(MAX_LINE)):
                pass  # the rest of an oversized line goes with it
            engine.skip_line()
            alerts = []
        else:
            try:
                alerts = engine.process_line(line)
            except Exception as exc:  # a bug must not let one hostile line stop alerting
                engine.skip_line(counted=True)
                alerts = []
                _say(f"line {engine.lines} skipped: {type(exc).__name__}: {exc}"[:300], stream)
        if engine.skipped > skipped and (engine.skipped in (1, 10, 100) or engine.skipped % 1000 == 0):
            _say(f"{engine.skipped} malformed line(s) skipped so far", stream)
        for alert in alerts:
            try:
                write_alert(config.alert_dir, alert)
                alerts_written += 1
            except OSError as exc:
                _say(f"cannot write {alert['rule']} alert to {config.alert_dir}: {exc}", stream)
        if engine.state_changed:
            try:
                save_state(config.state_file, engine.state)
                engine.state_changed = save_failing = False
            except OSError as exc:
                # Retried on every line until it works; said once per run of failures.
                if not save_failing:
                    _say(f"cannot save state to {config.state_file}: {exc}", stream)
                save_failing = True
        for alert in alerts if config.hook else ():
            problem = run_hook(config.hook, alert, config.hook_timeout)
            if problem:
                _say(f"{problem} ({alert['rule']} alert)", stream)
    _say(f"end of input: {engine.lines} line(s), {engine.skipped} skipped, {alerts_written} alert(s)", stream)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="localguard-alerts", description=__doc__.split("\n\n", maxsplit=1)[0])
    p.add_argument("--config", default=str(CONFIG), help="JSON config file")
    p.add_argument("--check", action="store_true", help="validate the config and exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config = read_config(Path(args.config))
    except ConfigError as exc:
        _say(f"bad config: {exc}")
        return 2
    if args.check:
        return 0
    return run(config, sys.stdin.buffer)


if __name__ == "__main__":
    sys.exit(main())  # pylint: disable=ansible-bad-function
