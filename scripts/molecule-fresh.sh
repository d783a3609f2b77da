#!/usr/bin/env bash
# Give one Molecule scenario a fresh start: drop its stale containers (a killed run leaves them
# registered with podman), cached facts and Molecule state, and (re)create its network as
# --internal, which the podman driver cannot do: a network it made itself would route lab hosts
# to the outside world.
# Usage: scripts/molecule-fresh.sh <scenario>
set -euo pipefail
scenario=$1
config=$(dirname "$0")/../molecule/$scenario/molecule.yml
network=$(awk '/^ *network:/ {print $2; exit}' "$config")
[ -n "$network" ] || { echo "molecule-net: no network in $config" >&2; exit 1; }
# A /24 per network inside 198.18.0.0/15, away from the lab's 198.18.10.0/24.
octet=$(( $(printf '%s' "$network" | cksum | cut -d' ' -f1) % 200 + 20 ))

# Facts cached for an earlier container of the same name describe another address, and the
# state of a killed run would make Molecule skip creating the hosts removed below.
cache=$(dirname "$0")/../.cache
rm -rf "$cache"/facts/*"mol-$scenario-"* "$cache/molecule/$scenario"
stale=$(podman ps -a --format '{{.Names}}' | grep "^mol-$scenario-" || true)
[ -z "$stale" ] || podman rm -f --time 2 $stale >/dev/null
podman network rm -f "$network" >/dev/null 2>&1 || true
podman network create --internal --subnet "198.18.$octet.0/24" "$network" >/dev/null
