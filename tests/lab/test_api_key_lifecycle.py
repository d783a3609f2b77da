"""KEY-*: the API key lifecycle on the lab, driven by the playbooks an operator (or the rotation
timer) runs, checked with real requests from the client host through every gateway.

The registry lives on ca1; delivered keys are read from its delivery directory (root 0600) the
way an operator's pickup would. Tests run in file order: issue, scopes, rotation, faults, revocation.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import threading
import time

import pytest
from netns import run_in_netns
from playbook_runner import ROOT, run_playbook
from probes import LAB_ENGINES, podman

pytestmark = pytest.mark.lab
LAB = ROOT / ".lab"
CA_BUNDLE = LAB / "pki" / "ca.crt"
INVENTORY = ROOT / "inventories" / "lab" / "hosts.yml"
PLAYBOOKS = ROOT / "playbooks"
DELIVERY = "/etc/localguard/keys/delivery"
GATEWAYS = sorted(LAB_ENGINES)
POLL_SECONDS = 2  # gateway_keylist_poll_seconds (the role's default, which the lab keeps)
# A paused host's kernel still completes TCP handshakes while its sshd is frozen: no connection
# may be reused from before the pause, and the banner wait must time out.
NO_SSH_REUSE = {"ANSIBLE_SSH_ARGS": "-o ControlMaster=no", "ANSIBLE_TIMEOUT": "5"}

# One request per gateway, or a loop until every gateway gives the wanted status; in the client's
# network namespace, through its firewall, verified against the lab CA.
STATUS_PROBE = r"""
import json, sys, time, httpx
args = json.load(sys.stdin)
start, seen = time.monotonic(), {}
with httpx.Client(verify=args["ca"], timeout=10) as client:
    while True:
        seen = {gpu: client.request(args.get("method", "GET"), url + args["path"], json=args.get("json"),
                                    headers={"Authorization": f"Bearer {args['key']}"}).status_code
                for gpu, url in args["urls"].items()}
        want = args.get("until")
        if want is None or set(seen.values()) == {want} or time.monotonic() - start > args.get("timeout", 30):
            break
        time.sleep(0.1)
print(json.dumps({"statuses": seen, "seconds": time.monotonic() - start}))
"""


@pytest.fixture(scope="module")
def urls(lab_hosts) -> dict[str, str]:
    return {gpu: f"https://{lab_hosts[gpu]['ansible_host']}" for gpu in GATEWAYS}


def statuses(urls: dict[str, str], key: str, path: str = "/v1/models", **extra) -> dict[str, int]:
    return probe(urls, key, path, **extra)["statuses"]


def probe(urls: dict[str, str], key: str, path: str = "/v1/models", **extra) -> dict:
    payload = {"urls": urls, "key": key, "path": path, "ca": str(CA_BUNDLE), **extra}
    return run_in_netns("lg-client", STATUS_PROBE, payload)


def playbook(name: str, *extra_vars: object, check: bool = False):
    args = [arg for value in extra_vars for arg in ("-e", json.dumps(value))]
    return run_playbook(PLAYBOOKS / name, INVENTORY, *args, *(["--check"] if check else []))


def delivered(name: str) -> str:
    result = podman("lg-ca1", "cat", f"{DELIVERY}/{name}.key")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def registry(name: str) -> list[dict]:
    result = podman("lg-ca1", "localguard-keys", "list")
    assert result.returncode == 0, result.stderr
    return [record for record in json.loads(result.stdout)["keys"] if record["name"] == name]


def issue(name: str, **settings) -> str:
    run = playbook("api_key_issue.yml", {"name": name, **settings})
    assert run.rc == 0, run.failure_messages()
    return delivered(name)


def test_key_07_issued_key_works_on_every_gateway_and_is_delivered_only_to_its_file(urls):
    key = issue("lab-life", max_age="1h", overlap="20s")
    assert key.startswith("lgk_") and len(key) == 55
    assert statuses(urls, key) == dict.fromkeys(GATEWAYS, 200)
    mode = podman("lg-ca1", "stat", "-c", "%U %a", f"{DELIVERY}/lab-life.key").stdout.split()
    assert mode == ["root", "600"]
    [record] = registry("lab-life")
    assert record["status"] == "active" and record["delivered"] and "sha256" not in record
    # Issuing again leaves a usable key alone.
    assert issue("lab-life") == key


def test_key_07_a_scoped_key_gets_403_outside_its_scope(urls):
    embeddings_only = issue("lab-embed", scopes=["embeddings"])
    gpu1 = {"gpu1": urls["gpu1"]}
    allowed = statuses(
        gpu1, embeddings_only, "/v1/embeddings", method="POST", json={"model": "lab", "input": "hi"}
    )
    chat = {"model": "lab", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    refused = statuses(gpu1, embeddings_only, "/v1/chat/completions", method="POST", json=chat)
    assert (allowed, refused) == ({"gpu1": 200}, {"gpu1": 403})
    vllm_only = issue("lab-vllm", engines=["vllm"])
    assert statuses(urls, vllm_only) == {"gpu1": 403, "gpu2": 403, "gpu3": 200}


def test_key_08_check_mode_lists_what_would_rotate_and_changes_nothing(urls):
    before = registry("lab-life")
    key = delivered("lab-life")
    run = playbook("api_key_rotate.yml", {"force_names": ["lab-life"]}, check=True)
    assert run.rc == 0, run.failure_messages()
    messages = json.dumps(run.plays)
    assert "Would rotate" in messages and "lab-life" in messages
    assert registry("lab-life") == before and delivered("lab-life") == key


def test_key_08_rotation_overlap_then_only_the_new_key(urls):
    old = delivered("lab-life")
    run = playbook("api_key_rotate.yml", {"force_names": ["lab-life"]})
    assert run.rc == 0, run.failure_messages()
    delivered_at = time.monotonic()
    new = delivered("lab-life")
    assert new != old
    # During the overlap (20 s) both work everywhere.
    assert statuses(urls, old) == dict.fromkeys(GATEWAYS, 200)
    assert statuses(urls, new) == dict.fromkeys(GATEWAYS, 200)
    records = {record["id"]: record["status"] for record in registry("lab-life")}
    assert sorted(records.values()) == ["active", "retiring"], records
    # After it only the new one, on every gateway, without another run (their list says when).
    time.sleep(max(0.0, 21 - (time.monotonic() - delivered_at)))
    assert statuses(urls, old) == dict.fromkeys(GATEWAYS, 401)
    assert statuses(urls, new) == dict.fromkeys(GATEWAYS, 200)
    # The next scheduled run removes the retired record.
    again = playbook("api_key_rotate.yml")
    assert again.rc == 0, again.failure_messages()
    assert [record["status"] for record in registry("lab-life")] == ["active"]


def test_key_08_a_paused_gateway_stops_the_rotation_and_a_rerun_completes_it(urls):
    old = issue("lab-fault", max_age="1s", overlap="1h")
    time.sleep(2)  # due now
    subprocess.run(["podman", "pause", "lg-gpu3"], check=True)
    try:
        failed = run_playbook(PLAYBOOKS / "api_key_rotate.yml", INVENTORY, env=NO_SSH_REUSE)
        assert failed.rc != 0
        assert any("gpu3" in message for message in failed.failure_messages()), failed.failure_messages()
        assert statuses({g: urls[g] for g in ("gpu1", "gpu2")}, old) == {"gpu1": 200, "gpu2": 200}
        assert [r["status"] for r in registry("lab-fault")] == ["active"]
    finally:
        subprocess.run(["podman", "unpause", "lg-gpu3"], check=True)
    assert delivered("lab-fault") == old
    assert statuses(urls, old) == dict.fromkeys(GATEWAYS, 200)
    rerun = playbook("api_key_rotate.yml")
    assert rerun.rc == 0, rerun.failure_messages()
    new = delivered("lab-fault")
    assert new != old
    assert statuses(urls, new) == dict.fromkeys(GATEWAYS, 200)
    assert statuses(urls, old) == dict.fromkeys(GATEWAYS, 200), "the old key keeps its overlap"


def test_key_08_a_gateway_that_cannot_apply_the_new_list_stops_the_delivery(urls):
    """Reachable at the start, failing at the push (its pinned key is gone): the new key is made and
    pushed, but nobody is told it and the old one stays; a rerun once the gateway is mended completes."""
    old = issue("lab-midfault", max_age="1s", overlap="1h")
    time.sleep(2)  # due now
    pinned = "/etc/localguard/gateway/keylist-signing.pub"
    assert podman("lg-gpu3", "mv", pinned, f"{pinned}.away").returncode == 0
    try:
        failed = playbook("api_key_rotate.yml")
        assert failed.rc != 0
        assert any("Nothing was delivered" in m and "gpu3" in m for m in failed.failure_messages()), (
            failed.failure_messages()
        )
        assert delivered("lab-midfault") == old
        assert statuses({g: urls[g] for g in ("gpu1", "gpu2")}, old) == {"gpu1": 200, "gpu2": 200}
    finally:
        podman("lg-gpu3", "mv", f"{pinned}.away", pinned)
    rerun = playbook("api_key_rotate.yml")
    assert rerun.rc == 0, rerun.failure_messages()
    new = delivered("lab-midfault")
    assert new != old
    assert statuses(urls, new) == dict.fromkeys(GATEWAYS, 200)


def test_key_10_revoke_playbook_refused_by_every_gateway_timed(urls):
    key = issue("lab-revoke")
    assert statuses(urls, key) == dict.fromkeys(GATEWAYS, 200)
    result: dict = {}
    watcher = threading.Thread(target=lambda: result.update(probe(urls, key, until=401, timeout=60)))
    start = time.monotonic()
    watcher.start()
    run = playbook("api_key_revoke.yml", {"name": "lab-revoke"})
    watcher.join()
    assert run.rc == 0, run.failure_messages()
    assert result["statuses"] == dict.fromkeys(GATEWAYS, 401), result
    print(f"\nKEY-10 revoke playbook start -> 401 on all {len(GATEWAYS)} gateways: {result['seconds']:.2f} s "
          f"(playbook took {time.monotonic() - start:.2f} s)")  # fmt: skip


def test_key_05_revoked_on_the_registry_refused_within_the_poll_interval_without_a_playbook(urls):
    key = issue("lab-pull")
    assert statuses(urls, key) == dict.fromkeys(GATEWAYS, 200)
    revoke = podman("lg-ca1", "localguard-keys", "revoke", "--name", "lab-pull")
    assert revoke.returncode == 0, revoke.stderr
    result = probe(urls, key, until=401, timeout=30)
    print(f"\nKEY-05 pull path: revoked on ca1 -> 401 on every gateway in {result['seconds']:.2f} s")
    assert result["statuses"] == dict.fromkeys(GATEWAYS, 401), result
    assert result["seconds"] <= POLL_SECONDS + 1.5, result


def test_key_05_a_tampered_list_is_rejected_and_the_last_good_one_stays(urls):
    """Someone who can write the published file but not sign: flips a revoked key back to usable."""
    key = delivered("lab-pull")  # revoked by the test above
    published = "/var/www/localguard-keys/keylist.json"
    original = podman("lg-ca1", "cat", published).stdout
    document = json.loads(original)
    payload = json.loads(base64.b64decode(document["payload"]))
    digest = hashlib.sha256(key.encode()).hexdigest()
    payload["serial"] += 1000
    payload["keys"][digest] = {"id": "lab-pull.1", "not_after": "2099-01-01T00:00:00Z", "status": "active",
                               "scopes": [], "engines": [], "rate": ""}  # fmt: skip
    document["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    since = podman("lg-gpu1", "date", "+%Y-%m-%d %H:%M:%S").stdout.strip()
    replace = f"cat > {published}.t && mv {published}.t {published}"
    tampered = subprocess.run(["podman", "exec", "-i", "lg-ca1", "sh", "-c", replace],
                              input=json.dumps(document), text=True, capture_output=True)  # fmt: skip
    assert tampered.returncode == 0, tampered.stderr
    try:
        time.sleep(POLL_SECONDS * 2 + 1)
        assert statuses(urls, key) == dict.fromkeys(GATEWAYS, 401)
        journal = podman(
            "lg-gpu1", "journalctl", "-u", "localguard-keys-fetch", "--since", since, "--no-pager"
        ).stdout
        assert "keeping verified key list" in journal, journal[-2000:]
    finally:
        restored = podman("lg-ca1", "localguard-keys", "publish")
        assert restored.returncode == 0, restored.stderr
    still = issue("lab-life")  # a good key keeps working throughout
    assert statuses(urls, still) == dict.fromkeys(GATEWAYS, 200)


def test_key_07_the_plaintext_is_in_no_output_log_or_file_but_the_delivery_file(urls):
    verbose = subprocess.run(
        [str(ROOT / ".venv/bin/ansible-playbook"), "-i", str(INVENTORY), str(PLAYBOOKS / "api_key_issue.yml"),
         "-e", "name=lab-secret", "-vvv"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert verbose.returncode == 0, verbose.stdout[-3000:]
    key = delivered("lab-secret")
    assert key not in verbose.stdout + verbose.stderr
    for host in ("ca1", *GATEWAYS):
        found = podman(f"lg-{host}", "grep", "-rlF", key, "/etc", "/var", "/root", "/tmp", "/run", "/home")
        expected = f"{DELIVERY}/lab-secret.key\n" if host == "ca1" else ""
        assert found.stdout == expected, f"plaintext key on {host}: {found.stdout}"
        journal = podman(f"lg-{host}", "journalctl", "--no-pager", "-q")
        assert key not in journal.stdout, f"plaintext key in {host}'s journal"


def task_result(run, name: str) -> dict:
    tasks = [task for play in run.plays for task in play["tasks"] if task["task"]["name"].startswith(name)]
    [result] = [result for task in tasks for result in task["hosts"].values()]
    return result


def test_key_06_the_push_alone_puts_a_new_key_on_every_gateway(urls):
    """With every gateway's pull stopped, the playbook's push is the only way the key gets there."""
    for gpu in GATEWAYS:
        assert podman(f"lg-{gpu}", "systemctl", "stop", "localguard-keys-fetch").returncode == 0
    try:
        key = issue("lab-push")
        assert statuses(urls, key) == dict.fromkeys(GATEWAYS, 200)
        serial = json.loads(podman("lg-ca1", "localguard-keys", "list").stdout)["serial"]
        for gpu in GATEWAYS:
            assert json.loads(podman(f"lg-{gpu}", "localguard-keys", "status").stdout)["serial"] == serial
    finally:
        for gpu in GATEWAYS:
            podman(f"lg-{gpu}", "systemctl", "start", "localguard-keys-fetch")


def test_key_09_last_use_report_names_the_key_id_its_address_and_flags_unused_keys(urls, lab_hosts):
    issue("lab-unused")
    time.sleep(15)  # lab-unused is 15 s old and never used; lab-life is used just now
    key = delivered("lab-life")
    assert statuses(urls, key) == dict.fromkeys(GATEWAYS, 200)
    run = playbook("api_key_last_use.yml", {"stale_after": "10s"})
    assert run.rc == 0, run.failure_messages()
    report = task_result(run, "KEY-09 | Report")["msg"]
    [active] = [r["id"] for r in registry("lab-life") if r["status"] == "active"]
    assert report["last_use"][active]["remote"] == lab_hosts["client"]["ansible_host"], report
    assert report["last_use"][active]["requests"] >= len(GATEWAYS), report
    assert "lab-unused.1" in report["unused"] and active not in report["unused"], report["unused"]
