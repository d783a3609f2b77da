"""A new operator's first day, on freshly created lab hosts (run before `make demo` hardens them).

The README says: copy inventories/example/, put your own secrets in its vault, set your
addresses, dry-run, then apply. This does exactly that on the lab's CA, collector and first GPU
host (their addresses) with the example's production settings (SSH groups, root login off, failing
on undeclared listeners, mTLS), and checks what the operator would see: a CA-less `--limit`
refused with a readable reason before any change, a dry run that exits 0, a real run that exits 0,
a second run that changes nothing, and a completion through the gateway from a host in the
configured client network.

The second run is an AWX job: harden.yml through ansible-runner (awx_job), its outcome read from
the job's artifacts as AWX reads it: status `successful`, rc 0, a recap for every managed host with
no failed, unreachable or changed task; afterwards AIDE on the hosts of the file-integrity play
finds nothing, so the next run would report none of localguard's own changes.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from awx_job import host_recaps, play_hosts, run_job
from netns import openai_completion
from playbook_runner import ROOT, PlaybookRun, run_playbook
from probes import podman

pytestmark = pytest.mark.fresh_lab
EXAMPLE = ROOT / "inventories" / "example"
LAB_INVENTORY = ROOT / "inventories" / "lab" / "hosts.yml"
SITE = ROOT / ".cache" / "site-lab"
FIRST_GPU = "gpu1"


def write_vault(site: Path, password_file: Path, secrets_: dict) -> None:
    vault = site / "group_vars" / "all" / "vault.yml"
    vault.write_text("---\n" + yaml.safe_dump(secrets_, sort_keys=False))
    encrypt = [str(ROOT / ".venv/bin/ansible-vault"), "encrypt", "--vault-password-file", str(password_file)]
    subprocess.run([*encrypt, str(vault)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def site() -> dict:
    """inventories/example copied as a new site: the lab's hosts and addresses, a new vault."""
    lab = yaml.safe_load(LAB_INVENTORY.read_text())
    groups = lab["all"]["children"]
    address = {name: v["ansible_host"] for body in groups.values() for name, v in body["hosts"].items()}
    shutil.rmtree(SITE, ignore_errors=True)
    shutil.copytree(EXAMPLE, SITE)
    # Hosts: the lab's, with its SSH access; the client is known only by its network, as the
    # example's firewall_client_networks shows.
    clients = groups.pop("clients")["hosts"]
    # The example has no rotation controller (roles/key_rotation needs the site's SSH key for it).
    groups.pop("controllers", None)
    # One GPU host, the one with the real engine: the walk is about a new site's first day, each
    # engine's hardening is the main lab suite's, and every host here is three runs of CI's time.
    gpu_hosts = groups["gpu_hosts"]["hosts"]
    groups["gpu_hosts"]["hosts"] = {FIRST_GPU: gpu_hosts[FIRST_GPU]}
    (SITE / "hosts.yml").write_text(yaml.safe_dump(lab, sort_keys=False))
    shutil.rmtree(SITE / "host_vars")
    (SITE / "host_vars").mkdir()
    for gpu in groups["gpu_hosts"]["hosts"]:
        shutil.copy(ROOT / "inventories" / "lab" / "host_vars" / f"{gpu}.yml", SITE / "host_vars")
    # Addresses: the example's, replaced by the lab's (ca1 stands in for every outside service).
    settings = SITE / "group_vars" / "all" / "main.yml"
    values = yaml.safe_load(settings.read_text())
    for name in ("firewall_dns_servers", "localguard_ntp_servers", "firewall_package_mirrors"):
        values[name] = [address["ca1"]]
    settings.write_text(yaml.safe_dump(values, sort_keys=False))
    gpu_settings = SITE / "group_vars" / "gpu_hosts.yml"
    gpu_values = yaml.safe_load(gpu_settings.read_text())
    gpu_values["firewall_client_networks"] = [f"{v['ansible_host']}/32" for v in clients.values()]
    gpu_settings.write_text(yaml.safe_dump(gpu_values, sort_keys=False))
    # Secrets: the operator's own, in a vault of their own.
    password_file = ROOT / ".cache" / "site-lab.vault-password"
    password_file.write_text(secrets.token_urlsafe(24) + "\n")
    password_file.chmod(0o600)
    key = "lgk_" + secrets.token_urlsafe(32)
    write_vault(SITE, password_file, {
        "vault_pki_ca_passphrase": secrets.token_urlsafe(32),
        "vault_gateway_api_keys": [{"id": "site-first-key", "key": key, "not_after": "2099-01-01T00:00:00Z",
                                    "status": "active"}],
    })  # fmt: skip
    export = Path.home() / ".localguard" / "pki" / SITE.name
    shutil.rmtree(export, ignore_errors=True)
    return {
        "args": ("--vault-password-file", str(password_file)),
        "key": key,
        "export": export,
        "address": address,
    }


def harden(site: dict, *args: str, limit: str | None = None) -> PlaybookRun:
    return run_playbook(ROOT / "harden.yml", SITE, *site["args"], *args, limit=limit, timeout=1200)


def test_new_site_from_the_example_inventory(site, lab_hosts):
    # PRE-04: a GPU host added before its CA exists is refused before anything changes, saying why.
    early = harden(site, limit=FIRST_GPU)
    assert early.rc != 0
    assert early.total("changed") == 0, early.changed_tasks()
    reason = " ".join(early.failure_messages())
    assert "ca1" in reason and "first" in reason, reason

    dry = harden(site, "--check", "--diff")
    assert dry.rc == 0, dry.failure_messages() or dry.stderr[-3000:]
    assert dry.total("changed") > 0

    first = harden(site)
    assert first.rc == 0, first.failure_messages() or first.stderr[-3000:]

    second = run_job(SITE, *site["args"])
    changed, failed = second.outcomes()
    assert second.status == "successful" and second.rc == 0, (
        f"AWX job: status {second.status}, rc {second.rc} after {second.seconds:.0f} s; failed: {failed}"
    )
    [stats] = second.stats()
    recaps = host_recaps(stats)
    managed = play_hosts(SITE / "hosts.yml", "Preflight")
    assert managed and set(recaps) == managed, f"recap hosts {sorted(recaps)}, managed {sorted(managed)}"
    for host, recap in sorted(recaps.items()):
        assert recap["ok"] > 0, f"{host}: ran no task: {recap}"
        quiet = recap["failures"] == recap["unreachable"] == recap["changed"] == 0
        assert quiet, f"{host}: {recap}; changed: {changed}"
    aide_hosts = play_hosts(SITE / "hosts.yml", "File integrity")
    assert aide_hosts and aide_hosts <= managed, f"AIDE hosts {sorted(aide_hosts)}"
    for host in sorted(aide_hosts):
        check = podman(lab_hosts[host]["lab_container"], "aide", "--config", "/etc/aide/aide.conf", "--check")
        assert check.returncode == 0, f"{host}: AIDE reports changes after the run:\n{check.stdout[-3000:]}"
    print(f"second run as an AWX job: rc {second.rc}, {len(recaps)} hosts, {second.seconds:.0f} s")

    url, ca = f"https://{site['address'][FIRST_GPU]}", str(site["export"] / "ca.crt")
    reply = openai_completion("lg-client", url, site["key"], ca)
    assert reply["content"].strip() and reply["tokens"] > 0, json.dumps(reply)
