"""The preflight's list of published secrets must cover everything the example vault ships."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml
from ansible.constants import DEFAULT_VAULT_ID_MATCH
from ansible.parsing.vault import VaultLib, VaultSecret

ROOT = Path(__file__).resolve().parents[2]
# Printed in the README: that is exactly why these secrets must never run anywhere.
EXAMPLE_VAULT_PASSWORD = b"localguard-example"


def test_every_secret_of_the_example_vault_is_refused_by_the_preflight():
    vault = VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(EXAMPLE_VAULT_PASSWORD))])
    example = yaml.safe_load(
        vault.decrypt((ROOT / "inventories/example/group_vars/all/vault.yml").read_bytes())
    )
    published = [example["vault_pki_ca_passphrase"], *(k["key"] for k in example["vault_gateway_api_keys"])]
    refused = yaml.safe_load((ROOT / "roles/preflight/vars/main.yml").read_text())
    digests = {hashlib.sha256(secret.encode()).hexdigest() for secret in published}
    assert digests <= set(refused["preflight_example_secrets_sha256"])
