"""PKI-03/04/08/10: an mTLS client certificate's life through the playbooks an operator runs
(playbooks/client_cert_{issue,rotate,revoke}.yml), checked with real handshakes from the client
host through every gateway's mTLS tier (gateway_mtls_port), a valid API key on every request.

Tests run in file order, each on the state the one before left: issue, rotate, revoke, then a
harden.yml run that no longer mentions the name. A revoked name is never signed again, so a rerun
on the same lab takes the next free name (lab-client-lifecycle, lab-client-lifecycle-2, ...).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest
from cryptography import x509
from netns import container_pid, run_in_netns
from playbook_runner import ROOT, run_playbook
from probes import LAB_ENGINES, podman

pytestmark = pytest.mark.lab
LAB = ROOT / ".lab"
CA_BUNDLE = LAB / "pki" / "ca.crt"
CLIENTS = LAB / "pki" / "clients"
INVENTORY = ROOT / "inventories" / "lab" / "hosts.yml"
PLAYBOOKS = ROOT / "playbooks"
GATEWAYS = sorted(LAB_ENGINES)
MTLS_PORT = 8443  # gateway_mtls_port, the role's default, which the lab keeps
BASE_NAME = "lab-client-lifecycle"
# Beside the lifecycle client: issued by harden.yml (pki_clients), never revoked here.
KEPT = "lab-client"

# One GET /v1/models per (gateway, certificate), each on a new connection (a new TLS handshake),
# or, with "until_refused", the same again every `interval` seconds until every gateway refuses
# the certificates; records when each gateway first refused them all (epoch seconds).
MTLS_PROBE = r"""
import json, ssl, sys, time, httpx
args = json.load(sys.stdin)

def attempt(url, cert):
    context = ssl.create_default_context(cafile=args["ca"])
    context.load_cert_chain(*cert)
    try:
        with httpx.Client(verify=context, timeout=5) as client:
            response = client.get(url + "/v1/models", headers={"Authorization": "Bearer " + args["key"]})
        return {"status": response.status_code, "body": response.text[:200]}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}

def refused(result):  # nginx's answer to a client certificate that fails verification
    return result.get("status") == 400 and "certificate" in result["body"].lower()

if not args.get("until_refused"):
    urls = args["urls"].items()
    print(json.dumps({gpu: [attempt(url, cert) for cert in args["certs"]] for gpu, url in urls}))
    sys.exit(0)
first_refused, last = {}, {}
deadline = time.time() + args["timeout"]
while len(first_refused) < len(args["urls"]) and time.time() < deadline:
    for gpu, url in args["urls"].items():
        if gpu not in first_refused:
            last[gpu] = [attempt(url, cert) for cert in args["certs"]]
            if all(map(refused, last[gpu])):
                first_refused[gpu] = time.time()
    time.sleep(args["interval"])
print(json.dumps({"refused_at": first_refused, "last": last}))
"""


def lab_key() -> str:
    records = json.loads((LAB / "api-keys.json").read_text())
    return next(record["key"] for record in records if record["id"] == "lab-valid")


def cert_files(name: str) -> list[str]:
    return [str(CLIENTS / f"{name}.crt"), str(CLIENTS / f"{name}.key")]


def serial_of(path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def handshakes(urls: dict[str, str], *certs: list[str]) -> dict[str, list[dict]]:
    payload = {"urls": urls, "certs": list(certs), "ca": str(CA_BUNDLE), "key": lab_key()}
    return run_in_netns("lg-client", MTLS_PROBE, payload)


def accepted(result: dict) -> bool:
    return result.get("status") == 200


def refused(result: dict) -> bool:
    return "error" in result or (
        result.get("status") == 400 and "certificate" in result.get("body", "").lower()
    )


def revoked_names() -> set[str]:
    db = podman("lg-ca1", "cat", "/etc/localguard/ca/revoked.json")
    if db.returncode != 0:
        return set()
    data = json.loads(db.stdout)
    return {*data.get("names", []), *(entry["name"] for entry in data["entries"])}


@pytest.fixture(scope="module")
def urls(lab_hosts) -> dict[str, str]:
    return {gpu: f"https://{lab_hosts[gpu]['ansible_host']}:{MTLS_PORT}" for gpu in GATEWAYS}


@pytest.fixture(scope="module")
def name() -> str:
    taken = revoked_names()
    return next(n for n in [BASE_NAME, *(f"{BASE_NAME}-{i}" for i in range(2, 100))] if n not in taken)


@pytest.fixture(scope="module")
def issued(name) -> str:
    run = run_playbook(PLAYBOOKS / "client_cert_issue.yml", INVENTORY, "-e", f"client={name}")
    assert run.rc == 0, run.failure_messages() or run.stderr[-2000:]
    return name


@pytest.fixture(scope="module")
def earlier_cert(issued, tmp_path_factory) -> list[str]:
    """A copy of the certificate as first issued (its key stays the same through a rotation)."""
    copy = tmp_path_factory.mktemp("lifecycle") / f"{issued}-first.crt"
    shutil.copy(CLIENTS / f"{issued}.crt", copy)
    return [str(copy), str(CLIENTS / f"{issued}.key")]


def rotate(name: str, *args: str):
    return run_playbook(
        PLAYBOOKS / "client_cert_rotate.yml", INVENTORY, "-e", json.dumps({"pki_clients": [name]}), *args
    )


@pytest.fixture(scope="module")
def rotated(issued, earlier_cert) -> dict:
    """client_cert_rotate.yml for the lifecycle client: once while its certificate is far from the
    renewal window, then forced."""
    crt = CLIENTS / f"{issued}.crt"
    serials = {"issued": serial_of(crt)}
    for step, extra in (("not_due", ()), ("forced", ("-e", "force=true"))):
        run = rotate(issued, *extra)
        assert run.rc == 0, run.failure_messages() or run.stderr[-2000:]
        serials[step] = serial_of(crt)
    return {"name": issued, "serials": serials}


def test_pki_03_issued_client_is_accepted_by_every_gateways_mtls_tier(urls, issued):
    assert (CLIENTS / f"{issued}.key").stat().st_mode & 0o777 == 0o600
    results = handshakes(urls, cert_files(issued))
    assert all(accepted(r) for gpu in GATEWAYS for r in results[gpu]), results
    # Issuing again leaves a valid certificate alone.
    before = serial_of(CLIENTS / f"{issued}.crt")
    again = run_playbook(PLAYBOOKS / "client_cert_issue.yml", INVENTORY, "-e", f"client={issued}")
    assert again.rc == 0, again.failure_messages()
    assert serial_of(CLIENTS / f"{issued}.crt") == before


def test_pki_03_rotation_reissues_only_when_due_or_forced(urls, rotated, earlier_cert):
    name, serials = rotated["name"], rotated["serials"]
    assert serials["not_due"] == serials["issued"]
    assert serials["forced"] != serials["issued"]
    # The CA keeps the replaced certificate, so revoking the name later covers it too.
    kept = podman("lg-ca1", "ls", f"/etc/localguard/ca/issued/history/{name}")
    assert f"{serials['issued']:X}.crt" in kept.stdout.split(), kept.stdout
    # Both stay accepted meanwhile: clients switch to the new files at their own pace.
    results = handshakes({"gpu1": urls["gpu1"]}, cert_files(name), earlier_cert)
    assert all(accepted(r) for r in results["gpu1"]), results


def test_pki_08_revoked_client_refused_by_every_gateway_while_others_are_accepted(
    urls, rotated, earlier_cert, capsys, record_property
):
    name = rotated["name"]
    before = handshakes(urls, cert_files(name), earlier_cert, cert_files(KEPT))
    assert all(accepted(r) for gpu in GATEWAYS for r in before[gpu]), before
    # Two requests a second per gateway: well inside the key's rate (5/s), so the poll itself is never
    # limited, fine enough to time a revocation that takes seconds.
    payload = {"urls": urls, "certs": [cert_files(name)], "ca": str(CA_BUNDLE),
               "key": lab_key(), "until_refused": True, "interval": 0.5, "timeout": 180}  # fmt: skip
    poller = subprocess.Popen(
        ["nsenter", "-t", str(container_pid("lg-client")), "-n", sys.executable, "-c", MTLS_PROBE],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    start = time.time()
    poller.stdin.write(json.dumps(payload))
    poller.stdin.close()
    revoke = run_playbook(PLAYBOOKS / "client_cert_revoke.yml", INVENTORY, "-e", f"client={name}")
    playbook_seconds = time.time() - start
    poller.wait(timeout=240)
    out, err = poller.stdout.read(), poller.stderr.read()
    assert revoke.rc == 0, revoke.failure_messages() or revoke.stderr[-2000:]
    assert poller.returncode == 0, err[-2000:]
    timing = json.loads(out)
    assert sorted(timing["refused_at"]) == GATEWAYS, timing["last"]
    seconds = {gpu: round(timing["refused_at"][gpu] - start, 2) for gpu in GATEWAYS}
    with capsys.disabled():
        print(
            f"\n{name} revoked: playbook {playbook_seconds:.1f} s; refused by the mTLS tier, seconds from "
            f"playbook start: {', '.join(f'{gpu} {s:.2f}' for gpu, s in seconds.items())}"
        )
    record_property("revoke_playbook_seconds", round(playbook_seconds, 2))
    for gpu, value in seconds.items():
        record_property(f"refused_after_seconds_{gpu}", value)
    # The current and the earlier certificate refused everywhere; the kept client beside them accepted.
    time.sleep(1)
    after = handshakes(urls, cert_files(name), earlier_cert, cert_files(KEPT))
    for gpu in GATEWAYS:
        assert refused(after[gpu][0]) and refused(after[gpu][1]), after[gpu]
        assert accepted(after[gpu][2]), after[gpu]


def test_pki_08_revocation_holds_through_harden_yml_and_the_name_is_never_signed_again(urls, rotated):
    name = rotated["name"]
    # pki_revoked_clients does not list the name: the revocation database keeps it.
    harden = run_playbook(ROOT / "harden.yml", INVENTORY, "--tags", "pki")
    assert harden.rc == 0, harden.failure_messages() or harden.stderr[-2000:]
    results = handshakes(urls, cert_files(name), cert_files(KEPT))
    for gpu in GATEWAYS:
        assert refused(results[gpu][0]) and accepted(results[gpu][1]), results[gpu]
    before = serial_of(CLIENTS / f"{name}.crt")
    reissue = run_playbook(PLAYBOOKS / "client_cert_issue.yml", INVENTORY, "-e", f"client={name}")
    assert reissue.rc != 0
    assert any("never signed again" in message for message in reissue.failure_messages()), (
        reissue.failure_messages()
    )
    forced = rotate(name, "-e", "force=true")
    assert forced.rc == 0, forced.failure_messages()
    assert serial_of(CLIENTS / f"{name}.crt") == before
