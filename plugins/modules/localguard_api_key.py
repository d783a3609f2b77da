#!/usr/bin/python
# Copyright (c) 2026, localguard contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Ansible shell around localguard_apikeys: one API key name's lifecycle in the key registry."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: localguard_api_key
short_description: Create, rotate, deliver, revoke and remove API keys in the localguard key registry
description:
  - Runs on the registry host. Keeps one name's keys in O(registry) (only sha256 of each key is
    stored), under an exclusive lock, written atomically, and after every change re-signs and
    publishes the key list that gateways fetch (O(publish), signed with O(signing_key)). The key
    list is also published when the published file is missing, not signed by O(signing_key), or
    older than the registry.
  - O(state=present) makes a key when the name has no usable one (or imports O(key)).
  - O(state=rotated) makes a successor for a key due for rotation (or with O(force)); the old
    key stays active until the successor is delivered. A successor made by a run that died before
    delivery gets a fresh key. With O(retire), retiring keys past their overlap are removed.
  - O(state=delivered) writes O(key) to O(delivery_file) and marks it delivered; its predecessor
    then retires and is accepted for O(overlap) more.
  - O(state=revoked) revokes every live key of O(name), or only O(key_id).
  - O(state=absent) removes every record of O(name).
  - A made key is returned once, in RV(key), and never stored. A task that can make a key
    (O(state=present) or O(state=rotated)) or passes O(key) B(must) set C(no_log=true).
  - In check mode nothing is written and no key is generated; the result says what would change.
options:
  registry:
    description: The registry file.
    type: path
    default: /etc/localguard/keys/registry.json
  signing_key:
    description: Ed25519 private key (PEM PKCS8, unencrypted) that signs the published key list.
    type: path
    default: /etc/localguard/keys/keylist-signing.key
  publish:
    description: Where the signed key list is published for gateways.
    type: path
    default: /var/www/localguard-keys/keylist.json
  create:
    description:
      - Create an empty registry if O(registry) is missing; otherwise a missing registry is an error.
      - Without O(name) only the registry is created and the key list published.
    type: bool
    default: false
  name:
    description:
      - Key name, C(^[a-z0-9][a-z0-9_-]{0,47}$). Keys are its generations, with ids C(<name>.<n>).
      - Required except with O(create) alone, or O(state=revoked) with O(key_id).
    type: str
  key_id:
    description: With O(state=revoked), revoke only this generation (C(<name>.<n>)).
    type: str
  state:
    description: What to do with the name's keys.
    type: str
    default: present
    choices: [present, rotated, delivered, revoked, absent]
  owner:
    description: Who holds the key (free text). Omitted keeps the current value (empty for a new name).
    type: str
  scopes:
    description:
      - Route classes the key may call; empty means every class. Omitted keeps the current value
        (every class for a new name).
    type: list
    elements: str
    choices: [chat, completions, embeddings, models, tokenize, health]
  engines:
    description: Engines the key may reach; empty means every engine. Omitted keeps the current value.
    type: list
    elements: str
    choices: [llama_cpp, ollama, tgi, vllm]
  rate:
    description:
      - Rate tier name known to the gateways (C(gateway_rate_tiers)); empty means the default per-key
        rate. Omitted keeps the current value.
    type: str
  max_age:
    description:
      - Age (C(<int><s|m|h|d>)) at which a key is due for rotation. A new key stays valid for
        O(max_age) plus O(overlap), so a rotation on the day it falls due has time to deliver.
      - Omitted, the name's newest key's value is kept; C(90d) for a new name.
    type: str
  overlap:
    description:
      - How long (C(<int><s|m|h|d>)) a replaced key keeps working after its successor was delivered.
      - Omitted, the value the key was made with (O(state=delivered)) or the name's newest key's;
        C(24h) for a new name.
    type: str
  force:
    description: With O(state=rotated), rotate even if the key is not due.
    type: bool
    default: false
  retire:
    description: With O(state=rotated), remove retiring keys whose overlap has ended.
    type: bool
    default: false
  key:
    description:
      - The plaintext key. Required with O(state=delivered) (the key RV(key) returned).
      - With O(state=present), imports an operator-supplied key (an C(lgk_) key with a valid
        checksum, or any 32+ printable characters) instead of generating one.
      - Never logged (C(no_log) in the argument spec).
    type: str
  delivery_file:
    description: With O(state=delivered), the file that receives the key (mode 0600, written atomically).
    type: path
requirements:
  - cryptography (Ed25519) on the registry host; Debian 12's C(python3-cryptography) is enough.
author: localguard contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Make sure team-a has a key
  localguard.hardening.localguard_api_key:
    name: team-a
    owner: Team A
    scopes: [chat, models]
    engines: [vllm]
  register: lg_key
  no_log: true

- name: Deliver it
  localguard.hardening.localguard_api_key:
    name: team-a
    state: delivered
    key: "{{ lg_key.key }}"
    delivery_file: /srv/handover/team-a.key
  when: lg_key.key is defined
  no_log: true

- name: Rotate team-a's key when due, dropping keys whose overlap has ended
  localguard.hardening.localguard_api_key:
    name: team-a
    state: rotated
    retire: true
  register: lg_rotated
  no_log: true

- name: Revoke one leaked generation
  localguard.hardening.localguard_api_key:
    state: revoked
    key_id: team-a.3
"""

RETURN = r"""
serial:
  description: The registry serial after the run (in check mode, after the changes that would be made).
  returned: always
  type: int
records:
  description: The name's records, without their hashes.
  returned: always
  type: list
  elements: dict
key:
  description: The plaintext of a key made by this run. Never stored; the task must use C(no_log).
  returned: when a key was made (state present or rotated, not in check mode)
  type: str
changes:
  description: What changed (or would change), as C(action) (create, import, replace, rotate,
    deliver, retire, revoke, remove, update) and C(id). Never holds a key.
  returned: always
  type: list
  elements: dict
  sample: [{"action": "rotate", "id": "team-a.4", "from": "team-a.3"}]
published:
  description: Whether the signed key list was (or in check mode would be) published.
  returned: always
  type: bool
delivery_file_changed:
  description: Whether O(delivery_file) was (or would be) written.
  returned: when state is delivered
  type: bool
would_create:
  description: In check mode, ids of keys that would be made; likewise C(would_rotate), C(would_replace),
    C(would_retire), C(would_remove), C(would_revoke), C(would_deliver), C(would_update), C(would_import).
  returned: in check mode, for each action that would happen
  type: list
  elements: str
"""

import contextlib
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.localguard.hardening.plugins.module_utils.localguard_apikeys import (
    CRYPTOGRAPHY_IMPORT_ERROR,
    ENGINES,
    ROUTE_CLASSES,
    ApiKeyError,
    KeySpec,
    Outcome,
    Registry,
    deliver,
    ensure_present,
    format_ts,
    load_registry,
    load_signing_key,
    make_spec,
    publish_keylist,
    published_serial,
    registry_lock,
    remove,
    revoke,
    rotate,
    save_registry,
    utcnow,
    write_delivery,
)

STATES = ["present", "rotated", "delivered", "revoked", "absent"]


def check_params(params: dict) -> None:
    state, name, key_id = params["state"], params["name"], params["key_id"]
    if key_id and state != "revoked":
        raise ApiKeyError("key_id is only used with state=revoked")
    if not name and not (state == "revoked" and key_id) and not (state == "present" and params["create"]):
        raise ApiKeyError("name is required (except with create alone, or state=revoked with key_id)")
    if params["key"] is not None and state not in ("present", "delivered"):
        raise ApiKeyError("key is only used with state=present (import) or state=delivered")


def change(registry: Registry, params: dict, spec: KeySpec, now, check: bool) -> Outcome:
    state, name = params["state"], params["name"]
    if state == "present":
        if not name:
            return Outcome(registry)  # create alone: the registry itself
        return ensure_present(registry, name, now, spec, key=params["key"], check=check)
    if state == "rotated":
        return rotate(registry, name, now, spec, force=params["force"], retire=params["retire"], check=check)
    if state == "delivered":
        return deliver(registry, name, params["key"], now, overlap=spec.overlap)
    if state == "revoked":
        return revoke(registry, now, name=name, key_id=params["key_id"])
    return remove(registry, name, now)


def run(params: dict, check: bool) -> dict:
    check_params(params)
    now = utcnow()
    spec = make_spec(
        params["owner"],
        params["scopes"],
        params["engines"],
        params["rate"],
        params["max_age"],
        params["overlap"],
    )
    registry_path = Path(params["registry"])
    publish_path = Path(params["publish"])
    signing_path = Path(params["signing_key"])
    # A dry run may come before the key_registry role has made the signing key.
    signing_key = load_signing_key(signing_path) if not check or signing_path.exists() else None
    warnings = []
    with contextlib.nullcontext() if check else registry_lock(registry_path):
        published = published_serial(publish_path, signing_key.public_key()) if signing_key else None
        existed = registry_path.exists()
        # A registry started again after a loss continues above the published serial, or every
        # gateway would refuse its lists as older than the one it holds.
        registry = load_registry(registry_path, create=params["create"], now=now, serial=published or 0)
        outcome = change(registry, params, spec, now, check)
        new = outcome.registry
        if not existed and not outcome.changed:
            new = Registry(new.serial + 1, format_ts(now), new.keys)
        registry_changed = outcome.changed or not existed
        must_publish = registry_changed or published is None or published < new.serial
        if published is not None and published > new.serial:
            warnings.append(
                f"the published key list has serial {published}, newer than the registry's {new.serial} "
                "(restored from a backup?): gateways refuse every list until the registry passes it"
            )
        delivery_changed = None
        if params["state"] == "delivered":
            # The file first: a run that dies here leaves the key undelivered, and a rerun writes
            # the same file again before marking it.
            delivery_changed = write_delivery(Path(params["delivery_file"]), params["key"], check)
        if not check:
            if registry_changed:
                save_registry(registry_path, new)
            if must_publish:
                publish_keylist(new, signing_key, publish_path, now)
    name = params["name"] or (params["key_id"] or "").rpartition(".")[0]
    result: dict = {
        "changed": registry_changed or must_publish or bool(delivery_changed),
        "serial": new.serial,
        "records": [r.public() for r in new.keys if r.name == name],
        "changes": [dict(c) for c in outcome.changes],
        "published": must_publish,
        "warnings": warnings,
    }
    if delivery_changed is not None:
        result["delivery_file_changed"] = delivery_changed
    if outcome.key is not None:
        result["key"] = outcome.key
    if check:
        for item in outcome.changes:
            result.setdefault(f"would_{item['action']}", []).append(item["id"])
        result["would_create_registry"] = not existed
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "registry": {"type": "path", "default": "/etc/localguard/keys/registry.json"},
            "signing_key": {"type": "path", "default": "/etc/localguard/keys/keylist-signing.key"},
            "publish": {"type": "path", "default": "/var/www/localguard-keys/keylist.json"},
            "create": {"type": "bool", "default": False},
            "name": {"type": "str"},
            "key_id": {"type": "str"},
            "state": {"type": "str", "default": "present", "choices": STATES},
            "owner": {"type": "str"},
            "scopes": {"type": "list", "elements": "str", "choices": list(ROUTE_CLASSES)},
            "engines": {"type": "list", "elements": "str", "choices": list(ENGINES)},
            "rate": {"type": "str"},
            "max_age": {"type": "str"},
            "overlap": {"type": "str"},
            "force": {"type": "bool", "default": False},
            "retire": {"type": "bool", "default": False},
            "key": {"type": "str", "no_log": True},
            "delivery_file": {"type": "path"},
        },
        required_if=[("state", "delivered", ("name", "key", "delivery_file"))],
        supports_check_mode=True,
    )
    if CRYPTOGRAPHY_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=str(CRYPTOGRAPHY_IMPORT_ERROR))
    try:
        result = run(module.params, module.check_mode)
    except ApiKeyError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg=f"localguard_api_key: {exc}")
    for warning in result.pop("warnings"):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
