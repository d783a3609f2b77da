"""The control-ID coverage check finds IDs no test carries."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("control_coverage", ROOT / "scripts" / "control-coverage.py")
coverage = importlib.util.module_from_spec(spec)
spec.loader.exec_module(coverage)

README = """
| ID | Control | Role |
|---|---|---|
| BL-SSH-01..03 | sshd | baseline |
| FW-08 | loopback guard | firewall |
| GW-02 | dirs | gateway |
"""


def test_ranges_expand_and_ids_are_found_by_name_or_literally():
    assert coverage.readme_ids(README) == ["BL-SSH-01", "BL-SSH-02", "BL-SSH-03", "FW-08", "GW-02"]
    sources = '''
def test_bl_ssh_01_03_login(host):
    """GW-02 as well."""
def test_fw_080_is_not_fw_08(host): ...
'''
    assert coverage.uncovered(README, sources) == ["BL-SSH-02", "FW-08"]
