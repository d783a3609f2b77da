#!/usr/bin/env python3
"""Build or remove the lab fleet: five systemd Debian hosts in podman, reached over real SSH.

`lab.py up` (re)creates the fleet from the cached image, so every run starts from the same
unhardened state: an operator account with a key and a password, an engine listening on
0.0.0.0 on each GPU host, and an inventory at inventories/lab/hosts.yml that reaches the hosts
over SSH on an internal network (no route out of the lab). `lab.py down` removes all of it.

`lab.py up --gpu-hosts N` (1-20, default 3) builds the same lab with N GPU hosts, for
bench/harden_walltime.py: gpu4 and later, at .104 onwards, run the Ollama and vLLM stand-ins in
turn (the real llama.cpp engine stays on gpu1 alone). An idle one costs about 20 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
LAB_DIR = ROOT / ".lab"
SSH_DIR = LAB_DIR / "ssh"
INVENTORY = ROOT / "inventories" / "lab" / "hosts.yml"
# ansible.cfg's fact_caching_connection: one JSON file per host.
FACT_CACHE = ROOT / ".cache" / "facts"
ADMIN_USER = "lgadmin"
# A second admin that only the inventory's baseline_ssh_admin_users lets in (BL-SSH-06).
BREAKGLASS_USER = "lgbreakglass"
PREFIX = "lg-"


def lab_env() -> dict[str, str]:
    values = {}
    for line in (ROOT / "lab" / "lab.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


ENV = lab_env()
NETWORK = ENV["LAB_NETWORK"]
SUBNET = ENV["LAB_SUBNET"]
NET_PREFIX = SUBNET.rsplit(".", 1)[0]
# The machine holds .1 on the lab bridge: it plays the operator's admin workstation.
CONTROLLER_ADDRESS = f"{NET_PREFIX}.1"


@dataclass(frozen=True)
class LabHost:
    name: str
    group: str
    octet: int
    # (unit file in lab/units, what it runs) for the unhardened engine an install would leave.
    engine: str | None = None

    @property
    def container(self) -> str:
        return PREFIX + self.name

    @property
    def address(self) -> str:
        return f"{NET_PREFIX}.{self.octet}"


FLEET = (
    LabHost("gpu1", "gpu_hosts", 11, engine="llama_cpp"),
    LabHost("gpu2", "gpu_hosts", 12, engine="ollama"),
    LabHost("gpu3", "gpu_hosts", 13, engine="vllm"),
    LabHost("logs", "log_collectors", 21),
    # Not "ca": a host named like its group makes Ansible warn on every run.
    LabHost("ca1", "ca", 31),
    # Unmanaged peers that firewall tests send real packets from: an API client, and a host
    # nobody allowed anything.
    LabHost("client", "clients", 50),
    # A second API client that the gateways' fail2ban may ban: the first one is on the lab's ban
    # ignore list, since the gateway tests flood from it on purpose.
    LabHost("client2", "clients", 51),
    LabHost("untrusted", "lab_untrusted", 60),
    # The scheduled key rotation's controller (roles/key_rotation): it reaches the fleet over SSH
    # like the operator's machine, so the firewall counts it among the admins.
    LabHost("ctl", "controllers", 40),
)
ENGINE_UNITS = {"llama_cpp": "llama-server.service", "ollama": "ollama.service", "vllm": "vllm.service"}
DEFAULT_GPU_HOSTS = 3
MAX_GPU_HOSTS = 20
# gpu4 and later sit at .100+n, clear of the fixed hosts (.11-.13, .21, .31, .40, .50, .51, .60).
EXTRA_GPU_OCTET = 100
# The stand-ins' commands that inventories/lab/host_vars gives gpu2 and gpu3; hosts added with
# --gpu-hosts have no host_vars file, so the generated inventory carries the command.
STANDIN_COMMANDS = {
    engine: ["/usr/bin/python3", "/opt/lab-standin/engine_standin.py", "--api", engine]
    for engine in ("ollama", "vllm")
}


def fleet(gpu_hosts: int = DEFAULT_GPU_HOSTS) -> tuple[LabHost, ...]:
    """The lab with `gpu_hosts` GPU hosts: the default one is FLEET itself, in its order."""
    if not 1 <= gpu_hosts <= MAX_GPU_HOSTS:
        raise SystemExit(f"lab: --gpu-hosts must be 1-{MAX_GPU_HOSTS}, not {gpu_hosts}")
    first = [h for h in FLEET if h.group == "gpu_hosts"]
    extra = [
        LabHost(f"gpu{n}", "gpu_hosts", EXTRA_GPU_OCTET + n, engine=("ollama", "vllm")[n % 2])
        for n in range(len(first) + 1, gpu_hosts + 1)
    ]
    gpus = [*first[:gpu_hosts], *extra]
    return (*gpus, *(h for h in FLEET if h.group != "gpu_hosts"))


# Every container any size of the lab may have made: up and down remove them all.
ALL_HOSTS = fleet(MAX_GPU_HOSTS)


def log(message: str) -> None:
    print(f"lab: {message}", file=sys.stderr, flush=True)


def run(*cmd: str, check: bool = True, capture: bool = False, stdin: str | None = None) -> str:
    result = subprocess.run(
        cmd, check=False, text=True, input=stdin, capture_output=capture or stdin is not None
    )
    if check and result.returncode != 0:
        detail = (result.stderr or "").strip() if capture or stdin is not None else ""
        raise SystemExit(f"lab: command failed ({result.returncode}): {shlex.join(cmd)}\n{detail}")
    return result.stdout if result.stdout else ""


def podman_exec(host: LabHost, script: str) -> str:
    return run("podman", "exec", "-i", host.container, "bash", "-euo", "pipefail", "-s", stdin=script)


def remove_stale(hosts: tuple[LabHost, ...] = ALL_HOSTS) -> None:
    """Remove only this lab's containers and network: others' lab runs are left alone."""
    # Only those that exist: podman 4.3's `rm -f` given a missing name removes none of the others.
    existing = set(run("podman", "ps", "-a", "--format", "{{.Names}}", capture=True).split())
    names = [h.container for h in hosts if h.container in existing]
    if names:
        run("podman", "rm", "-f", "--time", "2", *names, check=False, capture=True)
    run("podman", "network", "rm", "-f", NETWORK, check=False, capture=True)


def forget_facts(hosts: tuple[LabHost, ...] = ALL_HOSTS, cache: Path = FACT_CACHE) -> None:
    """Drop the facts cached for this lab's hosts: they describe containers that no longer exist.
    Only their files: a Molecule scenario running beside the lab keeps its hosts' facts in the same
    directory, and Ansible stores a host's facts through a temporary file made in it, so removing
    the directory under a running playbook kills it (rc 250)."""
    names = {host.name for host in hosts}
    for cached in cache.glob("*"):
        # ansible-core 2.19 names the file s<schema version>_<inventory host name>.
        if re.sub(r"^s\d+_", "", cached.name) in names:
            cached.unlink(missing_ok=True)


def create_network() -> None:
    # --internal: hosts reach each other and the machine, never the outside world.
    run("podman", "network", "create", "--internal", "--subnet", SUBNET, NETWORK, capture=True)


def start_host(image: str, host: LabHost) -> None:
    run(
        "podman", "run", "-d", "--name", host.container, "--hostname", host.name,
        "--systemd", "always", "--cap-add", "NET_ADMIN,NET_RAW",
        # baseline sets namespaced net.* sysctls; kernel.* stay read-only in a container.
        "--security-opt", "unmask=/proc/sys",
        "--network", NETWORK, "--ip", host.address,
        image, "/sbin/init",
        capture=True,
    )  # fmt: skip


def wait_booted(host: LabHost, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = run(
            "podman", "exec", host.container, "systemctl", "is-system-running", check=False, capture=True
        ).strip()
        if state in {"running", "degraded"}:
            listening = run("podman", "exec", host.container, "ss", "-Htln", "sport = :22", capture=True)
            if listening.strip():
                return
        time.sleep(0.5)
    raise SystemExit(f"lab: {host.name} did not finish booting within {timeout:.0f}s")


def ensure_ssh_key(name: str = "id_ed25519", comment: str = "localguard-lab") -> Path:
    SSH_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = SSH_DIR / name
    if not key.exists():
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key))
    return key


def provision_admin(host: LabHost, pubkey: str, password: str) -> None:
    """The operator account: sudo, an SSH key, and a password that hardening must make useless."""
    podman_exec(
        host,
        f"""
id {ADMIN_USER} >/dev/null 2>&1 || useradd -m -s /bin/bash -G sudo {ADMIN_USER}
echo '{ADMIN_USER}:{password}' | chpasswd
echo '{ADMIN_USER} ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/90-lab-admin
chmod 0440 /etc/sudoers.d/90-lab-admin
install -d -m 0700 -o {ADMIN_USER} -g {ADMIN_USER} /home/{ADMIN_USER}/.ssh
echo {shlex.quote(pubkey)} > /home/{ADMIN_USER}/.ssh/authorized_keys
chown {ADMIN_USER}:{ADMIN_USER} /home/{ADMIN_USER}/.ssh/authorized_keys
chmod 0600 /home/{ADMIN_USER}/.ssh/authorized_keys
""",
    )


def install_engine(host: LabHost) -> None:
    """An engine as an unhardened install leaves it: root, 0.0.0.0, no sandbox."""
    if host.engine is None:
        return
    unit = ENGINE_UNITS[host.engine]
    run("podman", "exec", host.container, "mkdir", "-p", "/opt/lab-standin")
    run("podman", "cp", str(ROOT / "tests" / "standins" / "engine_standin.py"),
        f"{host.container}:/opt/lab-standin/engine_standin.py")  # fmt: skip
    run("podman", "cp", str(ROOT / "lab" / "units" / unit), f"{host.container}:/etc/systemd/system/{unit}")
    # An operator's `systemctl edit` override, as real installs collect them: the role must still win.
    dropins = ROOT / "lab" / "units" / f"{unit}.d"
    if dropins.is_dir():
        run("podman", "exec", host.container, "mkdir", "-p", f"/etc/systemd/system/{unit}.d")
        for dropin in sorted(dropins.glob("*.conf")):
            run("podman", "cp", str(dropin), f"{host.container}:/etc/systemd/system/{unit}.d/{dropin.name}")
    podman_exec(host, f"systemctl daemon-reload\nsystemctl enable --now {unit}\n")


def host_key_line(host: LabHost) -> str:
    key = run("podman", "exec", host.container, "cat", "/etc/ssh/ssh_host_ed25519_key.pub", capture=True)
    key_type, key_data = key.split()[:2]
    return f"{host.address} {key_type} {key_data}"


def write_inventory(key: Path, breakglass_key: Path, hosts: tuple[LabHost, ...] = FLEET) -> None:
    known_hosts = SSH_DIR / "known_hosts"
    groups: dict[str, dict] = {}
    for host in hosts:
        entry = {"ansible_host": host.address, "lab_container": host.container}
        if host.engine:
            entry["localguard_engine"] = host.engine
        if host not in FLEET and host.engine in STANDIN_COMMANDS:
            entry["engine_command"] = list(STANDIN_COMMANDS[host.engine])
        groups.setdefault(host.group, {"hosts": {}})["hosts"][host.name] = entry
    # The machine is the operator's workstation: listed for its address, never managed.
    groups["admins"] = {
        "hosts": {"controller": {"ansible_host": CONTROLLER_ADDRESS, "ansible_connection": "local"}}
    }
    inventory = {
        "all": {
            "vars": {
                "ansible_user": ADMIN_USER,
                "ansible_ssh_private_key_file": str(key),
                # Host keys were read from each host out of band: no trust on first use.
                "ansible_ssh_common_args": (
                    f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
                ),
                # Literal, not a lookup: the fleet checks read it from the inventory as it is written.
                "baseline_ssh_admin_users": {
                    BREAKGLASS_USER: {
                        "authorized_keys": [breakglass_key.with_suffix(".pub").read_text().strip()]
                    },
                },
            },
            "children": groups,
        }
    }
    header = "# Generated by scripts/lab.py for the running lab: do not edit, rerun `make lab`.\n"
    INVENTORY.write_text(header + yaml.safe_dump(inventory, sort_keys=False))


def wait_engines(hosts: tuple[LabHost, ...] = FLEET, timeout: float = 120) -> None:
    ports = {"llama_cpp": 8080, "ollama": 11434, "vllm": 8000}
    for host in hosts:
        if host.engine is None:
            continue
        deadline = time.monotonic() + timeout
        check = ["podman", "exec", host.container, "ss", "-Htln", f"sport = :{ports[host.engine]}"]
        while not run(*check, capture=True).strip():
            if time.monotonic() > deadline:
                raise SystemExit(f"lab: {host.engine} on {host.name} is not listening after {timeout:.0f}s")
            time.sleep(1)


def write_lab_secrets() -> None:
    """Secrets the lab's inventory reads: the CA passphrase and the API keys of the auth tests.

    Production keeps these in Ansible Vault; the lab makes new ones each time it is built.
    """
    (LAB_DIR / "ca.passphrase").write_text(secrets.token_urlsafe(32) + "\n")
    keys = [
        {"id": "lab-valid", "not_after": "2099-01-01T00:00:00Z", "status": "active"},
        # A second valid key: the per-key rate limit must not spill over to other keys.
        {"id": "lab-second", "not_after": "2099-01-01T00:00:00Z", "status": "active"},
        {"id": "lab-expired", "not_after": "2020-01-01T00:00:00Z", "status": "active"},
        {"id": "lab-revoked", "not_after": "2099-01-01T00:00:00Z", "status": "revoked"},
    ]
    for record in keys:
        record["key"] = "lgk_" + secrets.token_urlsafe(32)
    (LAB_DIR / "api-keys.json").write_text(json.dumps(keys, indent=2) + "\n")
    for name in ("ca.passphrase", "api-keys.json"):
        (LAB_DIR / name).chmod(0o600)


def up(gpu_hosts: int = DEFAULT_GPU_HOSTS) -> None:
    hosts = fleet(gpu_hosts)
    image = run(str(ROOT / "scripts" / "lab-image.sh"), capture=True).strip()
    remove_stale()
    create_network()
    for host in hosts:
        start_host(image, host)
    key = ensure_ssh_key()
    breakglass_key = ensure_ssh_key("id_ed25519_breakglass", BREAKGLASS_USER)
    pubkey = (key.with_suffix(".pub")).read_text().strip()
    password = secrets.token_urlsafe(18)
    write_lab_secrets()
    shutil.rmtree(LAB_DIR / "pki", ignore_errors=True)
    password_file = LAB_DIR / f"{ADMIN_USER}.password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    known = []
    for host in hosts:
        wait_booted(host)
        provision_admin(host, pubkey, password)
        install_engine(host)
        known.append(host_key_line(host))
    (SSH_DIR / "known_hosts").write_text("\n".join(known) + "\n")
    write_inventory(key, breakglass_key, hosts)
    forget_facts()
    wait_engines(hosts)
    log(f"up: {', '.join(f'{h.name}={h.address}' for h in hosts)} (image {image})")


def down() -> None:
    remove_stale()
    INVENTORY.unlink(missing_ok=True)
    forget_facts()
    log("down")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument(
        "--gpu-hosts",
        type=int,
        default=DEFAULT_GPU_HOSTS,
        metavar="N",
        help=f"GPU hosts in the lab built by `up` (1-{MAX_GPU_HOSTS}, default {DEFAULT_GPU_HOSTS})",
    )
    args = parser.parse_args()
    os.environ.setdefault("CONTAINERS_CONF", str(ROOT / "lab" / "containers.conf"))
    if args.action == "up":
        up(args.gpu_hosts)
    else:
        down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
