"""The PKI core: expected SANs, CSR checks, name constraints, revocation database, CRL refresh."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from localguard_pki import (
    HOST_EKU,
    PkiError,
    Revoked,
    build_crl,
    client_name_problems,
    crl_state,
    csr_problems,
    expected_sans,
    load_db,
    main,
    merge,
    name_constraints,
    newer,
    prune,
    resign_reason,
    save_db,
)

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
URL = "http://10.20.2.10/crl.der"
PASSPHRASE = b"unit-test-ca-passphrase"


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(directory: Path | None = None, cn: str = "unit CA"):
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA384())
    )
    if directory:
        encryption = serialization.BestAvailableEncryption(PASSPHRASE)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
        (directory / "ca.key").write_bytes(pem)
        (directory / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / "ca.passphrase").write_bytes(PASSPHRASE)
        (directory / "issued").mkdir()
    return cert, key


def make_leaf(ca_cert, ca_key, cn: str, not_after: dt.datetime) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(not_after)
        .sign(ca_key, hashes.SHA256())
    )


def make_csr(
    cn: str, sans: list[x509.GeneralName], *, ca: bool = False, eku=None, cdp=URL, extra=None
) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(name(cn))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    builder = builder.add_extension(x509.ExtendedKeyUsage(eku or list(HOST_EKU)), critical=False)
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    if cdp:
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(cdp)], None, None, None)
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    if extra:
        builder = builder.add_extension(extra, critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


GPU_SANS = [x509.DNSName("gpu-a01.example.internal"), x509.DNSName("gpu-a01")]


def gpu_sans_with_ip() -> list[x509.GeneralName]:
    import ipaddress

    return [*GPU_SANS, x509.IPAddress(ipaddress.ip_address("10.20.0.11"))]


# --- expected SANs, from the inventory only ------------------------------------------------------


def test_expected_sans_come_from_inventory_name_short_name_and_address():
    sans = expected_sans("gpu-a01.example.internal", None, "10.20.0.11", ["DNS:API.example.internal"])
    assert sans == [
        "DNS:api.example.internal",
        "DNS:gpu-a01",
        "DNS:gpu-a01.example.internal",
        "IP:10.20.0.11",
    ]


def test_expected_sans_prefer_localguard_address_and_ignore_a_name_as_ansible_host():
    assert expected_sans("gpu1", "198.18.10.11", "gpu1.lab") == ["DNS:gpu1", "IP:198.18.10.11"]
    assert expected_sans("gpu1", None, "gpu1.lab") == ["DNS:gpu1"]


def test_expected_sans_reject_an_untyped_extra_name():
    with pytest.raises(PkiError, match="no type prefix"):
        expected_sans("gpu1", None, None, ["gpu1.example.internal"])


# --- CSR checks before signing --------------------------------------------------------------------

EXPECTED = expected_sans("gpu-a01.example.internal", None, "10.20.0.11")


def test_csr_with_exactly_the_inventory_names_passes():
    csr = make_csr("gpu-a01.example.internal", gpu_sans_with_ip())
    assert csr_problems(csr, "gpu-a01.example.internal", EXPECTED, [URL]) == []


def test_csr_asking_for_another_hosts_name_is_refused_naming_host_and_san():
    csr = make_csr(
        "gpu-a01.example.internal", [*gpu_sans_with_ip(), x509.DNSName("gpu-a02.example.internal")]
    )
    problems = csr_problems(csr, "gpu-a01.example.internal", EXPECTED, [URL])
    assert problems == [
        "gpu-a01.example.internal: SAN(s) not in the inventory for this host: DNS:gpu-a02.example.internal"
    ]


def test_csr_missing_a_name_wrong_cn_ca_flag_client_eku_or_other_cdp_is_refused():
    host = "gpu-a01.example.internal"
    assert any("missing" in p for p in csr_problems(make_csr(host, GPU_SANS), host, EXPECTED, [URL]))
    assert any(
        "is not CN=" in p
        for p in csr_problems(make_csr("gpu-a02", gpu_sans_with_ip()), host, EXPECTED, [URL])
    )
    assert any(
        "asks to be a CA" in p
        for p in csr_problems(make_csr(host, gpu_sans_with_ip(), ca=True), host, EXPECTED, [URL])
    )
    client_eku = make_csr(host, gpu_sans_with_ip(), eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    assert any("serverAuth and clientAuth" in p for p in csr_problems(client_eku, host, EXPECTED, [URL]))
    code_signing = make_csr(host, gpu_sans_with_ip(), eku=[*HOST_EKU, ExtendedKeyUsageOID.CODE_SIGNING])
    assert any("nothing else" in p for p in csr_problems(code_signing, host, EXPECTED, [URL]))
    other_cdp = make_csr(host, gpu_sans_with_ip(), cdp="http://evil.example/crl")
    assert any("distribution point" in p for p in csr_problems(other_cdp, host, EXPECTED, [URL]))
    constrained = make_csr(host, gpu_sans_with_ip(), extra=x509.NameConstraints([x509.DNSName("x")], None))
    assert any("not allowed" in p for p in csr_problems(constrained, host, EXPECTED, [URL]))  # fmt: skip


# --- name constraints --------------------------------------------------------------------------------


def test_name_constraints_permit_parent_domains_single_labels_and_networks():
    hosts = {
        "gpu-a01.example.internal": expected_sans("gpu-a01.example.internal", None, "10.20.0.11"),
        "gpu-a02.example.internal": expected_sans("gpu-a02.example.internal", None, "10.20.0.12"),
        "logs01.ops.example.internal": expected_sans("logs01.ops.example.internal", None, "10.20.1.10"),
        "ca1": expected_sans("ca1", "2001:db8::31"),
        "example.com": ["DNS:example.com"],
    }
    assert name_constraints(hosts) == [
        "DNS:ca1",
        "DNS:example.com",
        "DNS:example.internal",
        "DNS:gpu-a01",
        "DNS:gpu-a02",
        "DNS:logs01",
        "IP:10.20.0.0/23",
        "IP:2001:db8::/64",
    ]


def test_client_names_outside_the_constraints_are_named_single_labels_pass():
    permitted = ["DNS:example.internal", "DNS:gpu1", "IP:10.0.0.0/8"]
    problems = client_name_problems(["lab-client", "batch.example.internal", "batch.runner"], permitted)
    assert len(problems) == 1 and "'batch.runner'" in problems[0]


# --- revocation database -----------------------------------------------------------------------------


def entry(serial: int, days_left: int, revoked: dt.datetime = NOW) -> Revoked:
    return Revoked(serial, f"client-{serial}", revoked, NOW + dt.timedelta(days=days_left))


def test_merge_keeps_the_first_revocation_date_and_prune_waits_for_expiry():
    db = merge([entry(1, 10)], [entry(1, 10, NOW + dt.timedelta(days=3)), entry(2, -1)])
    assert [(e.serial, e.revoked_at) for e in db] == [(1, NOW), (2, NOW)]
    assert [e.serial for e in prune(db, NOW)] == [1]


def test_database_round_trip_is_root_only_and_an_unreadable_one_is_not_dropped(tmp_path):
    path = tmp_path / "revoked.json"
    save_db(path, [entry(0xABC, 10)])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_db(path) == [entry(0xABC, 10)]
    assert list(tmp_path.iterdir()) == [path]
    path.write_text("{not json")
    with pytest.raises(PkiError, match="refusing to drop"):
        load_db(path)


# --- CRL: re-sign decision, building, accepting a fetched one -----------------------------------------


def test_resign_reasons():
    ca_cert, ca_key = make_ca()
    db = [entry(5, 30)]
    crl = build_crl(ca_cert, ca_key, db, 3, NOW, 30)
    state = crl_state(crl, ca_cert)
    assert state.number == 3 and state.serials == {5} and state.signed_by_ca
    assert resign_reason(None, db, NOW, 7) == "no CRL yet"
    assert resign_reason(state, db, NOW, 7) is None
    assert resign_reason(state, db, NOW + dt.timedelta(days=23), 7) is None
    assert "fewer than 7 days" in resign_reason(state, db, NOW + dt.timedelta(days=23, hours=1), 7)
    assert resign_reason(state, [*db, entry(6, 30)], NOW, 7) == "the revocation database changed"
    other_cert, _ = make_ca(cn="unit CA")
    assert "not signed" in resign_reason(crl_state(crl, other_cert), db, NOW, 7)


def test_a_fetched_crl_must_be_newer():
    ca_cert, ca_key = make_ca()
    old = crl_state(build_crl(ca_cert, ca_key, [], 4, NOW, 30), ca_cert)
    new = crl_state(build_crl(ca_cert, ca_key, [], 5, NOW, 30), ca_cert)
    assert newer(new, old) and newer(new, None)
    assert not newer(old, new) and not newer(old, old)


# --- the CLI as the timers run it ------------------------------------------------------------------


def run_cli(capsys, *args: str) -> dict:
    assert main(list(args)) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def refresh_args(ca_dir: Path, publish: Path, *extra: str) -> list[str]:
    return ["refresh", "--ca-dir", str(ca_dir), "--publish-dir", str(publish),
            "--passphrase-file", str(ca_dir / "ca.passphrase"), *extra]  # fmt: skip


def crl_serials(path: Path) -> set[int]:
    return {r.serial_number for r in x509.load_pem_x509_crl(path.read_bytes())}


def test_refresh_keeps_a_revoked_serial_after_its_name_is_reissued(tmp_path, capsys):
    ca_dir, publish = tmp_path / "ca", tmp_path / "www"
    ca_dir.mkdir()
    publish.mkdir()
    ca_cert, ca_key = make_ca(ca_dir)
    issued = ca_dir / "issued" / "bob.crt"
    first = make_leaf(ca_cert, ca_key, "bob", dt.datetime.now(dt.UTC) + dt.timedelta(days=90))
    issued.write_bytes(first.public_bytes(serialization.Encoding.PEM))

    out = run_cli(capsys, *refresh_args(ca_dir, publish, f"--revoke=bob={issued}"))
    assert out["changed"] and out["number"] == 1
    assert crl_serials(ca_dir / "crl.pem") == {first.serial_number}
    assert {p.name for p in publish.iterdir()} == {"crl.pem", "crl.der", "ca.crt"}

    # The file a CRL used to be built from now holds a new certificate: the old serial stays.
    second = make_leaf(ca_cert, ca_key, "bob", dt.datetime.now(dt.UTC) + dt.timedelta(days=90))
    issued.write_bytes(second.public_bytes(serialization.Encoding.PEM))
    assert not run_cli(capsys, *refresh_args(ca_dir, publish))["changed"]
    assert first.serial_number in crl_serials(ca_dir / "crl.pem")


def test_refresh_resigns_only_inside_the_refresh_window(tmp_path, capsys):
    ca_dir, publish = tmp_path / "ca", tmp_path / "www"
    ca_dir.mkdir()
    publish.mkdir()
    make_ca(ca_dir)
    run_cli(capsys, *refresh_args(ca_dir, publish, "--valid-days", "1"))
    # Nothing revoked yet: the database exists anyway, root-only.
    assert (ca_dir / "revoked.json").stat().st_mode & 0o777 == 0o600
    assert run_cli(capsys, *refresh_args(ca_dir, publish, "--check"))["changed"]
    out = run_cli(capsys, *refresh_args(ca_dir, publish))
    assert out["changed"] and out["number"] == 2
    assert not run_cli(capsys, *refresh_args(ca_dir, publish))["changed"]


def test_refresh_with_a_wrong_passphrase_says_so_without_it(tmp_path, capsys):
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    make_ca(ca_dir)
    (tmp_path / "wrong").write_text("wrong-passphrase-value")
    assert main(["refresh", "--ca-dir", str(ca_dir), "--passphrase-file", str(tmp_path / "wrong")]) == 1
    err = capsys.readouterr().err
    assert "does not open with the given passphrase" in err and "wrong-passphrase-value" not in err


def test_fetch_installs_newer_refuses_forged_and_older(tmp_path, capsys):
    ca_dir, publish = tmp_path / "ca", tmp_path / "www"
    ca_dir.mkdir()
    publish.mkdir()
    make_ca(ca_dir)
    run_cli(capsys, *refresh_args(ca_dir, publish))
    dest = tmp_path / "crl.pem"
    fetch = [
        "fetch",
        "--url",
        (publish / "crl.der").as_uri(),
        "--ca",
        str(ca_dir / "ca.crt"),
        "--dest",
        str(dest),
    ]
    assert run_cli(capsys, *fetch) == {"changed": True, "number": 1}
    assert not run_cli(capsys, *fetch)["changed"]
    installed = dest.read_bytes()

    forged_cert, forged_key = make_ca(cn="unit CA")
    forged = build_crl(forged_cert, forged_key, [], 99, dt.datetime.now(dt.UTC), 30)
    (publish / "crl.der").write_bytes(forged.public_bytes(serialization.Encoding.DER))
    assert main(fetch) == 1
    assert "not signed by the installed CA" in capsys.readouterr().err
    assert dest.read_bytes() == installed

    # A validly signed but older CRL (a replay) does not replace a newer one.
    run_cli(capsys, *refresh_args(ca_dir, publish, "--force"))
    run_cli(capsys, *fetch)
    older = x509.load_pem_x509_crl(installed).public_bytes(serialization.Encoding.DER)
    (publish / "crl.der").write_bytes(older)
    assert not run_cli(capsys, *fetch)["changed"]
    assert crl_state(x509.load_pem_x509_crl(dest.read_bytes()), x509.load_pem_x509_certificate(
        (ca_dir / "ca.crt").read_bytes())).number == 2  # fmt: skip
