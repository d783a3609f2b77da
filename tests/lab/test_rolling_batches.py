"""Rolling batches on the lab: a change that breaks the first GPU batch never reaches the next one.

harden.yml hardens the GPU hosts in batches (localguard_serial, a canary first by default) and
stops at the first failed batch (localguard_max_fail_percentage 0). Here one run carries a change
for every host (fewer SSH authentication tries, a new drop-log rate) plus, for gpu1 only, an SSH
cipher sshd refuses: gpu1 is the canary and fails `sshd -t`, so gpu2 and gpu3 must come out with
the same sshd_config and nft table (rules and sets; counters aside), byte for byte, while the CA
and collector hosts (hardened before the GPU batches) show the change did go out.
"""

from __future__ import annotations

import json

import pytest
import yaml
from playbook_runner import ROOT, run_playbook
from probes import podman

pytestmark = pytest.mark.lab

HARDEN = ROOT / "harden.yml"
INVENTORY = ROOT / "inventories" / "lab" / "hosts.yml"
CHANGE = {"baseline_ssh_max_auth_tries": 2, "firewall_log_rate": "7/minute"}
LATER_BATCH = ("gpu2", "gpu3")
HARDENED_FIRST = ("ca1", "logs")
REFUSED_BY_SSHD = {"baseline_ssh_ciphers": ["aes256-gcm@openssh.com", "lg-no-such-cipher"]}


def host_state(container: str) -> dict[str, str]:
    def read(*cmd: str) -> str:
        result = podman(container, *cmd)
        result.check_returncode()
        return result.stdout

    return {
        "sshd_config": read("cat", "/etc/ssh/sshd_config"),
        "nft": read("nft", "--stateless", "list", "table", "inet", "localguard"),
    }


@pytest.fixture
def broken_canary(tmp_path, lab_hosts):
    """An extra inventory source giving gpu1 alone an SSH cipher sshd refuses; afterwards the hosts
    that took the change get the inventory's settings back."""
    source = tmp_path / "canary-breaks.yml"
    source.write_text(yaml.safe_dump({"all": {"hosts": {"gpu1": REFUSED_BY_SSHD}}}))
    yield source
    restore = run_playbook(HARDEN, INVENTORY, "--tags", "ssh,firewall", limit=",".join(HARDENED_FIRST))
    assert restore.rc == 0, restore.failure_messages() or restore.stderr[-2000:]


def test_failed_canary_batch_leaves_later_batches_untouched(broken_canary, lab_hosts) -> None:
    containers = {name: lab_hosts[name]["lab_container"] for name in (*LATER_BATCH, *HARDENED_FIRST)}
    before = {name: host_state(container) for name, container in containers.items()}

    # The batches are the plays' (serial, max_fail_percentage) whatever the tags: the change's two
    # roles are enough.
    run = run_playbook(
        HARDEN, INVENTORY, "-i", str(broken_canary), "-e", json.dumps(CHANGE), "--tags", "ssh,firewall"
    )

    assert run.rc != 0, "the run with a broken canary succeeded"
    assert run.stats["gpu1"]["failures"] >= 1, run.stats
    assert any("sshd" in message or "failed to validate" in message for message in run.failure_messages()), (
        run.failure_messages()
    )
    # The change is real: the hosts hardened before the GPU batches took it.
    for name in HARDENED_FIRST:
        after = host_state(containers[name])
        assert after["sshd_config"] != before[name]["sshd_config"], f"{name}: sshd_config did not change"
        assert after["nft"] != before[name]["nft"], f"{name}: nft table did not change"
    # ... and it stopped at the canary.
    for name in LATER_BATCH:
        assert host_state(containers[name]) == before[name], f"{name} was changed after the canary failed"
        assert run.stats[name].get("changed", 0) == 0, run.stats[name]
    assert not set(run.ran_on("BL-SSH")) & set(LATER_BATCH), run.ran_on("BL-SSH")
