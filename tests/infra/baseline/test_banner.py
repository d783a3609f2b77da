"""Login banners (BL-BAN-*): a legal notice before login, on the console and over SSH, that tells
nobody which OS runs here."""

from __future__ import annotations

import pytest

# getty expands these to the OS name, release, host name and machine type.
GETTY_ESCAPES = ("\\s", "\\r", "\\v", "\\m", "\\n", "\\l", "\\S")


@pytest.mark.parametrize("path", ["/etc/issue", "/etc/issue.net"])
def test_bl_ban_01_02_legal_notice_without_os_details(host, hostvars, path):
    banner = host.file(path)
    assert banner.user == "root" and banner.mode == 0o644
    text = banner.content_string
    assert text.strip()
    assert "debian" not in text.lower() and "linux" not in text.lower(), text
    assert not [escape for escape in GETTY_ESCAPES if escape in text], text
    if "baseline_banner_text" in hostvars:
        assert text.strip() == hostvars["baseline_banner_text"].strip()


def test_bl_ban_03_sshd_shows_the_notice_before_authentication(host):
    out = host.check_output("sshd -T -C user=nobody,host=localhost,addr=127.0.0.1 2>/dev/null")
    settings = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    assert settings.get("banner") == "/etc/issue.net"
