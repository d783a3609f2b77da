#!/usr/bin/env bash
# (Re)create the internal network Molecule scenarios attach to, and drop this project's stale
# Molecule containers: an earlier run that was killed leaves them registered with podman.
set -euo pipefail
network=localguard-molecule
subnet=198.18.20.0/24
stale=$(podman ps -a --format '{{.Names}}' | grep '^mol-' || true)
[ -z "$stale" ] || podman rm -f --time 2 $stale >/dev/null
podman network rm -f "$network" >/dev/null 2>&1 || true
podman network create --internal --subnet "$subnet" "$network" >/dev/null
