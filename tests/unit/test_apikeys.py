"""The API key core: key format, registry files, the lifecycle, the signed list, the gateway side."""

from __future__ import annotations

import base64
import datetime as dt
import fcntl
import gzip
import hashlib
import http.server
import json
import os
import ssl
import stat
import threading
from pathlib import Path

import pytest
from ansible_collections.localguard.hardening.plugins.module_utils.localguard_apikeys import (
    ApiKeyError,
    FailureLog,
    LockTimeout,
    Registry,
    RegistryCorrupt,
    RegistryMissing,
    Rejected,
    acceptable_import,
    apply_keylist,
    build_payload,
    deliver,
    due_names,
    ensure_present,
    envelope_bytes,
    expired_ids,
    fetch_keylist,
    fingerprint,
    format_ts,
    gateway_status,
    generate_key,
    load_registry,
    load_static,
    looks_like_key,
    main,
    make_spec,
    merge_usage,
    new_registry,
    parse_duration,
    parse_ts,
    read_usage,
    registry_lock,
    remove,
    retirable_names,
    revoke,
    rotate,
    rotation_due,
    save_registry,
    sha256_hex,
    sign_payload,
    stale_keys,
    usage_report,
    verify_envelope,
    write_delivery,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

NOW = dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


def later(**kwargs) -> dt.datetime:
    return NOW + dt.timedelta(**kwargs)


def by_id(registry: Registry) -> dict:
    return {r.id: r for r in registry.keys}


def issued(name: str = "team-a", spec=None, now: dt.datetime = NOW, registry: Registry | None = None):
    """A registry where `name` has a delivered key, and that key."""
    outcome = ensure_present(registry or new_registry(now), name, now, spec or make_spec())
    assert outcome.key
    return deliver(outcome.registry, name, outcome.key, now).registry, outcome.key


# --- key format ----------------------------------------------------------------------------------


def test_key_format_prefix_body_and_checksum():
    key = generate_key()
    assert len(key) == 55 and key.startswith("lgk_")
    assert looks_like_key(key)
    assert key[47:] == format(__import__("zlib").crc32(key[4:47].encode()) & 0xFFFFFFFF, "08x")


def test_keys_are_unique_and_carry_256_random_bits():
    keys = {generate_key() for _ in range(1000)}
    assert len(keys) == 1000
    for key in list(keys)[:50]:
        assert len(base64.urlsafe_b64decode(key[4:47] + "=")) == 32
    # Every base64url character shows up somewhere: the body is not drawn from a narrow alphabet.
    assert len({c for key in keys for c in key[4:47]}) == 64


def test_checksum_catches_any_single_changed_character():
    key = generate_key()
    for position in range(4, 47):
        replacement = "A" if key[position] != "A" else "B"
        assert not looks_like_key(key[:position] + replacement + key[position + 1 :]), position
    assert not looks_like_key(key[:-1] + ("0" if key[-1] != "0" else "1"))
    assert not looks_like_key(key.upper()) and not looks_like_key(key[:-1]) and not looks_like_key(None)


def test_imported_keys_need_32_printable_characters_or_a_valid_lgk_checksum():
    assert acceptable_import("x" * 32) and not acceptable_import("x" * 31)
    assert not acceptable_import("has a space in it but is long enough")
    key = generate_key()
    assert acceptable_import(key)
    assert not acceptable_import(key[:-1] + ("0" if key[-1] != "0" else "1"))  # a typo, not a key


def test_sha256_of_the_utf8_key():
    assert sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# --- durations and timestamps --------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [("90d", 7776000), ("24h", 86400), ("30s", 30), ("5m", 300)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["1.5d", "2w", "", "d", "-1d", "10", 90, None, "1d2h"])
def test_durations_refused(text):
    with pytest.raises(ApiKeyError, match="is not <int><s|m|h|d>"):
        parse_duration(text)


def test_timestamps_have_one_spelling():
    assert format_ts(NOW) == "2026-06-01T12:00:00Z"
    assert parse_ts("2026-06-01T12:00:00Z") == NOW
    for bad in ("2026-06-01 12:00:00Z", "2026-06-01T12:00:00+00:00", "2026-06-01T12:00:00"):
        with pytest.raises(ValueError):
            parse_ts(bad)


def test_expiry_arithmetic_max_age_then_one_overlap():
    spec = make_spec(max_age="1h", overlap="20s")
    outcome = ensure_present(new_registry(NOW), "team-a", NOW, spec)
    [record] = outcome.registry.keys
    assert (record.created, record.not_after) == ("2026-06-01T12:00:00Z", "2026-06-01T13:00:20Z")
    assert (record.max_age_seconds, record.overlap_seconds) == (3600, 20)
    assert not rotation_due(record, later(minutes=59, seconds=59))
    assert rotation_due(record, later(hours=1))
    assert record.usable(later(hours=1, seconds=19)) and not record.usable(later(hours=1, seconds=20))
    assert expired_ids(outcome.registry, later(hours=1, seconds=20)) == ["team-a.1"]
    assert expired_ids(outcome.registry, later(hours=1, seconds=19)) == []


# --- lifecycle -----------------------------------------------------------------------------------


def test_present_makes_one_key_then_leaves_it_alone():
    first = ensure_present(new_registry(NOW), "team-a", NOW, make_spec(owner="A", scopes=["chat"]))
    assert first.changes == ({"action": "create", "id": "team-a.1"},)
    assert looks_like_key(first.key)
    [record] = first.registry.keys
    assert record.sha256 == sha256_hex(first.key) and not record.delivered
    assert (record.owner, record.scopes, record.status, first.registry.serial) == (
        "A",
        ("chat",),
        "active",
        1,
    )
    again = ensure_present(first.registry, "team-a", later(days=1), make_spec(owner="A", scopes=["chat"]))
    assert (again.changed, again.key, again.registry) == (False, None, first.registry)
    # Nothing in the description of a change is the key.
    assert first.key not in json.dumps(first.changes) + json.dumps(first.registry.to_json())


def test_present_updates_scopes_of_the_live_key_without_a_new_key():
    registry, _ = issued()
    outcome = ensure_present(registry, "team-a", later(hours=1), make_spec(scopes=["embeddings"]))
    assert outcome.key is None
    assert outcome.changes == ({"action": "update", "id": "team-a.1", "fields": ["scopes"]},)
    assert outcome.registry.keys[0].scopes == ("embeddings",)
    assert outcome.registry.keys[0].sha256 == registry.keys[0].sha256


def test_present_imports_an_operator_key_as_delivered():
    key = "legacy-key-" + "x" * 30
    outcome = ensure_present(new_registry(NOW), "legacy", NOW, make_spec(), key=key)
    assert outcome.key is None and outcome.changes == ({"action": "import", "id": "legacy.1"},)
    [record] = outcome.registry.keys
    assert record.sha256 == sha256_hex(key) and record.delivered
    with pytest.raises(ApiKeyError, match="neither an lgk_ key"):
        ensure_present(new_registry(NOW), "legacy", NOW, make_spec(), key="short")
    with pytest.raises(ApiKeyError, match="already has a usable key"):
        ensure_present(outcome.registry, "legacy", NOW, make_spec(), key="another-" + "y" * 30)
    with pytest.raises(ApiKeyError, match="already registered"):
        ensure_present(outcome.registry, "other", NOW, make_spec(), key=key)


def test_check_mode_computes_the_change_without_making_a_key():
    outcome = ensure_present(new_registry(NOW), "team-a", NOW, make_spec(), check=True)
    assert outcome.changes == ({"action": "create", "id": "team-a.1"},) and outcome.key is None
    assert outcome.registry.keys[0].sha256 == ""
    registry, _ = issued()
    rotated = rotate(registry, "team-a", NOW, make_spec(), force=True, check=True)
    assert rotated.key is None and rotated.changes[0]["action"] == "rotate"


def test_full_rotation():
    spec = make_spec(max_age="30d", overlap="24h")
    registry, old_key = issued(spec=spec)

    # Not due: left alone, even with retire.
    idle = rotate(registry, "team-a", later(days=29), make_spec(), retire=True)
    assert (idle.changed, idle.key) == (False, None)

    # Due: a successor, undelivered; the old key stays active until the successor is delivered.
    t1 = later(days=30)
    step = rotate(registry, "team-a", t1, make_spec())
    assert step.changes == ({"action": "rotate", "id": "team-a.2", "from": "team-a.1"},)
    keys = by_id(step.registry)
    assert keys["team-a.1"].status == "active"
    assert (keys["team-a.2"].status, keys["team-a.2"].delivered, keys["team-a.2"].rotated_from) == (
        "active",
        False,
        "team-a.1",
    )
    # Durations not given are inherited from the key being replaced.
    assert (keys["team-a.2"].max_age_seconds, keys["team-a.2"].overlap_seconds) == (30 * 86400, 86400)
    assert due_names(step.registry, t1) == ["team-a"]  # undelivered counts as due
    first_successor = step.key

    # A rerun before delivery (the plaintext died with the last run): same id, fresh key.
    rerun = rotate(step.registry, "team-a", t1 + HOUR, make_spec())
    assert rerun.changes == ({"action": "replace", "id": "team-a.2"},)
    assert rerun.key != first_successor
    assert by_id(rerun.registry)["team-a.2"].sha256 == sha256_hex(rerun.key)
    assert len(rerun.registry.keys) == 2
    with pytest.raises(ApiKeyError, match="not a key of team-a"):
        deliver(rerun.registry, "team-a", first_successor, t1 + HOUR)

    # Delivered: the old key retires, accepted for one overlap more.
    t2 = t1 + 2 * HOUR
    delivered = deliver(rerun.registry, "team-a", rerun.key, t2)
    assert [c["action"] for c in delivered.changes] == ["deliver", "retire"]
    keys = by_id(delivered.registry)
    assert keys["team-a.2"].delivered
    assert (keys["team-a.1"].status, keys["team-a.1"].retire_after) == ("retiring", format_ts(t2 + DAY))
    assert due_names(delivered.registry, t2) == []
    # Delivering again changes nothing; an older key cannot be delivered over the new one.
    assert not deliver(delivered.registry, "team-a", rerun.key, t2 + HOUR).changed
    with pytest.raises(ApiKeyError, match="not team-a's newest active key"):
        deliver(delivered.registry, "team-a", old_key, t2 + HOUR)

    # During the overlap retire removes nothing; after it, only with retire=true.
    assert not rotate(delivered.registry, "team-a", t2 + DAY - dt.timedelta(seconds=1), retire=True).changed
    assert retirable_names(delivered.registry, t2 + DAY) == ["team-a"]
    assert not rotate(delivered.registry, "team-a", t2 + DAY).changed
    done = rotate(delivered.registry, "team-a", t2 + DAY, retire=True)
    assert done.changes == ({"action": "remove", "id": "team-a.1"},)
    assert [r.id for r in done.registry.keys] == ["team-a.2"]
    assert done.registry.serial == delivered.registry.serial + 1


def test_rotation_forced_and_lowered_max_age():
    registry, _ = issued(spec=make_spec(max_age="90d"))
    assert not rotate(registry, "team-a", later(days=1)).changed
    assert rotate(registry, "team-a", later(days=1), force=True).changes[0]["action"] == "rotate"
    # A max_age lowered since the key was made counts at once.
    assert rotate(registry, "team-a", later(days=31), make_spec(max_age="30d")).changed


def test_rotated_on_a_name_without_a_live_key_makes_one():
    registry, _ = issued()
    revoked = revoke(registry, NOW, name="team-a").registry
    outcome = rotate(revoked, "team-a", NOW)
    assert outcome.changes == ({"action": "create", "id": "team-a.2"},) and outcome.key


def test_revoke_by_name_and_by_id():
    registry, _ = issued()
    registry = rotate(registry, "team-a", NOW, force=True).registry  # team-a.2 undelivered
    registry, _ = issued("team-b", registry=registry)
    by_name = revoke(registry, later(hours=1), name="team-a")
    assert [c["id"] for c in by_name.changes] == ["team-a.1", "team-a.2"]
    keys = by_id(by_name.registry)
    assert {keys["team-a.1"].status, keys["team-a.2"].status, keys["team-b.1"].status} == {
        "revoked",
        "active",
    }
    assert keys["team-b.1"].status == "active"
    assert keys["team-a.1"].revoked_at == format_ts(later(hours=1))
    assert not revoke(by_name.registry, later(hours=2), name="team-a").changed

    one = revoke(registry, NOW, key_id="team-a.1")
    assert one.changes == ({"action": "revoke", "id": "team-a.1"},)
    assert by_id(one.registry)["team-a.2"].status == "active"
    with pytest.raises(ApiKeyError, match="no key with id"):
        revoke(registry, NOW, key_id="team-a.9")
    with pytest.raises(ApiKeyError, match="belongs to team-a, not team-b"):
        revoke(registry, NOW, name="team-b", key_id="team-a.1")


def test_absent_removes_every_record_of_the_name():
    registry, _ = issued()
    registry, _ = issued("team-b", registry=registry)
    outcome = remove(registry, "team-a", NOW)
    assert [r.name for r in outcome.registry.keys] == ["team-b"]
    assert not remove(outcome.registry, "team-a", NOW).changed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scopes": ["chat", "admin"]}, "unknown scopes admin"),
        ({"scopes": "chat"}, "scopes must be a list"),
        ({"engines": ["vllm", "sglang"]}, "unknown engines sglang"),
        ({"rate": "Bulk Tier"}, "rate 'Bulk Tier'"),
        ({"max_age": "0d"}, "max_age must be longer"),
        ({"overlap": "1 day"}, "is not <int>"),
        ({"owner": "a\nb"}, "owner must be printable"),
    ],
)
def test_scopes_engines_rate_validation(kwargs, message):
    with pytest.raises(ApiKeyError, match=message):
        make_spec(**kwargs)


def test_valid_scopes_are_normalized_and_names_checked():
    spec = make_spec(scopes=["models", "chat", "chat"], engines=["vllm"], rate="bulk")
    assert (spec.scopes, spec.engines, spec.rate) == (("chat", "models"), ("vllm",), "bulk")
    for bad in ("Team", "-team", "a" * 49, "team.a", ""):
        with pytest.raises(ApiKeyError, match="key name"):
            ensure_present(new_registry(NOW), bad, NOW)


# --- registry files ------------------------------------------------------------------------------


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    return directory


def test_registry_round_trip_0600(keydir):
    path = keydir / "registry.json"
    registry, _ = issued()
    registry, _ = issued("team-b", registry=registry)
    save_registry(path, registry)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_registry(path) == registry
    data = json.loads(path.read_text())
    assert set(data) == {"format", "serial", "updated", "keys"} and data["format"] == 1
    assert set(data["keys"][0]) == {
        "id", "name", "owner", "scopes", "engines", "rate", "sha256", "created", "not_after",
        "max_age_seconds", "overlap_seconds", "status", "delivered", "retire_after", "rotated_from",
        "revoked_at",
    }  # fmt: skip


def test_registry_keys_sort_by_id_with_generation_10_after_9(keydir):
    registry, _ = issued()
    for _ in range(10):
        step = rotate(registry, "team-a", NOW, force=True)
        registry = deliver(step.registry, "team-a", step.key, NOW).registry
    save_registry(keydir / "registry.json", registry)
    saved = [k["id"] for k in json.loads((keydir / "registry.json").read_text())["keys"]]
    assert saved == [f"team-a.{n}" for n in range(1, 12)]


def test_the_key_registry_roles_empty_registry_loads(keydir):
    path = keydir / "registry.json"
    path.write_text('{"format": 1, "serial": 0, "updated": "1970-01-01T00:00:00Z", "keys": []}')
    assert load_registry(path) == Registry(0, "1970-01-01T00:00:00Z", ())


def valid_registry_json() -> dict:
    registry, _ = issued()
    return registry.to_json()


CORRUPTIONS = {
    "bad json": lambda d: "{not json",
    "format 2": lambda d: {**d, "format": 2},
    "missing field": lambda d: {**d, "keys": [{k: v for k, v in d["keys"][0].items() if k != "sha256"}]},
    "unknown status": lambda d: {**d, "keys": [{**d["keys"][0], "status": "paused"}]},
    "id not name.gen": lambda d: {**d, "keys": [{**d["keys"][0], "id": "other.1"}]},
    "bool serial": lambda d: {**d, "serial": True},
    "bad timestamp": lambda d: {**d, "keys": [{**d["keys"][0], "not_after": "tomorrow"}]},
    "unknown scope": lambda d: {**d, "keys": [{**d["keys"][0], "scopes": ["admin"]}]},
    "repeated id": lambda d: {**d, "keys": [d["keys"][0], {**d["keys"][0], "sha256": "0" * 64}]},
    "not an object": lambda d: [d],
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_corrupt_registry_is_refused_and_left_untouched(keydir, corruption, capsys):
    path = keydir / "registry.json"
    data = CORRUPTIONS[corruption](valid_registry_json())
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    before = path.read_bytes()
    with pytest.raises(RegistryCorrupt, match=f"key registry {path} is corrupt"):
        load_registry(path)
    signing = write_signing_key(keydir)
    publish = keydir / "keylist.json"
    args = ["--registry", str(path), "--signing-key", str(signing), "--publish", str(publish)]
    assert main(["revoke", "--name", "team-a", *args]) == 2
    assert main(["publish", *args]) == 2
    assert "is corrupt" in capsys.readouterr().err
    assert path.read_bytes() == before and not publish.exists()
    assert sorted(p.name for p in keydir.iterdir()) == [
        ".registry.lock",
        "keylist-signing.key",
        "registry.json",
    ]


def test_a_missing_registry_is_an_error_unless_created(keydir, capsys):
    path = keydir / "registry.json"
    with pytest.raises(RegistryMissing, match=f"key registry {path} does not exist"):
        load_registry(path)
    assert main(["list", "--registry", str(path)]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert load_registry(path, create=True, now=NOW, serial=7) == Registry(7, format_ts(NOW), ())
    assert not path.exists()


def test_a_crash_before_the_rename_keeps_the_old_registry_and_no_temp_file(keydir, monkeypatch):
    path = keydir / "registry.json"
    registry, _ = issued()
    save_registry(path, registry)
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="No space left"):
        save_registry(path, revoke(registry, NOW, name="team-a").registry)
    assert path.read_bytes() == before
    assert [p.name for p in keydir.iterdir()] == ["registry.json"]


def test_a_second_lock_holder_times_out_with_a_clear_error(keydir):
    path = keydir / "registry.json"
    holder = os.open(keydir / ".registry.lock", os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with (
            pytest.raises(LockTimeout, match=r"\.registry\.lock is still held .* after 0\.2 s"),
            registry_lock(path, timeout=0.2),
        ):
            pytest.fail("two holders of the registry lock")
    finally:
        os.close(holder)
    with registry_lock(path, timeout=0.2):
        pass  # free again once the other holder is gone


# --- signed key list -----------------------------------------------------------------------------


def write_signing_key(directory: Path, key: Ed25519PrivateKey | None = None) -> Path:
    key = key or Ed25519PrivateKey.generate()
    path = directory / "keylist-signing.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)
    return path


def write_public_key(path: Path, key: Ed25519PrivateKey) -> Path:
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


SIGNER = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()


def signed(registry: Registry, now: dt.datetime = NOW, key: Ed25519PrivateKey = SIGNER) -> bytes:
    return envelope_bytes(sign_payload(build_payload(registry, now), key))


def test_signed_list_round_trip_canonical_payload():
    registry, key = issued(spec=make_spec(scopes=["chat"], engines=["vllm"], rate="bulk"))
    data = signed(registry)
    document = json.loads(data)
    assert (
        document["signer"]
        == hashlib.sha256(
            SIGNER.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        ).hexdigest()
    )
    raw = base64.b64decode(document["payload"])
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
    payload = verify_envelope(data, SIGNER.public_key())
    assert payload["serial"] == registry.serial and payload["issued"] == format_ts(NOW)
    assert payload["keys"] == {
        sha256_hex(key): {
            "id": "team-a.1",
            "not_after": registry.keys[0].not_after,
            "status": "active",
            "scopes": ["chat"],
            "engines": ["vllm"],
            "rate": "bulk",
        }
    }
    assert key not in data.decode()


def tamper(data: bytes, change) -> bytes:
    document = json.loads(data)
    payload = json.loads(base64.b64decode(document["payload"]))
    change(payload)
    document["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    return json.dumps(document).encode()


def test_tampered_forged_and_malformed_lists_are_rejected():
    registry, _ = issued()
    good = signed(registry)
    pinned = SIGNER.public_key()

    def promote(payload):
        payload["keys"]["0" * 64] = {**next(iter(payload["keys"].values())), "id": "evil.1"}

    with pytest.raises(Rejected, match="bad key list signature"):
        verify_envelope(tamper(good, promote), pinned)
    document = json.loads(good)
    signature = bytearray(base64.b64decode(document["signature"]))
    signature[0] ^= 1
    with pytest.raises(Rejected, match="bad key list signature"):
        verify_envelope(
            json.dumps({**document, "signature": base64.b64encode(signature).decode()}).encode(), pinned
        )
    with pytest.raises(Rejected, match="not the pinned key"):
        verify_envelope(signed(registry, key=OTHER), pinned)
    # Another key's signature under our signer's name still fails on the signature.
    forged = json.loads(signed(registry, key=OTHER))
    forged["signer"] = fingerprint(pinned)
    with pytest.raises(Rejected, match="bad key list signature"):
        verify_envelope(json.dumps(forged).encode(), pinned)
    for broken in (b"not json", json.dumps({**document, "format": 2}).encode(), b"[]"):
        with pytest.raises(Rejected, match="malformed key list"):
            verify_envelope(broken, pinned)
    bad_payload = sign_payload({"format": 1, "serial": 1, "issued": "now", "keys": {}}, SIGNER)
    with pytest.raises(Rejected, match="malformed payload"):
        verify_envelope(envelope_bytes(bad_payload), pinned)


def test_retiring_keys_end_at_retire_after_and_expired_keys_are_left_out():
    spec = make_spec(max_age="30d", overlap="2h")
    registry, old = issued(spec=spec)
    registry, _ = issued("gone", spec=make_spec(max_age="1h", overlap="1h"), registry=registry)
    # Rotated early (leaked?): the old key's own not_after is 20 days after its overlap ends.
    step = rotate(registry, "team-a", later(days=10), force=True)
    registry = deliver(step.registry, "team-a", step.key, later(days=10)).registry
    assert by_id(registry)["team-a.1"].not_after == format_ts(later(days=30, hours=2))
    payload = build_payload(registry, later(days=10, minutes=1))
    entries = {e["id"]: e for e in payload["keys"].values()}
    assert sorted(entries) == ["team-a.1", "team-a.2"]  # gone.1 expired after 2 h
    assert entries["team-a.1"]["status"] == "retiring"
    assert entries["team-a.1"]["not_after"] == format_ts(later(days=10, hours=2))
    # The overlap ends on its own: a list issued after it has only the new key.
    later_payload = build_payload(registry, later(days=10, hours=2))
    assert [e["id"] for e in later_payload["keys"].values()] == ["team-a.2"]
    assert sha256_hex(old) not in later_payload["keys"]


def test_revoked_keys_are_not_listed():
    registry, key = issued()
    assert sha256_hex(key) in build_payload(registry, NOW)["keys"]
    assert build_payload(revoke(registry, NOW, name="team-a").registry, NOW)["keys"] == {}


# --- gateway: apply ------------------------------------------------------------------------------


@pytest.fixture
def gateway(tmp_path: Path) -> dict:
    state = tmp_path / "gateway-keys"
    (state / "by-hash").mkdir(parents=True)
    static_keys = {
        sha256_hex("static-active-" + "a" * 30): {
            "id": "ops",
            "not_after": "2099-01-01T00:00:00Z",
            "status": "active",
        },
        sha256_hex("static-revoked-" + "b" * 30): {
            "id": "old-ops",
            "not_after": "2099-01-01T00:00:00Z",
            "status": "revoked",
            "scopes": [],
            "engines": [],
            "rate": "",
        },
        sha256_hex("static-expired-" + "c" * 30): {
            "id": "expired-ops",
            "not_after": "2020-01-01T00:00:00Z",
            "status": "active",
            "scopes": [],
            "engines": [],
            "rate": "",
        },
    }
    static = tmp_path / "static-keys.json"
    static.write_text(json.dumps(static_keys))
    return {"state": state, "static": static, "pubkey": write_public_key(tmp_path / "pin.pub", SIGNER)}


def by_hash(state: Path) -> dict:
    return {p.name: json.loads(p.read_bytes()) for p in (state / "by-hash").iterdir()}


def test_apply_builds_one_file_per_usable_key(gateway):
    registry, key = issued(spec=make_spec(scopes=["embeddings"]))
    registry, revoked_key = issued("team-b", registry=registry)
    registry = revoke(registry, NOW, name="team-b").registry
    (gateway["state"] / "by-hash" / ("f" * 64)).write_text("{}")  # left from an older list
    result = apply_keylist(gateway["state"], gateway["static"], SIGNER.public_key(), signed(registry), NOW)
    assert result == {"serial": registry.serial, "changed": True, "keys": 2}
    files = by_hash(gateway["state"])
    assert sorted(files) == sorted([sha256_hex(key), sha256_hex("static-active-" + "a" * 30)])
    assert files[sha256_hex(key)] == {
        "id": "team-a.1",
        "not_after": registry.keys[0].not_after,
        "status": "active",
        "scopes": ["embeddings"],
        "engines": [],
        "rate": "",
    }
    assert files[sha256_hex("static-active-" + "a" * 30)]["scopes"] == []  # older static format
    path = gateway["state"] / "by-hash" / sha256_hex(key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert (
        path.read_bytes()
        == json.dumps(files[sha256_hex(key)], sort_keys=True, separators=(",", ":")).encode()
    )
    assert (gateway["state"] / "current.json").read_bytes() == signed(registry)
    assert sha256_hex(revoked_key) not in files
    # Same list again: nothing to do.
    again = apply_keylist(gateway["state"], gateway["static"], SIGNER.public_key(), signed(registry), NOW)
    assert again == {**result, "changed": False}


def test_a_hash_revoked_in_the_inventory_stays_out_even_if_listed(gateway):
    registry = ensure_present(new_registry(NOW), "ops", NOW, key="static-revoked-" + "b" * 30).registry
    apply_keylist(gateway["state"], gateway["static"], SIGNER.public_key(), signed(registry), NOW)
    assert sha256_hex("static-revoked-" + "b" * 30) not in by_hash(gateway["state"])


def test_apply_refuses_an_older_serial_and_keeps_the_current_list(gateway, capsys):
    registry, key = issued()
    newer = revoke(registry, NOW, name="team-a").registry
    newer, new_key = issued("team-b", registry=newer)
    apply_keylist(gateway["state"], gateway["static"], SIGNER.public_key(), signed(newer), NOW)
    before = {p.name: p.read_bytes() for p in gateway["state"].rglob("*") if p.is_file()}
    with pytest.raises(Rejected, match=f"older serial {registry.serial} < current {newer.serial}"):
        apply_keylist(gateway["state"], gateway["static"], SIGNER.public_key(), signed(registry), NOW)
    listed = gateway["state"].parent / "old.json"
    listed.write_bytes(signed(registry))
    paths = ["--state-dir", str(gateway["state"]), "--static", str(gateway["static"])]
    assert main(["apply", "--list", str(listed), "--pubkey", str(gateway["pubkey"]), *paths]) == 2
    assert "older serial" in capsys.readouterr().err
    after = {p.name: p.read_bytes() for p in gateway["state"].rglob("*") if p.is_file()}
    assert after == before and sha256_hex(key) not in by_hash(gateway["state"])


def test_apply_refuses_a_tampered_list_and_keeps_the_current_one(gateway):
    registry, key = issued()
    apply_keylist(gateway["state"], gateway["static"], SIGNER.public_key(), signed(registry), NOW)
    before = by_hash(gateway["state"])
    revoked = revoke(registry, NOW, name="team-a").registry

    def unrevoke(payload):
        payload["keys"][sha256_hex(key)] = before[sha256_hex(key)]
        payload["serial"] += 10

    for bad in (tamper(signed(revoked), unrevoke), signed(revoked, key=OTHER)):
        with pytest.raises(Rejected):
            apply_keylist(gateway["state"], gateway["static"], SIGNER.public_key(), bad, NOW)
    assert by_hash(gateway["state"]) == before
    assert verify_envelope((gateway["state"] / "current.json").read_bytes(), SIGNER.public_key())[
        "serial"
    ] == (registry.serial)


def test_apply_without_a_list_re_merges_static_and_drops_expired(gateway):
    registry, key = issued(spec=make_spec(max_age="1h", overlap="1h"))
    apply_keylist(gateway["state"], gateway["static"], SIGNER.public_key(), signed(registry), NOW)
    static = json.loads(gateway["static"].read_text())
    static.pop(sha256_hex("static-active-" + "a" * 30))
    gateway["static"].write_text(json.dumps(static))
    result = apply_keylist(gateway["state"], gateway["static"], SIGNER.public_key(), None, later(hours=3))
    assert result == {"serial": registry.serial, "changed": True, "keys": 0}
    assert by_hash(gateway["state"]) == {}


def test_apply_without_a_pinned_key_applies_static_keys_only(gateway, capsys):
    paths = ["--state-dir", str(gateway["state"]), "--static", str(gateway["static"])]
    missing = str(gateway["state"].parent / "no.pub")
    assert main(["apply", "--pubkey", missing, *paths]) == 0
    assert json.loads(capsys.readouterr().out) == {"serial": None, "changed": True, "keys": 1}
    registry, _ = issued()
    (gateway["state"] / "current.json").write_bytes(signed(registry))
    assert main(["apply", "--pubkey", missing, *paths]) == 2  # cannot verify what it holds
    listed = gateway["state"].parent / "list.json"
    listed.write_bytes(signed(registry))
    assert main(["apply", "--list", str(listed), "--pubkey", missing, *paths]) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands files to another owner")
def test_as_root_files_go_to_the_state_dirs_owner_and_group(gateway):
    """The playbook's push runs as root; lg-keys' fetch service must still read and replace them."""
    for path in (gateway["state"], gateway["state"] / "by-hash"):
        os.chown(path, 65534, 65534)
    registry, _ = issued()
    apply_keylist(gateway["state"], gateway["static"], SIGNER.public_key(), signed(registry), NOW)
    made = [gateway["state"] / ".lock", gateway["state"] / "current.json"]
    made += list((gateway["state"] / "by-hash").iterdir())
    assert len(made) == 4
    assert {(p.stat().st_uid, p.stat().st_gid) for p in made} == {(65534, 65534)}


def test_a_lock_file_planted_as_a_symlink_is_refused(gateway, tmp_path):
    precious = tmp_path / "precious"
    precious.write_text("root's")
    (gateway["state"] / ".lock").symlink_to(precious)
    with pytest.raises(ApiKeyError, match="cannot open lock file"):
        apply_keylist(gateway["state"], gateway["static"], SIGNER.public_key(), None, NOW)
    assert by_hash(gateway["state"]) == {}


def test_status_reports_the_list_in_force(gateway, capsys):
    registry, _ = issued()
    assert gateway_status(gateway["state"])["serial"] is None
    apply_keylist(gateway["state"], gateway["static"], SIGNER.public_key(), signed(registry), NOW)
    assert main(["status", "--state-dir", str(gateway["state"])]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["serial"], status["issued"], status["keys"]) == (registry.serial, format_ts(NOW), 2)
    assert parse_ts(status["applied_at"])


def test_static_keys_file_errors_name_the_file(tmp_path):
    path = tmp_path / "static.json"
    assert load_static(path) == {}
    path.write_text('{"abc": {"id": "x"}}')
    with pytest.raises(ApiKeyError, match=f"static keys {path}"):
        load_static(path)


# --- gateway: fetch over mTLS --------------------------------------------------------------------


def _cert(subject: str, issuer_key, issuer_name, key, *, ca: bool = False, sans=()):
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime.now(dt.UTC) - DAY)
        .not_valid_after(dt.datetime.now(dt.UTC) + DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(directory: Path, name: str, cert, key=None) -> tuple[Path, Path | None]:
    cert_path = directory / f"{name}.crt"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is None:
        return cert_path, None
    key_path = directory / f"{name}.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture
def registry_server(tmp_path: Path):
    """An HTTPS server that wants a client certificate from the CA, serving `body` with an ETag."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unit CA")])
    ca = _cert("unit CA", ca_key, ca_name, ca_key, ca=True)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    server = _cert("localhost", ca_key, ca_name, server_key, sans=[x509.DNSName("localhost")])
    client = _cert("gpu-a01", ca_key, ca_name, client_key)
    ca_path, _ = _pem(tmp_path, "ca", ca)
    server_cert, server_key_path = _pem(tmp_path, "server", server, server_key)
    client_cert, client_key_path = _pem(tmp_path, "client", client, client_key)
    state = {"body": b"", "requests": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            etag = '"' + hashlib.sha256(state["body"]).hexdigest()[:16] + '"'
            state["requests"].append(self.headers.get("If-None-Match"))
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(state["body"])))
            self.end_headers()
            self.wfile.write(state["body"])

        def log_message(self, *args):
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_cert, server_key_path)
    context.load_verify_locations(ca_path)
    context.verify_mode = ssl.CERT_REQUIRED
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield {
            "port": httpd.server_address[1],
            "ca": ca_path,
            "cert": client_cert,
            "key": client_key_path,
            "state": state,
        }
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_fetch_over_mtls_with_etag(registry_server):
    srv = registry_server
    srv["state"]["body"] = b"list-1"
    url = f"https://localhost:{srv['port']}/keylist.json"
    status, body, etag = fetch_keylist(url, srv["ca"], srv["cert"], srv["key"])
    assert (status, body) == (200, b"list-1") and etag
    assert fetch_keylist(url, srv["ca"], srv["cert"], srv["key"], etag)[:2] == (304, None)
    assert srv["state"]["requests"] == [None, etag]
    # The server's name is checked against the URL's host: its certificate names localhost only.
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch|doesn't match"):
        fetch_keylist(f"https://127.0.0.1:{srv['port']}/keylist.json", srv["ca"], srv["cert"], srv["key"])
    with pytest.raises(ApiKeyError, match="must be https"):
        fetch_keylist(f"http://localhost:{srv['port']}/", srv["ca"], srv["cert"], srv["key"])


def test_fetch_once_applies_and_keeps_the_verified_list_on_a_bad_one(registry_server, gateway, capsys):
    srv = registry_server
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)  # fetch applies at the real time
    registry, key = issued(now=now)
    srv["state"]["body"] = signed(registry, now)
    args = [
        "fetch",
        "--once",
        "--url",
        f"https://localhost:{srv['port']}/keylist.json",
        "--ca",
        str(srv["ca"]),
        "--cert",
        str(srv["cert"]),
        "--key",
        str(srv["key"]),
        "--pubkey",
        str(gateway["pubkey"]),
        "--state-dir",
        str(gateway["state"]),
        "--static",
        str(gateway["static"]),
    ]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["serial"] == registry.serial
    assert sha256_hex(key) in by_hash(gateway["state"])
    srv["state"]["body"] = signed(revoke(registry, now, name="team-a").registry, now, key=OTHER)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"localguard-keys: keeping verified key list serial {registry.serial}: key list signed by" in err
    assert sha256_hex(key) in by_hash(gateway["state"])


def test_fetch_loop_keeps_polling_logs_once_and_sends_the_etag_only_after_an_apply(
    registry_server, gateway, capsys, monkeypatch
):
    from ansible_collections.localguard.hardening.plugins.module_utils import localguard_apikeys

    srv = registry_server
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    registry, key = issued(now=now)
    srv["state"]["body"] = signed(registry, now, key=OTHER)
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 2:
            srv["state"]["body"] = signed(registry, now)  # the registry host is fixed
        if len(sleeps) == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(localguard_apikeys.time, "sleep", sleep)
    args = ["fetch", "--url", f"https://localhost:{srv['port']}/keylist.json", "--interval", "0.5"]
    args += ["--ca", str(srv["ca"]), "--cert", str(srv["cert"]), "--key", str(srv["key"])]
    args += ["--pubkey", str(gateway["pubkey"]), "--state-dir", str(gateway["state"])]
    with pytest.raises(KeyboardInterrupt):
        main([*args, "--static", str(gateway["static"])])
    out, err = capsys.readouterr()
    assert sleeps == [0.5] * 4
    assert err.count("keeping verified key list serial none: key list signed by") == 1
    assert "key list fetch works again" in err
    assert [json.loads(line)["serial"] for line in out.splitlines()] == [registry.serial]
    etag = srv["state"]["requests"][-1]
    assert srv["state"]["requests"] == [None, None, None, etag] and etag
    assert sha256_hex(key) in by_hash(gateway["state"]) and key not in out + err


def test_failures_are_logged_first_then_at_most_once_a_minute(capsys):
    clock = [100.0]
    log = FailureLog(clock=lambda: clock[0])
    assert log.failure(5, "connection refused")
    clock[0] += 30
    assert not log.failure(5, "connection refused")
    clock[0] += 31
    assert log.failure(5, "timed out")
    log.success(5)
    assert log.failure(6, "bad key list signature")  # a new run of failures logs at once
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "localguard-keys: keeping verified key list serial 5: connection refused",
        "localguard-keys: keeping verified key list serial 5: timed out",
        "localguard-keys: key list fetch works again, serial 5",
        "localguard-keys: keeping verified key list serial 6: bad key list signature",
    ]


# --- usage report --------------------------------------------------------------------------------


def log_line(time: str, remote: str, key_id: str, **extra) -> str:
    return json.dumps({"time": time, "remote": remote, "key_id": key_id, "path": "/v1/models", **extra})


def test_usage_report_from_plain_and_gzipped_logs(tmp_path):
    current = tmp_path / "localguard-gateway.json"
    current.write_text(
        "\n".join(
            [
                log_line("2026-06-01T12:00:05+00:00", "10.0.0.5", "team-a.1"),
                log_line("2026-06-01T14:00:00+02:00", "10.0.0.6", "team-a.1"),  # 12:00:00 UTC
                log_line("2026-06-01T12:00:09+00:00", "10.0.0.7", ""),  # no key: a 401
                "not json at all",
                '{"time": "yesterday", "remote": "10.0.0.8", "key_id": "team-a.1"}',
                '["a", "list"]',
                "",
            ]
        )
    )
    rotated = tmp_path / "localguard-gateway.json.2.gz"
    with gzip.open(rotated, "wt") as out:
        out.write(log_line("2026-05-30T08:00:00+00:00", "10.0.0.9", "team-b.3") + "\n")
        out.write(log_line("2026-05-30T07:00:00+00:00", "10.0.0.1", "team-a.1") + "\n")
    report = read_usage([current, rotated])
    assert report == {
        "team-a.1": {"last_seen": "2026-06-01T12:00:05Z", "remote": "10.0.0.5", "requests": 3},
        "team-b.3": {"last_seen": "2026-05-30T08:00:00Z", "remote": "10.0.0.9", "requests": 1},
    }
    assert usage_report([]) == {}


def test_usage_cli(tmp_path, capsys):
    path = tmp_path / "access.json"
    path.write_text(log_line("2026-06-01T12:00:00+00:00", "10.0.0.5", "team-a.1") + "\n")
    assert main(["usage", "--log", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["team-a.1"]["requests"] == 1
    assert main(["usage", "--log", str(tmp_path / "missing")]) == 1


def test_stale_keys_never_used_or_unused_for_n_days():
    registry, _ = issued("used", now=NOW - 60 * DAY)
    registry, _ = issued("idle", now=NOW - 60 * DAY, registry=registry)
    registry, _ = issued("new", now=NOW - 2 * DAY, registry=registry)
    registry, _ = issued("old-use", now=NOW - 60 * DAY, registry=registry)
    usage = {
        "used.1": {"last_seen": format_ts(NOW - DAY), "remote": "10.0.0.5", "requests": 9},
        "old-use.1": {"last_seen": format_ts(NOW - 40 * DAY), "remote": "10.0.0.5", "requests": 1},
    }
    assert stale_keys(registry, usage, 30 * 86400, NOW) == ["idle.1", "old-use.1"]
    assert stale_keys(revoke(registry, NOW, name="idle").registry, usage, 30 * 86400, NOW) == ["old-use.1"]


# --- CLI on the registry host --------------------------------------------------------------------


@pytest.fixture
def registry_files(keydir) -> dict:
    registry, key = issued()
    registry, _ = issued("team-b", registry=registry)
    save_registry(keydir / "registry.json", registry)
    signing = write_signing_key(keydir, SIGNER)
    publish = keydir.parent / "publish" / "keylist.json"
    publish.parent.mkdir()
    args = [
        "--registry",
        str(keydir / "registry.json"),
        "--signing-key",
        str(signing),
        "--publish",
        str(publish),
    ]
    return {"args": args, "publish": publish, "registry": keydir / "registry.json", "key": key}


def test_cli_publish_list_and_revoke(registry_files, capsys):
    args, publish = registry_files["args"], registry_files["publish"]
    assert main(["publish", "--if-stale", *args]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is True
    assert stat.S_IMODE(publish.stat().st_mode) == 0o644
    assert verify_envelope(publish.read_bytes(), SIGNER.public_key())["serial"] == 4
    assert main(["publish", "--if-stale", *args]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is False

    assert main(["list", "--registry", str(registry_files["registry"])]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [k["id"] for k in listed["keys"]] == ["team-a.1", "team-b.1"]
    assert all("sha256" not in k for k in listed["keys"])

    assert main(["revoke", "--name", "team-a", *args]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"changed": True, "serial": 5, "revoked": ["team-a.1"]}
    assert "revoked team-a.1" in err
    payload = verify_envelope(publish.read_bytes(), SIGNER.public_key())
    assert payload["serial"] == 5 and sha256_hex(registry_files["key"]) not in payload["keys"]
    assert main(["revoke", "--id", "team-b.9", *args]) == 1
    assert registry_files["key"] not in out + err


@pytest.mark.parametrize(
    "argv", [["revoke"], ["revoke", "--name", "a", "--id", "a.1"], ["frobnicate"], ["fetch", "--once"]]
)
def test_cli_usage_errors_exit_1_not_2_which_means_rejected(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 1
    assert "usage: localguard-keys" in capsys.readouterr().err


def test_delivery_file_is_0600_key_and_newline(tmp_path):
    path = tmp_path / "team-a.key"
    key = generate_key()
    assert write_delivery(path, key, check=True) and not path.exists()
    assert write_delivery(path, key)
    assert path.read_text() == key + "\n" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not write_delivery(path, key)


def test_usage_reports_of_several_gateways_merge_to_the_latest_use_and_the_sum():
    gpu1 = {"a.1": {"last_seen": "2026-11-01T10:00:00Z", "remote": "10.0.0.1", "requests": 3}}
    gpu2 = {
        "a.1": {"last_seen": "2026-11-02T10:00:00Z", "remote": "10.0.0.2", "requests": 4},
        "b.1": {"last_seen": "2026-10-01T00:00:00Z", "remote": "10.0.0.9", "requests": 1},
    }
    merged = merge_usage([gpu1, gpu2])
    assert merged["a.1"] == {"last_seen": "2026-11-02T10:00:00Z", "remote": "10.0.0.2", "requests": 7}
    assert merged["b.1"]["requests"] == 1
    assert merge_usage([gpu2, gpu1])["a.1"]["remote"] == "10.0.0.2"
