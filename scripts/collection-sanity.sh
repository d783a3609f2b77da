#!/usr/bin/env bash
# ansible-test sanity on the collection as it ships: build the tarball (galaxy.yml's build_ignore
# decides what is in it), unpack it into a throwaway ansible_collections/ tree and test that copy,
# so a file the build leaves out (or an ignore file that does not ship) shows here, not on Galaxy.
# Each sanity test runs in a venv ansible-test makes from its own pinned requirements (PyPI, no
# container); the venvs are kept under ~/.ansible/test, so only the first run installs them.
#
# Usage: scripts/collection-sanity.sh [--junit-file FILE] [ansible-test sanity options...]
#   --junit-file FILE  also write the results as one JUnit XML file (for scripts/test-summary.py)
#   e.g. scripts/collection-sanity.sh --test validate-modules
set -euo pipefail
shopt -s nullglob

root=$(cd "$(dirname "$0")/.." && pwd)
junit_file=
if [ "${1:-}" = --junit-file ]; then
  junit_file=$(realpath -m "$2")
  shift 2
fi

# ansible-test bootstraps pip in each new venv with a get-pip.py it downloads from
# ci-files.testing.ansible.com and caches. Where only PyPI is reachable, seed that cache with a
# stand-in doing the same from PyPI: the interpreter's bundled pip (ensurepip), then the pip
# version ansible-test pins.
pip_version=$(python3 -c 'import pathlib, re, ansible_test
src = (pathlib.Path(ansible_test.__file__).parent / "_internal/python_requirements.py").read_text()
print(re.search(r"\bpip=.([0-9.]+).", src)[1])')
get_pip=~/.ansible/test/cache/get_pip_${pip_version//./_}.py
if [ ! -e "$get_pip" ]; then
  mkdir -p "$(dirname "$get_pip")"
  if ! curl -fsS --max-time 20 -o "$get_pip.download" \
    "https://ci-files.testing.ansible.com/ansible-test/get-pip-$pip_version.py" 2>/dev/null; then
    cat >"$get_pip.download" <<'PY'
"""Stand-in for get-pip.py, written by localguard's scripts/collection-sanity.sh (PyPI only)."""
import subprocess
import sys

GET_PIP_ONLY = ("--no-setuptools", "--no-wheel")
args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]
subprocess.run([sys.executable, "-m", "ensurepip", "--default-pip"], check=True, stdout=subprocess.DEVNULL)
subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], check=True)
if "--no-setuptools" in sys.argv:
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", "setuptools"], check=False)
PY
  fi
  mv "$get_pip.download" "$get_pip"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ansible-galaxy collection build "$root" --output-path "$tmp/dist" >/dev/null
# Unpacked, not `ansible-galaxy collection install`: that one finds the collection already
# installed through ansible.cfg's collections_path (the repository's own link) and does nothing.
dest=$tmp/ansible_collections/localguard/hardening
mkdir -p "$dest"
tar -xzf "$tmp"/dist/localguard-hardening-*.tar.gz -C "$dest"
cd "$dest"

rc=0
ansible-test sanity --python 3.11 --venv --requirements --color no ${junit_file:+--junit} "$@" || rc=$?

if [ -n "$junit_file" ]; then
  # ansible-test writes one file per sanity test; the summary reads one file per stage.
  mkdir -p "$(dirname "$junit_file")"
  python3 - "$junit_file" tests/output/junit/*.xml <<'PY'
import sys
import xml.etree.ElementTree as ET

merged = ET.Element("testsuites")
for path in sys.argv[2:]:
    root = ET.parse(path).getroot()
    merged.extend([root] if root.tag == "testsuite" else list(root.iter("testsuite")))
ET.ElementTree(merged).write(sys.argv[1], encoding="unicode", xml_declaration=True)
PY
fi
exit $rc
