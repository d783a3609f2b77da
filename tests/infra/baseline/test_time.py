"""Time client (BL-TIME-*): certificates, CRLs and API key expiry all depend on the clock. Runs
under Molecule (which names TEST-NET servers) and on the lab (offline: no NTP server named)."""

from __future__ import annotations

import pytest
from systemd_config import effective_settings


def inventory_servers(hostvars) -> list[str]:
    """The servers the inventory names: baseline_time_servers where a layer sets it, else the site's
    one list, localguard_ntp_servers."""
    servers = hostvars.get("baseline_time_servers", hostvars.get("localguard_ntp_servers", []))
    if not servers:
        pytest.skip(
            "the inventory names no NTP server (localguard_ntp_servers): timesyncd keeps Debian's pool"
        )
    return [str(server) for server in servers]


def test_bl_time_02_timesyncd_uses_the_inventory_servers_and_no_fallback(host, hostvars):
    """Debian's timesyncd.conf names no server and falls back to Debian's pool, which the egress
    allowlist blocks: the host would never sync, or sync with servers nobody chose."""
    servers = inventory_servers(hostvars)
    dropin = host.file("/etc/systemd/timesyncd.conf.d/60-localguard.conf")
    assert (dropin.user, dropin.mode) == ("root", 0o644)
    settings = effective_settings(host.check_output("systemd-analyze cat-config systemd/timesyncd.conf"))
    assert settings.get("NTP", "").split() == servers, settings
    assert settings.get("FallbackNTP") == "", settings


def test_bl_time_03_timesyncd_keeps_the_clock_on_real_hosts(host, hostvars, hostenv):
    if hostenv["in_container"]:
        pytest.skip(
            "the clock belongs to the whole kernel: a container cannot set it, and timesyncd declines to run "
            "in one (ConditionVirtualization=!container); its configuration is checked above"
        )
    timesyncd = host.service("systemd-timesyncd")
    assert timesyncd.is_enabled and timesyncd.is_running
    assert host.check_output("timedatectl show --property=NTP --value") == "yes"
    servers = host.check_output("timedatectl show-timesync --property=SystemNTPServers --value").split()
    assert servers == inventory_servers(hostvars)
