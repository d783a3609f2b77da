"""The collector's alert engine: each rule fires on its case and stays quiet on the case beside it,
hostile lines are skipped, state survives a restart, alerts reach the daily file and the hook."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ansible_collections.localguard.hardening.plugins.module_utils import localguard_alerts as alerts
from ansible_collections.localguard.hardening.plugins.module_utils.localguard_alerts import (
    AlertEngine,
    ConfigError,
    load_config,
    main,
    parse_window,
    read_state,
    run,
    run_hook,
    save_state,
    write_alert,
)

MODULE = Path(alerts.__file__)
NOW = dt.datetime(2026, 11, 28, 10, 0, 0, tzinfo=dt.UTC)
SPEC_EXAMPLE = {
    "alert_dir": "/var/log/localguard/alerts",
    "state_file": "/var/lib/localguard-alerts/state.json",
    "hook": [],
    "hook_timeout": 10,
    "timezone": "UTC",
    "rules": {
        "admin_route": {"enabled": True},
        "engine_egress": {"enabled": True},
        "key_new_address": {"enabled": True},
        "key_hours": {"enabled": True, "windows": {"*": "00:00-24:00"}},
        "rate_limited_burst": {"enabled": True, "count": 20, "seconds": 60},
        "unauthorized_burst": {"enabled": True, "count": 30, "seconds": 60},
        "address_banned": {"enabled": True},
    },
}
EGRESS = (
    "[ 1234.5678] localguard-engine-egress-drop IN= OUT=eth0 MAC= SRC=198.18.10.11 DST=198.18.10.31"
    " LEN=60 TOS=00 PREC=0x00 TTL=64 ID=4242 DF PROTO=TCP SPT=40000 DPT=443 WINDOW=64240 RES=0x00 SYN"
    " URGP=0 UID=998 GID=998"
)


class Clock:
    def __init__(self, now: dt.datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def cfg(tmp_path: Path | None = None, **top: object) -> alerts.Config:
    data = {"rules": {}, **top}
    if tmp_path is not None:
        data.setdefault("alert_dir", str(tmp_path))
        data.setdefault("state_file", str(tmp_path / "state.json"))
    return load_config(data)


def rules(**settings: dict) -> alerts.Config:
    return cfg(rules=settings)


def gw(host: str = "gpu1", received: str = "2026-11-28T10:00:01+00:00", **fields: object) -> dict:
    """A gateway envelope; `at` (seconds after NOW) sets the line's time."""
    at = fields.pop("at", 0)
    line = {
        "time": (NOW + dt.timedelta(seconds=at)).isoformat(),
        "request_id": "5f2b9c0e4d8a11ef",
        "remote": "198.18.10.50",
        "key_id": "lab-valid",
        "method": "POST",
        "path": "/v1/chat/completions",
        "route": "chat",
        "denied": "",
        "status": 200,
        "bytes": 60,
        "request_bytes": 300,
        "request_time": 0.001,
        "upstream_time": "",
        "tls": "TLSv1.3",
        "client_cert": "",
        "user_agent": "curl/8.5.0",
        **fields,
    }
    return {"received": received, "host": host, "tag": "localguard-gateway", "msg": json.dumps(line)}


def envelope(tag: str, msg: str, host: str = "gpu1") -> dict:
    return {"received": "2026-11-28T10:00:01+00:00", "host": host, "tag": tag, "msg": msg}


def fired(engine: AlertEngine, *envelopes: dict) -> list[str]:
    return [alert["rule"] for env in envelopes for alert in engine.process(env)]


# --- config ----------------------------------------------------------------------------------------


def test_the_documented_config_loads_and_missing_keys_take_its_values():
    config = load_config(SPEC_EXAMPLE)
    assert all(rule.enabled for rule in config.rules.values()) and len(config.rules) == 7
    assert (config.rules["rate_limited_burst"].count, config.rules["unauthorized_burst"].count) == (20, 30)
    assert config.hook == () and config.hook_timeout == 10 and config.timezone is dt.UTC
    assert load_config({}) == config


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"rules": {"admin_routes": {}}}, "unknown key.*admin_routes"),
        ({"alert_directory": "/x"}, "unknown key.*alert_directory"),
        ({"rules": {"admin_route": {"enabled": True, "count": 3}}}, r"rules\.admin_route: unknown key"),
        ({"rules": {"admin_route": {"enabled": "yes"}}}, "enabled must be true or false"),
        ({"rules": {"key_hours": {"windows": {"*": "8:00-18:00"}}}}, "HH:MM-HH:MM"),
        ({"rules": {"key_hours": {"windows": {"*": "24:00-06:00"}}}}, "24:00 only as an end"),
        ({"rules": {"key_hours": {"windows": {"*": "08:00-24:30"}}}}, "24:00 only as an end"),
        ({"rules": {"key_hours": {"windows": {"*": "08:60-09:00"}}}}, "minutes 00-59"),
        ({"rules": {"key_hours": {"windows": {"*": "08:00-08:00"}}}}, "empty or ambiguous"),
        ({"rules": {"key_hours": {"windows": {"team-a.2": "08:00-18:00"}}}}, "without .<digits>"),
        ({"rules": {"key_hours": {"windows": {"bad name": "08:00-18:00"}}}}, "not a key name"),
        ({"rules": {"key_hours": {"windows": ["08:00-18:00"]}}}, "must be a mapping"),
        ({"rules": {"rate_limited_burst": {"count": 0}}}, "count must be an integer"),
        ({"rules": {"rate_limited_burst": {"count": "20"}}}, "count must be an integer"),
        ({"rules": {"unauthorized_burst": {"seconds": True}}}, "seconds must be an integer"),
        ({"hook": "/usr/local/bin/page-me"}, "hook must be a list"),
        ({"hook": ["/bin/x", ""]}, "hook must be a list"),
        ({"hook_timeout": 0}, "hook_timeout"),
        ({"timezone": "Mars/Olympus_Mons"}, "not a known IANA time zone"),
        ({"state_file": ""}, "state_file must be a non-empty string"),
        ([], "must be a JSON object"),
    ],
)
def test_bad_configs_are_refused_with_the_key_named(data, message):
    with pytest.raises(ConfigError, match=message):
        load_config(data)


def test_windows_end_at_24_00_and_may_cross_midnight():
    day = parse_window("18:00-24:00")
    assert day.contains(23 * 3600 + 3599) and day.contains(18 * 3600) and not day.contains(0)
    night = parse_window("22:00-06:00")
    assert night.contains(23 * 3600) and night.contains(0) and night.contains(6 * 3600 - 1)
    assert not night.contains(6 * 3600) and not night.contains(12 * 3600) and not night.contains(21 * 3600)


def test_a_bad_config_exits_2_naming_the_problem(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"rules": {"admin_rout": {"enabled": True}}}))
    assert main(["--config", str(path)]) == 2
    assert "admin_rout" in capsys.readouterr().err
    path.write_text("{not json")
    assert main(["--config", str(path)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "missing.json")]) == 2
    path.write_text(json.dumps(SPEC_EXAMPLE))
    assert main(["--config", str(path), "--check"]) == 0


# --- admin_route -------------------------------------------------------------------------------------


def test_admin_route_is_critical_with_the_request_fields():
    engine = AlertEngine(cfg(), clock=Clock())
    [alert] = engine.process(gw(path="/api/pull", route="", denied="admin", status=403, request_id="abc123"))
    assert alert == {
        "time": "2026-11-28T10:00:00Z",
        "rule": "admin_route",
        "severity": "critical",
        "host": "gpu1",
        "summary": alert["summary"],
        "key_id": "lab-valid",
        "path": "/api/pull",
        "method": "POST",
        "status": 403,
        "remote": "198.18.10.50",
        "request_id": "abc123",
    }
    assert list(alert)[:5] == ["time", "rule", "severity", "host", "summary"]
    assert "/api/pull" in alert["summary"] and "gpu1" in alert["summary"]


def test_admin_route_fires_on_any_status_and_not_on_other_refusals():
    engine = AlertEngine(cfg(), clock=Clock())
    # Without a key the gateway answers 401, and the attempt is still an admin route probe.
    assert fired(engine, gw(key_id="", path="/slots/0", denied="admin", status=401)) == ["admin_route"]
    assert fired(engine, gw(path="/v1/secret", route="", denied="", status=403)) == []
    assert fired(engine, gw(path="/api/pull", denied="Admin", status=403)) == []
    off = AlertEngine(rules(admin_route={"enabled": False}), clock=Clock())
    assert fired(off, gw(path="/api/pull", denied="admin", status=403)) == []


# --- engine_egress -----------------------------------------------------------------------------------


def test_engine_egress_drop_is_critical_with_destination_and_uid():
    engine = AlertEngine(cfg(), clock=Clock())
    [alert] = engine.process(envelope("ulogd", EGRESS, host="gpu2"))
    assert (alert["rule"], alert["severity"], alert["host"]) == ("engine_egress", "critical", "gpu2")
    assert {k: alert[k] for k in ("dst", "dport", "proto", "uid")} == {
        "dst": "198.18.10.31",
        "dport": 443,
        "proto": "TCP",
        "uid": 998,
    }
    assert "SPT" not in json.dumps(alert) and "198.18.10.11" not in json.dumps(alert)


def test_engine_egress_missing_fields_are_null_and_other_drops_are_quiet():
    engine = AlertEngine(cfg(), clock=Clock())
    [alert] = engine.process(
        envelope("ulogd", "localguard-engine-egress-drop OUT=eth0 PROTO=ICMP DST=10.0.0.1")
    )
    assert (alert["dst"], alert["proto"], alert["dport"], alert["uid"]) == ("10.0.0.1", "ICMP", None, None)
    assert fired(engine, envelope("ulogd", EGRESS.replace("engine-egress-drop", "output-drop"))) == []
    assert fired(engine, envelope("ulogd", EGRESS.replace("engine-egress-drop", "engine-local-drop"))) == []
    assert fired(engine, envelope("ulogd", EGRESS.replace("egress-drop", "egress-dropped"))) == []
    assert fired(engine, envelope("sshd", EGRESS)) == []  # any user can log text; only ulogd's counts
    off = AlertEngine(rules(engine_egress={"enabled": False}), clock=Clock())
    assert fired(off, envelope("ulogd", EGRESS)) == []


# --- key_new_address ---------------------------------------------------------------------------------


def test_first_address_is_learned_silently_and_a_second_one_alerts_once():
    engine = AlertEngine(cfg(), clock=Clock())
    assert fired(engine, gw(remote="198.18.10.50")) == []
    assert engine.state_changed
    engine.state_changed = False
    assert fired(engine, gw(remote="198.18.10.50")) == []
    assert not engine.state_changed
    [alert] = engine.process(gw(remote="198.18.10.51", request_id="r2"))
    assert (alert["rule"], alert["severity"], alert["key_id"], alert["remote"]) == (
        "key_new_address",
        "warning",
        "lab-valid",
        "198.18.10.51",
    )
    assert alert["request_id"] == "r2" and "198.18.10.50" in alert["summary"]
    assert fired(engine, gw(remote="198.18.10.51")) == []
    # Addresses are per key id: another key's first address is its own.
    assert fired(engine, gw(key_id="team-a.1", remote="198.18.10.99")) == []


def test_unauthenticated_lines_teach_no_address():
    engine = AlertEngine(cfg(), clock=Clock())
    assert fired(engine, gw(remote="198.18.10.60", status=401)) == []
    assert engine.state["known_addresses"] == {}
    # A refused-but-authenticated request (403, 429) is still the key being used from there.
    assert fired(engine, gw(remote="198.18.10.50", status=429)) == []
    assert fired(engine, gw(remote="198.18.10.61", status=403)) == ["key_new_address"]


def test_known_addresses_survive_a_restart_through_the_state():
    engine = AlertEngine(cfg(), clock=Clock())
    fired(engine, gw(remote="198.18.10.50"), gw(remote="198.18.10.51"))
    saved = json.loads(json.dumps(engine.state))
    again = AlertEngine(cfg(), saved, clock=Clock())
    assert fired(again, gw(remote="198.18.10.50"), gw(remote="198.18.10.51")) == []
    assert fired(again, gw(remote="198.18.10.52")) == ["key_new_address"]
    fresh = AlertEngine(cfg(), clock=Clock())
    assert fired(fresh, gw(remote="198.18.10.51"), gw(remote="198.18.10.52")) == ["key_new_address"]


def test_key_new_address_can_be_disabled():
    engine = AlertEngine(rules(key_new_address={"enabled": False}), clock=Clock())
    assert fired(engine, gw(remote="198.18.10.50"), gw(remote="198.18.10.51")) == []


# --- key_hours ---------------------------------------------------------------------------------------


def hours_engine(windows: dict, timezone: str = "Europe/Berlin") -> AlertEngine:
    return AlertEngine(
        cfg(
            timezone=timezone,
            rules={"key_hours": {"windows": windows}, "key_new_address": {"enabled": False}},
        ),
        clock=Clock(),
    )


def at_utc(hhmm: str, **fields: object) -> dict:
    return gw(time=f"2026-11-28T{hhmm}:00+00:00", **fields)


def test_key_hours_uses_the_configured_timezone():
    engine = hours_engine({"*": "08:00-18:00"})
    # Berlin is UTC+1 in November: 07:30Z is 08:30 there, 17:30Z is 18:30.
    assert fired(engine, at_utc("07:30")) == []
    [alert] = engine.process(at_utc("17:30", key_id="team-a.3"))
    assert (alert["rule"], alert["severity"], alert["key_id"], alert["window"]) == (
        "key_hours",
        "warning",
        "team-a.3",
        "08:00-18:00",
    )
    assert alert["local_time"] == "2026-11-28T18:30:00+01:00" and "18:30" in alert["summary"]
    assert fired(engine, at_utc("06:59")) == ["key_hours"]  # 07:59 local
    assert fired(engine, at_utc("07:00")) == []  # 08:00 local
    assert fired(engine, at_utc("17:00")) == ["key_hours"]  # 18:00 local, the end is exclusive


def test_key_hours_name_window_wins_and_crosses_midnight():
    engine = hours_engine({"*": "08:00-18:00", "night-shift": "22:00-06:00"})
    night = {"key_id": "night-shift.2"}  # the generation is dropped to find the name
    assert fired(engine, at_utc("22:00", **night)) == []  # 23:00 local: outside "*", inside its own
    assert fired(engine, at_utc("04:59", **night)) == []  # 05:59 local
    assert fired(engine, at_utc("05:00", **night)) == ["key_hours"]  # 06:00 local
    assert fired(engine, at_utc("11:00", **night)) == ["key_hours"]  # noon: inside "*", not its own
    assert fired(engine, at_utc("11:00", key_id="night-shift-b")) == []  # another name, "*" applies


def test_key_hours_without_a_window_checks_nothing():
    engine = hours_engine({"night-shift": "22:00-06:00"})
    assert fired(engine, at_utc("11:00", key_id="team-a.1")) == []
    assert fired(engine, at_utc("11:00", key_id="night-shift.1")) == ["key_hours"]
    all_day = hours_engine({"*": "00:00-24:00"})
    assert fired(all_day, at_utc("22:59"), at_utc("23:00"), gw(time="2026-11-28T23:59:59+01:00")) == []
    assert fired(engine, at_utc("11:00", key_id="")) == []  # no key, no key hours


def test_key_hours_falls_back_to_the_received_time():
    engine = hours_engine({"*": "08:00-18:00"}, timezone="UTC")
    assert fired(engine, gw(time="garbage", received="2026-11-28T03:00:00Z")) == ["key_hours"]
    assert fired(engine, gw(time=None, received="2026-11-28T12:00:00Z")) == []


# --- rate_limited_burst ------------------------------------------------------------------------------


def burst_engine() -> AlertEngine:
    return AlertEngine(rules(key_new_address={"enabled": False}, key_hours={"windows": {}}), clock=Clock())


def test_20_rate_limited_lines_in_a_minute_alert_and_19_do_not():
    engine = burst_engine()
    assert fired(engine, *(gw(status=429, at=i) for i in range(19))) == []
    [alert] = engine.process(gw(status=429, at=19))
    assert (alert["rule"], alert["severity"], alert["subject"], alert["count"], alert["seconds"]) == (
        "rate_limited_burst",
        "warning",
        "lab-valid",
        20,
        60,
    )
    assert fired(burst_engine(), *(gw(status=200, at=i) for i in range(40))) == []


def test_rate_limited_lines_older_than_the_window_do_not_count():
    engine = burst_engine()
    lines = [gw(status=429, at=0)] + [gw(status=429, at=60 + i) for i in range(19)]
    assert fired(engine, *lines) == []
    assert fired(engine, gw(status=429, at=79)) == ["rate_limited_burst"]


def test_rate_limited_bursts_are_per_host_and_per_subject():
    engine = burst_engine()
    split = [gw(host=f"gpu{1 + i % 2}", status=429, at=i) for i in range(20)]
    assert fired(engine, *split) == []
    by_address = [gw(key_id="", remote=f"198.18.10.{50 + i % 2}", status=429, at=i) for i in range(20)]
    assert fired(engine, *by_address) == []
    [alert] = [a for i in range(20, 30) for a in engine.process(gw(key_id="", status=429, at=i))]
    assert (alert["subject"], alert["remote"], alert["key_id"]) == ("addr:198.18.10.50", "198.18.10.50", "")


def test_a_rate_limited_flood_alerts_once_per_window():
    engine = burst_engine()
    assert fired(engine, *(gw(status=429, at=t) for t in range(20))) == ["rate_limited_burst"]  # at 19 s
    assert fired(engine, *(gw(status=429, at=t) for t in range(20, 79))) == []
    assert fired(engine, gw(status=429, at=79)) == ["rate_limited_burst"]


# --- unauthorized_burst ------------------------------------------------------------------------------


def test_unauthorized_lines_from_one_address_add_up_across_gateways():
    engine = burst_engine()
    guesses = [
        gw(host=f"gpu{1 + i % 3}", key_id="", remote="198.18.10.66", status=401, at=i) for i in range(30)
    ]
    assert fired(engine, *guesses[:29]) == []
    [alert] = engine.process(guesses[29])
    assert (alert["rule"], alert["severity"], alert["remote"], alert["count"]) == (
        "unauthorized_burst",
        "warning",
        "198.18.10.66",
        30,
    )
    assert alert["hosts"] == ["gpu1", "gpu2", "gpu3"]
    assert fired(engine, gw(key_id="", remote="198.18.10.66", status=401, at=31)) == []  # cooling down


def test_unauthorized_lines_from_different_addresses_do_not_add_up():
    engine = burst_engine()
    spread = [gw(key_id="", remote=f"198.18.10.{60 + i % 2}", status=401, at=i) for i in range(40)]
    assert fired(engine, *spread) == []
    assert fired(engine, *(gw(key_id="", status=403, at=i) for i in range(40))) == []
    off = AlertEngine(rules(unauthorized_burst={"enabled": False}), clock=Clock())
    assert fired(off, *(gw(key_id="", status=401, at=i) for i in range(40))) == []


# --- address_banned ----------------------------------------------------------------------------------


def test_a_fail2ban_ban_alerts_and_an_unban_does_not():
    engine = AlertEngine(cfg(), clock=Clock())
    [alert] = engine.process(envelope("fail2ban.actions", "NOTICE  [localguard-gateway] Ban 198.18.10.51"))
    assert (alert["rule"], alert["severity"], alert["jail"], alert["address"]) == (
        "address_banned",
        "warning",
        "localguard-gateway",
        "198.18.10.51",
    )
    assert fired(engine, envelope("fail2ban.actions", "NOTICE [localguard-gateway]   Ban  2001:db8::5")) == [
        "address_banned"
    ]
    assert (
        fired(engine, envelope("fail2ban.actions", "NOTICE  [localguard-gateway] Unban 198.18.10.51")) == []
    )
    assert (
        fired(engine, envelope("fail2ban.actions", "NOTICE  [localguard-gateway] Restore Ban 1.2.3.4")) == []
    )
    assert fired(engine, envelope("fail2ban.filter", "INFO    [localguard-gateway] Found 198.18.10.51")) == []
    assert fired(engine, envelope("sshd", "NOTICE  [localguard-gateway] Ban 198.18.10.51")) == []


# --- hostile and malformed input -------------------------------------------------------------------


BAD_LINES = [
    b"",
    b"not json",
    b"[]",
    b"null",
    b'"a string"',
    b"{}",
    b"\xff\xfe\x00garbage",
    b"[" * 100_000,
    b'{"host": "gpu1", "tag": "localguard-gateway", "msg": "' + b"[" * 100_000 + b'"}',
    b'{"host": 5, "tag": "ulogd", "msg": "x"}',
    b'{"host": "gpu1", "tag": null, "msg": "x"}',
    b'{"host": "", "tag": "ulogd", "msg": "x"}',
    b'{"host": "gpu1", "tag": "localguard-gateway", "msg": "not json"}',
    b'{"host": "gpu1", "tag": "localguard-gateway", "msg": "[1, 2]"}',
    b'{"host": "gpu1", "tag": "localguard-gateway", "msg": 42}',
    b'{"host": "gpu1", "tag": "ulogd", "msg": ["localguard-engine-egress-drop"]}',
    b'{"host": "gpu1", "tag": "localguard-gateway", "msg": "{\\"status\\": ' + b"9" * 5000 + b'}"}',
]


def test_malformed_lines_are_skipped_and_counted():
    engine = AlertEngine(cfg(), clock=Clock())
    for line in BAD_LINES:
        assert engine.process_line(line) == [], line[:60]
    assert (engine.lines, engine.skipped) == (len(BAD_LINES), len(BAD_LINES))
    # The next good line is handled as usual.
    assert [a["rule"] for a in engine.process_line(json.dumps(gw(denied="admin")))] == ["admin_route"]


def test_wrong_field_types_and_absurd_values_raise_nothing():
    engine = AlertEngine(cfg(), clock=Clock())
    weird = [
        gw(status="429"),
        gw(status=10**30),
        gw(status=-1, remote=["198.18.10.50"], key_id={"id": 1}),
        gw(time="9999-12-31T23:59:59-23:59", received="0001-01-01T00:00:00+23:00"),
        gw(time=1e400, denied=None, path=None, method=7),
        gw(key_id="k", remote="198.18.10.50", status=True),
        envelope(
            "ulogd", "localguard-engine-egress-drop DPT=99999999999999999999 UID=-1 DST=" + "x" * 10_000
        ),
        envelope("fail2ban.actions", "[" + "j" * 1000 + "] Ban 1.2.3.4"),
    ]
    for env in weird:
        for alert in engine.process(env):
            json.dumps(alert)
    assert engine.skipped == 0


def test_alert_fields_are_capped_and_never_carry_the_whole_message():
    engine = AlertEngine(cfg(), clock=Clock())
    hostile = gw(
        host="gpu1",
        denied="admin",
        path="/api/pull/" + "A" * 100_000,
        method="\x1b[31mPOST\x1b[0m",
        user_agent="SECRET-USER-AGENT",
        request_id="\u202eevil",
    )
    [alert] = engine.process(hostile)
    text = json.dumps(alert)
    assert len(alert["path"]) == alerts.MAX_FIELD and len(text) < 2000
    assert "\x1b" not in alert["method"] and alert["method"] == "?[31mPOST?[0m"
    assert "\u202e" not in alert["request_id"] and "\u202e" not in alert["summary"]
    assert "SECRET-USER-AGENT" not in text and "TLSv1.3" not in text


# --- files: state, alerts ----------------------------------------------------------------------------


def test_a_corrupt_or_missing_state_file_starts_empty_and_says_so(tmp_path):
    path, err = tmp_path / "state.json", io.StringIO()
    assert read_state(path, err) == {"version": 1, "known_addresses": {}}
    assert "no state file" in err.getvalue()
    for corrupt in ("{not json", "[]", '{"version": 1, "known_addresses": []}', '{"version": 9}'):
        path.write_text(corrupt)
        err = io.StringIO()
        assert read_state(path, err) == {"version": 1, "known_addresses": {}}
        assert "unusable" in err.getvalue(), corrupt
    path.write_text(json.dumps({"version": 1, "known_addresses": {"k": ["198.18.10.50"]}}))
    assert read_state(path, io.StringIO())["known_addresses"] == {"k": ["198.18.10.50"]}


def test_state_is_written_atomically_with_mode_0600(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old")
    save_state(path, {"version": 1, "known_addresses": {"k": ["a"]}})
    assert json.loads(path.read_text())["known_addresses"] == {"k": ["a"]}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]  # no temp file left


def test_alerts_append_to_the_utc_day_file_with_mode_0640(tmp_path):
    old_umask = os.umask(0o077)
    try:
        write_alert(tmp_path, {"time": "2026-11-28T23:59:59Z", "rule": "a", "severity": "info"})
        write_alert(tmp_path, {"time": "2026-11-28T23:59:59Z", "rule": "b", "severity": "info"})
        write_alert(tmp_path, {"time": "2026-11-29T00:00:00Z", "rule": "c", "severity": "info"})
    finally:
        os.umask(old_umask)
    day = tmp_path / "2026-11-28.json"
    assert [json.loads(line)["rule"] for line in day.read_text().splitlines()] == ["a", "b"]
    assert json.loads((tmp_path / "2026-11-29.json").read_text())["rule"] == "c"
    assert stat.S_IMODE(day.stat().st_mode) == 0o640


def test_run_saves_state_only_when_it_changes_and_a_restart_stays_quiet(tmp_path, monkeypatch):
    config = cfg(tmp_path, rules={"key_hours": {"windows": {}}})
    saves = []
    real_save = alerts.save_state
    monkeypatch.setattr(alerts, "save_state", lambda path, state: saves.append(1) or real_save(path, state))
    lines = [
        json.dumps(gw(remote=r)).encode() + b"\n" for r in ("198.18.10.50", "198.18.10.50", "198.18.10.51")
    ]
    assert run(config, io.BytesIO(b"".join(lines)), io.StringIO(), Clock()) == 0
    assert len(saves) == 2  # learned .50, learned .51; the repeat of .50 changed nothing
    assert [json.loads(x)["rule"] for x in (tmp_path / "2026-11-28.json").read_text().splitlines()] == [
        "key_new_address"
    ]
    err = io.StringIO()
    again = b"".join(lines[1:]) + b"\n".join([b"garbage", b""])
    assert run(config, io.BytesIO(again), err, Clock()) == 0
    assert len(saves) == 2 and len((tmp_path / "2026-11-28.json").read_text().splitlines()) == 1
    assert "3 line(s), 1 skipped, 0 alert(s)" in err.getvalue()


def test_run_drops_an_oversized_line_and_reads_on(tmp_path, monkeypatch):
    monkeypatch.setattr(alerts, "MAX_LINE", 1000)
    config = cfg(tmp_path)
    big = json.dumps(gw(denied="admin", user_agent="x" * 5000)).encode()
    data = big + b"\n" + json.dumps(gw(denied="admin", request_id="small")).encode() + b"\n"
    err = io.StringIO()
    assert run(config, io.BytesIO(data), err, Clock()) == 0
    [line] = (tmp_path / "2026-11-28.json").read_text().splitlines()
    assert json.loads(line)["request_id"] == "small"
    assert "2 line(s), 1 skipped, 1 alert(s)" in err.getvalue()


def test_unwritable_alert_and_state_paths_are_reported_and_reading_goes_on(tmp_path):
    missing = tmp_path / "missing"
    config = cfg(tmp_path, alert_dir=str(missing), state_file=str(missing / "state.json"))
    remotes = ("198.18.10.50", "198.18.10.51", "198.18.10.52")
    lines = b"".join(json.dumps(gw(denied="admin", remote=r)).encode() + b"\n" for r in remotes)
    err = io.StringIO()
    assert run(config, io.BytesIO(lines), err, Clock()) == 0
    said = err.getvalue()
    assert said.count("cannot write admin_route alert") == 3 and said.count("cannot save state") == 1
    assert "3 line(s), 0 skipped, 0 alert(s)" in said and not missing.exists()


# --- hook --------------------------------------------------------------------------------------------

RECORD_HOOK = (
    "import os, sys; out = open(sys.argv[1], 'a');"
    " out.write(os.environ['LG_ALERT_RULE'] + ' ' + os.environ['LG_ALERT_SEVERITY'] + ' ' + sys.stdin.read())"
)


def test_the_hook_gets_the_alert_on_stdin_and_its_rule_in_the_environment(tmp_path):
    out = tmp_path / "hook.out"
    alert = {"time": "2026-11-28T10:00:00Z", "rule": "admin_route", "severity": "critical", "summary": "x"}
    assert run_hook([sys.executable, "-c", RECORD_HOOK, str(out)], alert, 5) is None
    rule, severity, body = out.read_text().split(" ", 2)
    assert (rule, severity, json.loads(body)) == ("admin_route", "critical", alert)
    assert (
        run_hook([sys.executable, "-c", "raise SystemExit(3)"], alert, 5) == f"hook {sys.executable} exited 3"
    )
    assert "cannot run hook" in run_hook([str(tmp_path / "no-such-hook")], alert, 5)


def gone(pid: int) -> bool:
    """Dead: no such process, or a zombie nobody has reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def test_a_hanging_hook_is_killed_whole_and_processing_goes_on(tmp_path):
    # The shell forks a sleep that would outlive it: the whole process group has to go.
    hook = ["/bin/sh", "-c", f"sleep 30 & echo $! >> {tmp_path / 'pids'}; wait"]
    config = cfg(tmp_path, hook=hook, hook_timeout=0.1)
    lines = b"".join(json.dumps(gw(denied="admin", request_id=f"r{i}")).encode() + b"\n" for i in range(2))
    err = io.StringIO()
    started = time.monotonic()
    assert run(config, io.BytesIO(lines), err, Clock()) == 0
    assert time.monotonic() - started < 1.5
    assert err.getvalue().count("hook /bin/sh killed after 0.1 s (admin_route alert)") == 2
    assert len((tmp_path / "2026-11-28.json").read_text().splitlines()) == 2
    pids = [int(pid) for pid in (tmp_path / "pids").read_text().split()]
    deadline = time.monotonic() + 1
    while not all(gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(pids) == 2 and all(gone(pid) for pid in pids)


# --- the program, end to end -------------------------------------------------------------------------


def test_the_program_reads_stdin_writes_alerts_and_runs_the_hook(tmp_path):
    alert_dir, hook_out = tmp_path / "alerts", tmp_path / "hook.out"
    alert_dir.mkdir()
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                **SPEC_EXAMPLE,
                "alert_dir": str(alert_dir),
                "state_file": str(tmp_path / "state.json"),
                "hook": [sys.executable, "-c", RECORD_HOOK, str(hook_out)],
                "hook_timeout": 5,
            }
        )
    )
    lines = [
        json.dumps(gw(path="/api/pull", denied="admin", status=403)),
        "this is not an envelope",
        json.dumps(envelope("fail2ban.actions", "NOTICE  [localguard-gateway] Unban 198.18.10.51")),
        json.dumps(envelope("fail2ban.actions", "NOTICE  [localguard-gateway] Ban 198.18.10.51")),
    ]
    done = subprocess.run(
        [sys.executable, str(MODULE), "--config", str(config)],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "4 line(s), 1 skipped, 2 alert(s)" in done.stderr
    [day_file] = alert_dir.iterdir()
    written = [json.loads(line) for line in day_file.read_text().splitlines()]
    assert [(a["rule"], a["host"]) for a in written] == [("admin_route", "gpu1"), ("address_banned", "gpu1")]
    assert day_file.name == written[0]["time"][:10] + ".json"
    hooked = hook_out.read_text().splitlines()
    assert [line.split(" ", 2)[:2] for line in hooked] == [
        ["admin_route", "critical"],
        ["address_banned", "warning"],
    ]
    assert [json.loads(line.split(" ", 2)[2]) for line in hooked] == written
    assert json.loads((tmp_path / "state.json").read_text())["known_addresses"] == {
        "lab-valid": ["198.18.10.50"]
    }
