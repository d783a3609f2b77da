"""Engine controls (EN-*): own account, loopback only, strict sandbox, telemetry off."""

from __future__ import annotations

import re
import shlex

import pytest
from localguard_engines import engine

MAX_EXPOSURE = 2.5


@pytest.fixture(scope="module")
def spec(hostvars):
    if "localguard_engine" not in hostvars:
        pytest.skip("no engine on this host")
    return engine(hostvars["localguard_engine"])


@pytest.fixture(scope="module")
def main_pid(host, spec) -> int:
    pid = int(host.check_output(f"systemctl show -p MainPID --value {spec.unit}"))
    assert pid > 0, f"{spec.unit} is not running"
    return pid


def test_en_01_engine_runs_as_its_own_account(host, spec, main_pid):
    assert host.check_output(f"ps -o user= -p {main_pid}").strip() == spec.account
    assert host.user(spec.account).shell == "/usr/sbin/nologin"


def test_en_02_engine_listens_on_loopback_only(host, spec, main_pid):
    listening = host.check_output(f"ss -Htlnp 'sport = :{spec.port}'")
    addresses = re.findall(r"LISTEN\s+\d+\s+\d+\s+(\S+):\d+", listening)
    assert addresses == ["127.0.0.1"], listening
    # ...and answers there: the lockdown did not just break it.
    assert host.run(f"curl -sf -o /dev/null -m 5 http://127.0.0.1:{spec.port}/v1/models").rc == 0


def test_en_02_sandbox_exposure_at_most_2_5(host, spec, capsys):
    report = host.check_output(f"systemd-analyze security --no-pager {spec.unit}")
    exposure = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", report).group(1))
    with capsys.disabled():  # shown in the CI log, not only on failure
        print(f"\n{host.backend.get_pytest_id()} {spec.unit}: systemd-analyze security exposure {exposure}")
    assert exposure <= MAX_EXPOSURE, report


def unit_properties(host, unit: str, *names: str) -> dict[str, str]:
    out = host.check_output(f"systemctl show {unit} " + " ".join(f"-p {name}" for name in names))
    return dict(line.split("=", 1) for line in out.splitlines())


def test_en_03_unit_reaches_loopback_only_and_holds_no_capability(host, spec):
    props = unit_properties(host, spec.unit, "IPAddressDeny", "IPAddressAllow", "CapabilityBoundingSet")
    assert set(props["IPAddressDeny"].split()) == {"0.0.0.0/0", "::/0"}
    assert "127.0.0.0/8" in props["IPAddressAllow"].split()
    assert props["CapabilityBoundingSet"] == ""


def test_en_02_models_read_only_and_localguard_secrets_hidden(host, spec):
    props = unit_properties(host, spec.unit, "ReadOnlyPaths", "InaccessiblePaths", "ProtectSystem")
    assert props["ProtectSystem"] == "strict"
    assert "/opt/models" in props["ReadOnlyPaths"]
    assert "/etc/localguard" in props["InaccessiblePaths"]


@pytest.fixture(scope="module")
def environ(host, main_pid) -> dict[str, str]:
    lines = host.check_output(f"tr '\\0' '\\n' < /proc/{main_pid}/environ").splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def test_en_04_telemetry_and_downloads_off(spec, environ):
    for name, value in spec.telemetry_env:
        assert environ.get(name) == value, name


def in_engine_namespace(host, main_pid: int, script: str):
    """Run as root inside the engine's mount namespace: what the unit's mounts allow, nothing more."""
    # Under PrivateUsers= the mount namespace belongs to the unit's own user namespace, which must be
    # entered first (a container has no CAP_SYS_ADMIN of its own to enter it directly).
    same_userns = host.run(f'[ "$(readlink /proc/{main_pid}/ns/user)" = "$(readlink /proc/self/ns/user)" ]')
    namespaces = "-m" if same_userns.rc == 0 else "-U -m"
    return host.run(f"nsenter -t {main_pid} {namespaces} sh -c {shlex.quote(script)}")


def probe_write(host, main_pid: int, directory: str):
    probe = f"{directory}/.localguard-write-probe"
    return in_engine_namespace(host, main_pid, f"mkdir -p {directory} && touch {probe} && rm -f {probe}")


def test_en_02_model_store_is_read_only_for_the_engine(host, spec, hostvars, main_pid, environ):
    model_dir = hostvars.get("engine_model_dir", "/opt/models")
    if spec.kind == "ollama":
        # Where Ollama itself keeps models (envconfig.Models): OLLAMA_MODELS, else ~/.ollama/models,
        # which would sit in the engine's writable state directory.
        store = environ.get("OLLAMA_MODELS") or f"{environ.get('HOME', '')}/.ollama/models"
        assert store == model_dir, environ
    refused = probe_write(host, main_pid, model_dir)
    assert refused.rc != 0 and "Read-only file system" in refused.stderr, refused.stderr
    # Beside it, the same write into the engine's state directory works: the probe itself is sound.
    state = host.check_output(f"systemctl show -p StateDirectory --value {spec.unit}").split()[0]
    allowed = probe_write(host, main_pid, f"/var/lib/{state}")
    assert allowed.rc == 0, allowed.stderr


def test_en_04_vllm_fetches_no_media_url_it_was_not_told_to(spec, environ, main_pid, host):
    if spec.kind != "vllm":
        pytest.skip("only vLLM fetches media URLs named in request bodies")
    argv = host.check_output(f"tr '\\0' '\\n' < /proc/{main_pid}/cmdline").splitlines()
    # An empty --allowed-media-domains means "any host" to vLLM: a value must follow the flag.
    assert "--allowed-media-domains" in argv, argv
    assert not argv[argv.index("--allowed-media-domains") + 1].startswith("-"), argv
    for flag in ("--trust-request-chat-template", "--enable-prompt-embeds"):
        assert flag not in argv, argv
    assert environ.get("VLLM_MEDIA_URL_ALLOW_REDIRECTS") == "0"


def test_en_04_no_secret_on_the_engine_command_line(host, main_pid):
    cmdline = host.check_output(f"tr '\\0' ' ' < /proc/{main_pid}/cmdline")
    assert not re.search(r"(?i)(api[_-]?key|token|secret|password)", cmdline), cmdline
