"""KEY-01..03 on the registry host (the first `ca` host): the registry holds hashes only, the
signing key never leaves it, and the published list is signed by it and as new as the registry.
On every other host: no registry and no signing key."""

from __future__ import annotations

import base64
import json
import re

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key

KEYS = "/etc/localguard/keys"
PUBLISHED = "/var/www/localguard-keys/keylist.json"
PLAINTEXT = re.compile(r"lgk_[A-Za-z0-9_-]{43}[0-9a-f]{8}")


@pytest.fixture(scope="module")
def registry_host(hostvars) -> bool:
    return hostvars["inventory_hostname"] == hostvars["groups"]["ca"][0]


def test_key_01_registry_is_root_only_and_holds_no_plaintext(host, registry_host):
    if not registry_host:
        assert not host.file(KEYS).exists, "a key registry outside the registry host"
        return
    assert (host.file(KEYS).user, host.file(KEYS).mode) == ("root", 0o700)
    registry = host.file(f"{KEYS}/registry.json")
    assert (registry.user, registry.group, registry.mode) == ("root", "root", 0o600)
    content = host.check_output(f"cat {KEYS}/registry.json")
    assert json.loads(content)["format"] == 1
    assert PLAINTEXT.search(content) is None
    cli = host.file("/usr/local/sbin/localguard-keys")
    assert (cli.user, cli.mode) == ("root", 0o755)


def test_key_02_signing_key_is_ed25519_root_only(host, registry_host):
    if not registry_host:
        pytest.skip("the signing key lives on the registry host only (checked by KEY-01 above)")
    key = host.file(f"{KEYS}/keylist-signing.key")
    assert (key.user, key.group, key.mode) == ("root", "root", 0o600)
    public = load_pem_public_key(host.file(f"{KEYS}/keylist-signing.pub").content)
    assert type(public).__name__.startswith("Ed25519"), type(public)


def test_key_03_published_list_is_signed_by_the_registry_key_and_current(host, registry_host):
    if not registry_host:
        pytest.skip("the list is published by the registry host")
    public = load_pem_public_key(host.file(f"{KEYS}/keylist-signing.pub").content)
    document = json.loads(host.file(PUBLISHED).content_string)
    payload = base64.b64decode(document["payload"])
    public.verify(base64.b64decode(document["signature"]), payload)  # raises if not signed by it
    registry = json.loads(host.check_output(f"cat {KEYS}/registry.json"))
    assert json.loads(payload)["serial"] == registry["serial"]
    assert host.file(PUBLISHED).mode == 0o644
    assert PLAINTEXT.search(host.file(PUBLISHED).content_string) is None
