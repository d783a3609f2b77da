from pathlib import Path

import pytest
from ansible_collections.localguard.hardening.plugins.module_utils.localguard_sysctl import (
    HEADER,
    enforce,
    proc_path,
    render,
)


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc_sys"
    for key, value in {
        "net/ipv4/conf/all/rp_filter": "2",
        "kernel/kptr_restrict": "0",
        "net/ipv4/conf/eth0.100/rp_filter": "0",
        "net/ipv4/ip_local_port_range": "32768\t60999",
        "net/ipv6/conf/all/accept_ra": "1",
        "net/ipv6/conf/default/accept_ra": "1",
        "net/ipv6/conf/eth0/accept_ra": "1",
        "net/ipv6/conf/eth0.100/accept_ra": "1",
    }.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_text(value + "\n")
    return root


def test_proc_path_maps_dots_and_slashes():
    assert proc_path("net.ipv4.conf.all.rp_filter", Path("/p")) == Path("/p/net/ipv4/conf/all/rp_filter")
    assert proc_path("net.ipv4.conf.eth0/100.rp_filter", Path("/p")) == Path(
        "/p/net/ipv4/conf/eth0.100/rp_filter"
    )


def test_render_is_sorted_and_normalized():
    assert render({"b.x": 1, "a.y": "1   2"}) == HEADER + "a.y = 1 2\nb.x = 1\n"


def test_first_run_writes_file_and_live_values(tmp_path, proc):
    file = tmp_path / "60-test.conf"
    result = enforce({"net.ipv4.conf.all.rp_filter": 1, "kernel.kptr_restrict": 2}, file, proc_sys=proc)
    assert result.changed and result.file_changed
    assert result.applied == {"kernel.kptr_restrict": ("0", "2"), "net.ipv4.conf.all.rp_filter": ("2", "1")}
    assert (proc / "kernel/kptr_restrict").read_text().strip() == "2"
    assert file.read_text() == render({"net.ipv4.conf.all.rp_filter": 1, "kernel.kptr_restrict": 2})


def test_second_run_changes_nothing(tmp_path, proc):
    file = tmp_path / "60-test.conf"
    settings = {"net.ipv4.conf.all.rp_filter": 1, "net.ipv4.ip_local_port_range": "32768 60999"}
    enforce(settings, file, proc_sys=proc)
    again = enforce(settings, file, proc_sys=proc)
    assert not again.changed and again.applied == {}


def test_check_mode_reports_but_writes_nothing(tmp_path, proc):
    file = tmp_path / "60-test.conf"
    result = enforce({"kernel.kptr_restrict": 2}, file, check_mode=True, proc_sys=proc)
    assert result.changed and result.applied == {"kernel.kptr_restrict": ("0", "2")}
    assert not file.exists()
    assert (proc / "kernel/kptr_restrict").read_text().strip() == "0"


def test_skipped_keys_are_persisted_not_applied(tmp_path, proc):
    file = tmp_path / "60-test.conf"
    result = enforce(
        {"kernel.kptr_restrict": 2, "net.ipv4.conf.eth0/100.rp_filter": 1},
        file,
        skip_runtime=["kernel.kptr_restrict"],
        proc_sys=proc,
    )
    assert result.skipped == ["kernel.kptr_restrict"]
    assert (proc / "kernel/kptr_restrict").read_text().strip() == "0"
    assert (proc / "net/ipv4/conf/eth0.100/rp_filter").read_text().strip() == "1"
    assert "kernel.kptr_restrict = 2" in file.read_text()


def test_unknown_key_raises(tmp_path, proc):
    with pytest.raises(OSError):
        enforce({"net.ipv4.no_such_key": 1}, tmp_path / "f.conf", proc_sys=proc)


def test_glob_sets_every_existing_match_but_explicit_keys(tmp_path, proc):
    """As systemd-sysctl does: the glob reaches interfaces that exist now, an explicit key wins."""
    file = tmp_path / "60-test.conf"
    settings = {"net.ipv6.conf.*.accept_ra": 0, "net.ipv6.conf.eth0.accept_ra": 2}
    result = enforce(settings, file, proc_sys=proc)
    assert result.applied == {
        "net.ipv6.conf.all.accept_ra": ("1", "0"),
        "net.ipv6.conf.default.accept_ra": ("1", "0"),
        "net.ipv6.conf.eth0.accept_ra": ("1", "2"),
        "net.ipv6.conf.eth0/100.accept_ra": ("1", "0"),
    }
    assert (proc / "net/ipv6/conf/eth0.100/accept_ra").read_text().strip() == "0"
    assert "net.ipv6.conf.*.accept_ra = 0\n" in file.read_text()
    assert not enforce(settings, file, proc_sys=proc).changed


def test_skipped_glob_is_persisted_not_applied(tmp_path, proc):
    file = tmp_path / "60-test.conf"
    glob = "net.ipv6.conf.*.accept_ra"
    result = enforce({glob: 0}, file, skip_runtime=[glob], proc_sys=proc)
    assert result.skipped == [glob] and result.applied == {}
    assert (proc / "net/ipv6/conf/eth0/accept_ra").read_text().strip() == "1"
