#!/usr/bin/env python3
"""Delete each listed control from a copy of the project and show that its test turns red.

For every mutant: copy the project to a scratch directory, make one textual change that removes
(or undoes) a control, converge the lab with the copy (only the tags and hosts it touches), run
the control's tests from the copy and expect them to FAIL, then converge the lab again with the
real project. Unit mutants only run the unit tests of the copy; Molecule mutants run the copy's
scenario, whose prepare step undoes what the image ships.

Runs against the running, hardened lab (`make demo`), one mutant at a time, and leaves it as the
real roles made it. Prints control -> test -> failed as expected; exits non-zero if any mutant
survived. `make mutate` runs it; it is not part of `make test` (about half an hour).

Usage: scripts/mutate.py [name-substring ...]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
INVENTORY = "inventories/lab/hosts.yml"
GATEWAY_SITE = "roles/gateway/templates/localguard-gateway.conf.j2"
NFT = "roles/firewall/templates/localguard.nft.j2"
GW = "tests/lab/test_gateway.py::"
FW = "tests/lab/test_firewall_packets.py::"
SSH = "tests/lab/test_ssh_access.py::"
LOGS = "tests/lab/test_log_shipping.py::"
INVALID_LOG = (
    "        ct state invalid {{ firewall_log }} "
    'log prefix "localguard-invalid-drop " {{ firewall_log_to }}\n'
)


@dataclass(frozen=True)
class Mutant:
    control: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    # "lab": converge the copy onto the lab with these tags/limit; "unit": unit tests only;
    # "molecule:<scenario>": the copy's Molecule scenario is the test.
    kind: str = "lab"
    tags: str = ""
    limit: str = "gpu_hosts"


MUTANTS = (
    Mutant("GW-04 ssl_protocols", GATEWAY_SITE, "ssl_protocols TLSv1.2 TLSv1.3;",
           "ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;",
           (GW + "test_gw_nginx_offers_no_tls_below_1_2_anywhere",),
           tags="gateway", limit="gpu2"),
    Mutant("BL-SSH-05 algorithm lines", "roles/baseline/templates/sshd_config.j2",
           "KexAlgorithms {{ baseline_ssh_kex | join(',') }}\n", "",
           (SSH + "test_bl_ssh_05_algorithms_openssh_accepts_by_default_are_refused",),
           tags="ssh", limit="gpu1"),
    Mutant("BL-SSH-05 MAC line", "roles/baseline/templates/sshd_config.j2",
           "MACs {{ baseline_ssh_macs | join(',') }}\n", "",
           (SSH + "test_bl_ssh_05_algorithms_openssh_accepts_by_default_are_refused",),
           tags="ssh", limit="gpu1"),
    Mutant("GW-04 client_max_body_size", GATEWAY_SITE,
           "    client_max_body_size {{ gateway_max_body_size }};\n", "",
           (GW + "test_gw_body_limit_just_below_and_above_the_configured_size",),
           tags="gateway", limit="gpu2"),
    Mutant("GW-04 per-key rate zone", GATEWAY_SITE,
           "        limit_req zone=lg_key_default burst={{ gateway_burst_per_key }} nodelay;\n", "",
           (GW + "test_gw_rate_limit_is_per_key",), tags="gateway", limit="gpu2"),
    Mutant("GW-04 allowlist entry", "plugins/module_utils/localguard_engines.py",
           'allowed_routes=("POST /api/generate",', 'allowed_routes=("POST /api/pull", "POST /api/generate",',
           ("tests/unit/test_engines.py::test_no_dangerous_route_is_on_any_allowlist",
            GW + "test_gw_never_forwards_a_dangerous_route_even_with_a_valid_key"),
           tags="gateway", limit="gpu2"),
    Mutant("GW-04 key stripped before the engine", GATEWAY_SITE,
           '    proxy_set_header Authorization "";\n', "",
           (GW + "test_gw_engine_sees_a_loopback_host_the_peer_address_and_no_key",),
           tags="gateway", limit="gpu2"),
    Mutant("GW-04 loopback Host to the engine", GATEWAY_SITE,
           "proxy_set_header Host 127.0.0.1:{{ gateway_upstream_port }};", "proxy_set_header Host $host;",
           (GW + "test_gw_engine_sees_a_loopback_host_the_peer_address_and_no_key",),
           tags="gateway", limit="gpu2"),
    Mutant("GW-04 key checked after the rate limits", GATEWAY_SITE,
           "        auth_request /_localguard/auth;\n        limit_except",
           '        if ($lg_key_id = "") {\n            return 401;\n        }\n        limit_except',
           (GW + "test_gw_unauthenticated_flood_is_rate_limited_by_address",),
           tags="gateway", limit="gpu3"),
    Mutant("GW-04 key-exchange groups", GATEWAY_SITE, "    ssl_ecdh_curve X25519:prime256v1:secp384r1;\n", "",
           (GW + "test_gw_key_exchange_groups_are_mozilla_intermediate",),
           tags="gateway", limit="gpu2"),
    Mutant("GW-04 case-insensitive bearer", "roles/gateway/files/auth.js", r"/^Bearer\s+(\S+)$/i",
           r"/^Bearer\s+(\S+)$/", (GW + "test_gw_bearer_scheme_is_case_insensitive",),
           tags="gateway", limit="gpu3"),
    Mutant("EN-03 IPAddressDeny", "roles/engine/templates/sandbox.conf.j2", "IPAddressDeny=any\n", "",
           ("tests/infra/engine/test_engine_sandbox.py",), tags="engine", limit="gpu2"),
    Mutant("FW-01 other tables left alone", NFT, "table inet localguard\ndelete table inet localguard\n",
           "flush ruleset\n", (FW + "test_fw_01_a_foreign_table_survives_an_apply",),
           tags="firewall", limit="gpu1"),
    Mutant("FW-05 ct invalid logged", NFT,
           INVALID_LOG, "",
           ("tests/infra/firewall/test_firewall_rules.py",), tags="firewall", limit="gpu1"),
    Mutant("FW-08 engine port on loopback", NFT, "counter name engine_local_drop reject with tcp reset",
           "counter name engine_local_drop accept",
           (FW + "test_fw_08_only_the_gateway_and_root_reach_the_engine_on_loopback",),
           tags="firewall", limit="gpu_hosts"),
    Mutant("FW-03 egress of connections older than the ruleset", NFT,
           "        ct state new tcp flags & (syn | ack) == ack counter name egress_pickup accept\n", "",
           (FW + "test_fw_03_a_session_open_before_the_first_ruleset_keeps_working",),
           tags="firewall", limit="logs"),
    Mutant("FW-09 nftables.service keeps the table", "roles/firewall/templates/nftables-service.nft.j2",
           'include "{{ firewall_config_dir }}/active.nft"\n', "",
           (FW + "test_fw_09_nftables_service_never_leaves_the_host_without_the_table",),
           tags="firewall", limit="gpu1"),
    Mutant("FW-06 rollback before confirmation fails", "roles/firewall/tasks/apply.yml",
           "  when: firewall_confirmed.stdout != firewall_loaded.stdout_lines | last\n", "  when: false\n",
           (FW + "test_fw_06_rollback_that_fires_before_the_confirmation_fails_loudly",),
           tags="firewall", limit="all"),
    Mutant("LC-01 peers authenticated by name", "roles/log_collector/templates/localguard-collector.conf.j2",
           'tls.authMode="name"', 'tls.authMode="certvalid"',
           (LOGS + "test_lc_01_the_collector_refuses_peers_it_cannot_authenticate",),
           tags="log_collector", limit="log_collectors"),
    Mutant("PKI-07 CSR checked before signing", "roles/pki/tasks/sign_server.yml",
           "    that: pki_csr_problems | length == 0\n", "    that: true\n",
           ("tests/infra/pki/test_pki.py::test_pki_07_forged_csr_refused_before_signing",),
           tags="pki", limit="all"),
    Mutant("BL-UPG-04 apt timers enabled", "roles/baseline/tasks/upgrades.yml",
           "    enabled: true\n    state: started\n", "    enabled: false\n    state: stopped\n",
           ("molecule baseline verify",), kind="molecule:baseline"),
)  # fmt: skip


def log(message: str) -> None:
    print(f"mutate: {message}", file=sys.stderr, flush=True)


def copy_project(scratch: Path) -> None:
    ignore = shutil.ignore_patterns(".git", ".venv", ".cache", ".lab", "__pycache__", ".ruff_cache")
    shutil.copytree(ROOT, scratch, ignore=ignore, symlinks=True)
    for name in (".venv", ".lab"):
        (scratch / name).symlink_to(ROOT / name)
    (scratch / ".cache").mkdir()


def mutate(scratch: Path, mutant: Mutant) -> None:
    path = scratch / mutant.path
    text = path.read_text()
    if mutant.old not in text:
        raise SystemExit(f"mutate: {mutant.control}: the text to remove is no longer in {mutant.path}")
    path.write_text(text.replace(mutant.old, mutant.new))


def run(cmd: list[str], cwd: Path, env: dict | None = None) -> int:
    return subprocess.run(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ).returncode


def harden(project: Path, mutant: Mutant) -> int:
    env = dict(os.environ, ANSIBLE_CONFIG=str(project / "ansible.cfg"))
    cmd = [str(BIN / "ansible-playbook"), "-i", str(ROOT / INVENTORY), "harden.yml", "--limit", mutant.limit]
    return run([*cmd, "--tags", mutant.tags] if mutant.tags else cmd, project, env)


def tests_fail(project: Path, mutant: Mutant) -> bool:
    if mutant.kind.startswith("molecule:"):
        scenario = mutant.kind.split(":", 1)[1]
        env = dict(os.environ, MOLECULE_EPHEMERAL_DIRECTORY=str(project / ".cache" / "molecule" / scenario))
        run([str(project / "scripts" / "molecule-fresh.sh"), scenario], project, env)
        return run([str(BIN / "molecule"), "test", "-s", scenario], project, env) != 0
    infra = [
        f"--ansible-inventory={ROOT / INVENTORY}",
        "--connection=ansible",
        "--hosts=gpu_hosts,log_collectors,ca",
    ]
    cmd = [str(BIN / "pytest"), "-p", "no:cacheprovider", "-q", "-x", *mutant.tests]
    return run([*cmd, *infra] if any("tests/infra" in t for t in mutant.tests) else cmd, project) != 0


def main(argv: list[str]) -> int:
    chosen = [m for m in MUTANTS if not argv[1:] or any(word in m.control for word in argv[1:])]
    rows, survivors = [], []
    for mutant in chosen:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="localguard-mutant-") as tmp:
            scratch = Path(tmp) / "project"
            copy_project(scratch)
            mutate(scratch, mutant)
            log(f"{mutant.control}: converging the mutant")
            if mutant.kind == "lab" and harden(scratch, mutant) != 0:
                log(f"{mutant.control}: the mutant's converge failed (the tests below still decide)")
            failed = tests_fail(scratch, mutant)
        if mutant.kind == "lab":
            log(f"{mutant.control}: restoring the real roles")
            if harden(ROOT, mutant) != 0:
                raise SystemExit(
                    f"mutate: restoring after {mutant.control} failed: the lab needs `make demo`"
                )
        rows.append((mutant.control, ", ".join(t.rsplit("::", 1)[-1] for t in mutant.tests), failed,
                     time.monotonic() - started))  # fmt: skip
        if not failed:
            survivors.append(mutant.control)
    width = max(len(r[0]) for r in rows)
    print(f"{'control removed':<{width}}  failed as expected  seconds  test")
    for control, tests, failed, seconds in rows:
        print(f"{control:<{width}}  {'yes' if failed else 'NO (survived)':<19}  {seconds:7.0f}  {tests}")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
