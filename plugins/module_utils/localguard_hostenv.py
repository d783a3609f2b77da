# Copyright (c) 2026, localguard contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""What this host lets localguard enforce: decided once, read by every role.

Containers (the lab, CI) forbid some controls that real hosts must get: kernel.* sysctls,
auditd, writes to a read-only /proc/sys. Roles ask these facts instead of guessing, so a real
host gets every control and a container skips only what it cannot do, with a message.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

CAP_AUDIT_CONTROL = 30
CAP_NET_ADMIN = 12
CAP_SYS_MODULE = 16
CAP_SYS_PACCT = 20
CAP_SYS_TIME = 25


@dataclass(frozen=True)
class HostEnv:
    in_container: bool
    container_type: str
    proc_sys_net_writable: bool
    can_set_kernel_sysctls: bool
    can_audit: bool
    can_manage_nftables: bool
    can_load_modules: bool
    can_account_processes: bool
    can_set_clock: bool

    def as_facts(self) -> dict[str, object]:
        return {f"localguard_{key}": value for key, value in asdict(self).items()}


def container_type(
    systemd_container: str | None, pid1_environ: bytes, containerenv: bool, dockerenv: bool
) -> str:
    """Name of the container runtime this host runs in, or "" on a real host or VM."""
    if systemd_container and systemd_container.strip():
        return systemd_container.strip()
    for item in pid1_environ.split(b"\0"):
        if item.startswith(b"container="):
            return item.partition(b"=")[2].decode(errors="replace") or "unknown"
    if containerenv:
        return "podman"
    if dockerenv:
        return "docker"
    return ""


def effective_capabilities(proc_status: str) -> int:
    for line in proc_status.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def has_capability(capabilities: int, capability: int) -> bool:
    return bool(capabilities >> capability & 1)


def decide(container: str, capabilities: int, proc_sys_net_writable: bool) -> HostEnv:
    in_container = bool(container)
    return HostEnv(
        in_container=in_container,
        container_type=container,
        proc_sys_net_writable=proc_sys_net_writable,
        # kernel.* and fs.* are global: a container may see them writable and still get EPERM.
        can_set_kernel_sysctls=proc_sys_net_writable and not in_container,
        # The audit subsystem is not namespaced: only the host itself may load rules.
        can_audit=not in_container and has_capability(capabilities, CAP_AUDIT_CONTROL),
        can_manage_nftables=has_capability(capabilities, CAP_NET_ADMIN),
        # Modules, process accounting and the clock belong to the whole kernel, not a container.
        can_load_modules=not in_container and has_capability(capabilities, CAP_SYS_MODULE),
        can_account_processes=not in_container and has_capability(capabilities, CAP_SYS_PACCT),
        can_set_clock=not in_container and has_capability(capabilities, CAP_SYS_TIME),
    )


def _read(path: Path, binary: bool = False) -> str | bytes | None:
    try:
        return path.read_bytes() if binary else path.read_text()
    except OSError:
        return None


def probe(root: Path = Path("/")) -> HostEnv:
    """Read the running host. `root` lets tests point at a fake tree."""
    container = container_type(
        systemd_container=_read(root / "run/systemd/container"),  # type: ignore[arg-type]
        pid1_environ=_read(root / "proc/1/environ", binary=True) or b"",  # type: ignore[arg-type]
        containerenv=(root / "run/.containerenv").exists(),
        dockerenv=(root / ".dockerenv").exists(),
    )
    capabilities = effective_capabilities(_read(root / "proc/self/status") or "")  # type: ignore[arg-type]
    # access() reports EROFS for a read-only /proc/sys mount, which is what containers get.
    writable = os.access(root / "proc/sys/net/ipv4/conf/all/rp_filter", os.W_OK)
    return decide(container, capabilities, writable)
