"""The PKI core: expected SANs, CSR checks, name constraints, revocation database, CRL refresh."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from ansible_collections.localguard.hardening.plugins.module_utils.localguard_pki import (
    HOST_EKU,
    PkiError,
    Revoked,
    SignRequest,
    batch,
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
    renewal_reason,
    resign_reason,
    save_db,
    sign_batch,
    sign_csr,
    signed_by,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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
    cn: str, sans: list[x509.GeneralName], *, ca: bool = False, eku=None, cdp=URL, extra=None, key=None
) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
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


# --- signing: one batch per run on the CA host (localguard_pki_batch) ------------------------------

GPU = "gpu-a01.example.internal"


def load_csr(pem: str) -> x509.CertificateSigningRequest:
    return x509.load_pem_x509_csr(pem.encode())


def pem_of(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def server_request(csr: str, certificate: str = "", force: bool = False) -> SignRequest:
    return SignRequest(GPU, csr, certificate, force)


def client_csr(cn: str, key=None) -> str:
    return make_csr(cn, [], eku=[ExtendedKeyUsageOID.CLIENT_AUTH], key=key)


def no_key():
    raise AssertionError("the CA key was opened")


def test_a_signed_certificate_carries_the_csr_and_is_kept_until_its_renewal_window():
    ca_cert, ca_key = make_ca()
    csr = load_csr(make_csr(GPU, gpu_sans_with_ip()))
    cert = sign_csr(csr, ca_cert, ca_key, NOW, 90)
    assert signed_by(cert, ca_cert) and cert.subject == csr.subject
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(sans.get_values_for_type(x509.DNSName)) == ["gpu-a01", GPU]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == set(HOST_EKU)
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki == x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    assert renewal_reason(cert, csr, ca_cert, NOW, 30) is None
    assert renewal_reason(cert, csr, ca_cert, NOW + dt.timedelta(days=60), 30) is None
    assert "renewal window" in renewal_reason(cert, csr, ca_cert, NOW + dt.timedelta(days=60, seconds=1), 30)


def test_a_certificate_is_renewed_for_another_key_names_usage_ca_or_a_revoked_serial():
    ca_cert, ca_key = make_ca()
    key = ec.generate_private_key(ec.SECP256R1())
    csr = load_csr(make_csr(GPU, gpu_sans_with_ip(), key=key))
    cert = sign_csr(csr, ca_cert, ca_key, NOW, 90)
    assert renewal_reason(None, csr, ca_cert, NOW, 30) == "no certificate yet"
    assert (
        renewal_reason(cert, load_csr(make_csr(GPU, gpu_sans_with_ip())), ca_cert, NOW, 30)
        == "the key changed"
    )
    fewer_names = load_csr(make_csr(GPU, GPU_SANS, key=key))
    assert "names or key usages" in renewal_reason(cert, fewer_names, ca_cert, NOW, 30)
    other_usage = load_csr(make_csr(GPU, gpu_sans_with_ip(), key=key, eku=[ExtendedKeyUsageOID.SERVER_AUTH]))
    assert "names or key usages" in renewal_reason(cert, other_usage, ca_cert, NOW, 30)
    assert (
        renewal_reason(cert, load_csr(make_csr("gpu-a02", gpu_sans_with_ip(), key=key)), ca_cert, NOW, 30)
        == "the subject changed"
    )
    # Another CA of the same name: only the signature tells them apart.
    other_ca, other_key = make_ca(cn="unit CA")
    assert "not issued by the current CA" in renewal_reason(
        sign_csr(csr, other_ca, other_key, NOW, 90), csr, ca_cert, NOW, 30
    )
    assert renewal_reason(cert, csr, ca_cert, NOW, 30, {cert.serial_number}) == "the certificate is revoked"


def test_a_batch_signs_only_what_is_due_and_opens_the_ca_key_only_then():
    ca_cert, ca_key = make_ca()
    due, kept = make_csr(GPU, gpu_sans_with_ip()), make_csr(GPU, gpu_sans_with_ip())
    current = pem_of(sign_csr(load_csr(kept), ca_cert, ca_key, NOW, 90))
    opened = []

    def load_key():
        opened.append(True)
        return ca_key

    first, second = sign_batch(
        [server_request(due), server_request(kept, current)], ca_cert, load_key, NOW, 90, 30
    )
    assert first.reason == "no certificate yet" and signed_by(
        load_certificate_pem(first.certificate), ca_cert
    )
    assert (second.reason, second.certificate) == (None, current)
    assert opened == [True]
    # A rerun with everything current never opens the key.
    (again,) = sign_batch([server_request(kept, current)], ca_cert, no_key, NOW, 90, 30)
    assert again.reason is None
    (forced,) = sign_batch([server_request(kept, current, force=True)], ca_cert, lambda: ca_key, NOW, 90, 30)
    assert forced.reason == "forced" and forced.certificate != current


def test_a_csr_not_signed_by_its_own_key_stops_the_batch_before_the_ca_key_is_opened():
    ca_cert, _ = make_ca()
    good = make_csr(GPU, gpu_sans_with_ip())
    der = bytearray(load_csr(good).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the last byte of the signature: still a CSR, no longer signed by its key
    forged = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()
    with pytest.raises(PkiError, match="refusing to sign: gpu-a01.example.internal: the CSR's signature"):
        sign_batch([server_request(good), server_request(forged)], ca_cert, no_key, NOW, 90, 30)
    with pytest.raises(PkiError, match="cannot be parsed"):
        sign_batch([server_request("not a CSR")], ca_cert, no_key, NOW, 90, 30)


def test_check_mode_signs_nothing_and_says_what_is_due():
    ca_cert, _ = make_ca()
    (result,) = sign_batch([server_request(make_csr(GPU, gpu_sans_with_ip()))], ca_cert, no_key, NOW, 90, 30,
                           check=True)  # fmt: skip
    assert (result.reason, result.certificate) == ("no certificate yet", "")


def load_certificate_pem(text: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(text.encode())


def ca_files(ca_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(ca_dir)): p.read_bytes() for p in sorted(ca_dir.rglob("*")) if p.is_file()}


def test_client_batch_keeps_every_certificate_of_a_name_and_refuses_revoked_names(tmp_path):
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    make_ca(ca_dir)
    alice_key = ec.generate_private_key(ec.SECP256R1())
    save_db(ca_dir / "revoked.json", [], ["mallory"])
    clients = [SignRequest(name, client_csr(name, alice_key if name == "alice" else None))
               for name in ("alice", "mallory", "eve")]  # fmt: skip

    first = batch(ca_dir, PASSPHRASE, [], clients, 90, 30, ["eve"])
    assert first["changed"] and first["refused"] == ["eve", "mallory"]
    assert sorted(first["clients"]) == ["alice"] and first["clients"]["alice"]["signed"]
    issued = load_certificate_pem((ca_dir / "issued" / "alice.crt").read_text())
    assert pem_of(issued) == first["clients"]["alice"]["certificate"]
    history = ca_dir / "issued" / "history" / "alice"
    assert [p.name for p in history.iterdir()] == [f"{issued.serial_number:X}.crt"]
    assert stat.S_IMODE(history.stat().st_mode) == 0o700
    assert not (ca_dir / "issued" / "mallory.crt").exists() and not (ca_dir / "issued" / "eve.crt").exists()
    assert first["ca_certificate"] == (ca_dir / "ca.crt").read_text() and first["crl"] == ""

    # Same key, still valid: nothing changes, the key is not even opened (a wrong passphrase passes).
    before = ca_files(ca_dir)
    again = batch(ca_dir, b"not the passphrase", [], clients[:1], 90, 30)
    assert not again["changed"] and not again["clients"]["alice"]["signed"]
    assert ca_files(ca_dir) == before

    # Renewed (forced): the replaced certificate stays in the history, to be revoked with the name.
    forced = batch(
        ca_dir, PASSPHRASE, [], [SignRequest("alice", client_csr("alice", alice_key), force=True)], 90, 30
    )
    renewed = load_certificate_pem((ca_dir / "issued" / "alice.crt").read_text())
    assert forced["changed"] and renewed.serial_number != issued.serial_number
    assert sorted(p.name for p in history.iterdir()) == sorted(
        f"{c.serial_number:X}.crt" for c in (issued, renewed)
    )


def test_client_batch_in_check_mode_writes_nothing_and_refuses_a_path_as_a_name(tmp_path):
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    make_ca(ca_dir)
    before = ca_files(ca_dir)
    checked = batch(ca_dir, b"", [], [SignRequest("bob", client_csr("bob"))], 90, 30, check=True)
    assert checked["changed"] and checked["clients"]["bob"] == {
        "certificate": "", "signed": True, "reason": "no certificate yet", "serial": "", "not_after": ""
    }  # fmt: skip
    assert ca_files(ca_dir) == before
    with pytest.raises(PkiError, match="not 1-64 letters"):
        batch(ca_dir, PASSPHRASE, [], [SignRequest("../escape", client_csr("x"))], 90, 30)
    assert ca_files(ca_dir) == before


def test_a_history_copy_missing_for_the_current_certificate_is_added_once(tmp_path):
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    ca_cert, ca_key = make_ca(ca_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = client_csr("carol", key)
    # Issued before issued/history/ existed.
    current = sign_csr(load_csr(csr), ca_cert, ca_key, dt.datetime.now(dt.UTC), 90)
    (ca_dir / "issued" / "carol.crt").write_text(pem_of(current))
    out = batch(ca_dir, PASSPHRASE, [], [SignRequest("carol", csr)], 90, 30)
    assert out["changed"] and not out["clients"]["carol"]["signed"]
    kept = ca_dir / "issued" / "history" / "carol" / f"{current.serial_number:X}.crt"
    assert load_certificate_pem(kept.read_text()) == current
    assert not batch(ca_dir, PASSPHRASE, [], [SignRequest("carol", csr)], 90, 30)["changed"]
