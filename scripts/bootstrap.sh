#!/usr/bin/env bash
# Install everything localguard's lab and tests need on a fresh Debian 12 machine (as root):
# the Debian packages, the machine settings podman needs for many systemd hosts, and the pinned
# Python venv. Safe to rerun: each step is skipped when already done.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

apt_packages=(podman runc debootstrap nftables openssh-client make git python3-venv rsync)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bootstrap: apt-get install ${missing[*]}" >&2
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

# Many systemd hosts at once exhaust the default inotify limits.
sysctl -q -w fs.inotify.max_user_instances=8192 fs.inotify.max_user_watches=1048576

venv=$root/.venv
stamp=$venv/.pyproject.sha256
want=$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: creating $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/python" - "$root/pyproject.toml" >"$venv/requirements.txt" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
extras = project["optional-dependencies"]
print("\n".join(project["dependencies"] + extras["dev"] + extras["mitogen"]))
PY
  "$venv/bin/pip" install -q -r "$venv/requirements.txt"
  echo "$want" >"$stamp"
fi

