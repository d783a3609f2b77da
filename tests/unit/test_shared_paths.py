"""Paths several roles share are defined once (module_utils/localguard_paths.py) and read through
the localguard_pki_paths lookup; no role spells them out again."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible.errors import AnsibleLookupError
from ansible_collections.localguard.hardening.plugins.lookup.localguard_pki_paths import LookupModule
from ansible_collections.localguard.hardening.plugins.module_utils.localguard_paths import PKI_DIR

ROOT = Path(__file__).resolve().parents[2]


def test_lookup_gives_every_pki_file_under_the_one_directory() -> None:
    (paths,) = LookupModule().run([])
    assert paths["dir"] == PKI_DIR
    assert {paths[name] for name in ("key", "cert", "ca", "crl")} == {
        f"{PKI_DIR}/server.key",
        f"{PKI_DIR}/server.crt",
        f"{PKI_DIR}/ca.crt",
        f"{PKI_DIR}/crl.pem",
    }


def test_lookup_refuses_terms() -> None:
    with pytest.raises(AnsibleLookupError):
        LookupModule().run(["key"])


def test_no_role_spells_out_the_pki_directory() -> None:
    spelled = [
        str(path.relative_to(ROOT))
        for path in ROOT.glob("roles/*/**/*")
        if path.is_file() and path.suffix in {".yml", ".j2", ".sh"} and PKI_DIR in path.read_text()
    ]
    assert spelled == []
