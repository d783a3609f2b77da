"""PKI-08: a revoked client name covers every certificate the CA kept for it and is never signed
again, even after its revoked serials expired and left the CRL."""

from __future__ import annotations

import datetime as dt
import json

from ansible_collections.localguard.hardening.plugins.module_utils.localguard_pki import (
    Revoked,
    issued_certificates,
    load_db_with_names,
    main,
    save_db,
)
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from test_pki import make_ca, make_leaf


def run_cli(capsys, *args: str) -> dict:
    assert main(list(args)) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def refresh(capsys, ca_dir, *extra: str) -> dict:
    return run_cli(
        capsys, "refresh", "--ca-dir", str(ca_dir), "--passphrase-file", str(ca_dir / "ca.passphrase"), *extra
    )


def crl_serials(ca_dir) -> set[int]:
    return {r.serial_number for r in x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes())}


def write_cert(path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_revoke_name_covers_the_current_and_the_earlier_certificates(tmp_path, capsys):
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    ca_cert, ca_key = make_ca(ca_dir)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=90)
    earlier, current, other = (make_leaf(ca_cert, ca_key, cn, later) for cn in ("bob", "bob", "alice"))
    # A renewal kept the earlier certificate: it stays valid until it expires.
    write_cert(ca_dir / "issued" / "history" / "bob" / f"{earlier.serial_number:X}.crt", earlier)
    write_cert(ca_dir / "issued" / "bob.crt", current)
    write_cert(ca_dir / "issued" / "alice.crt", other)
    assert [p.name for p in issued_certificates(ca_dir, "bob")] == [
        "bob.crt",
        f"{earlier.serial_number:X}.crt",
    ]

    out = refresh(capsys, ca_dir, "--revoke-name", "bob")
    assert out["changed"] and out["revoked_names"] == ["bob"]
    assert crl_serials(ca_dir) == {earlier.serial_number, current.serial_number}
    # The same revocation again changes nothing.
    assert not refresh(capsys, ca_dir, "--revoke-name", "bob")["changed"]


def test_a_revoked_name_outlives_its_expired_serials_and_one_never_issued_is_kept(tmp_path, capsys):
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    make_ca(ca_dir)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    expired = Revoked(0xABC, "alice", now - dt.timedelta(days=100), now - dt.timedelta(days=1))
    save_db(ca_dir / "revoked.json", [expired])

    out = refresh(capsys, ca_dir, "--revoke-name", "carol")
    entries, names = load_db_with_names(ca_dir / "revoked.json")
    # alice's certificate expired: no peer accepts it, so its serial leaves; her name stays.
    assert entries == [] and names == ["alice", "carol"]
    assert out["revoked_names"] == ["alice", "carol"]
    assert crl_serials(ca_dir) == set()


def test_a_database_from_before_names_were_kept_gains_them_once(tmp_path, capsys):
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    make_ca(ca_dir)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    entry = Revoked(0xABC, "dave", now, now + dt.timedelta(days=30))
    (ca_dir / "revoked.json").write_text(json.dumps({"version": 1, "entries": [entry.to_json()]}))

    assert refresh(capsys, ca_dir)["changed"]
    assert json.loads((ca_dir / "revoked.json").read_text())["names"] == ["dave"]
    assert not refresh(capsys, ca_dir)["changed"]
