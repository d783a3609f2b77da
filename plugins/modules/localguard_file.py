#!/usr/bin/python
# Copyright (c) 2026, localguard contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Ansible shell around localguard_file: put a rendered template or a file in place in one call."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: localguard_file
short_description: Put a template, a role file or inline content in place with one call per host
description:
  - Writes O(dest) with the given content, mode, owner and group, in one module call per host.
    M(ansible.builtin.template) and M(ansible.builtin.copy) make two calls even when nothing
    changed (a stat, then the file module) and transfer the file in a third when it did.
  - The action plugin renders O(template) (from the role's C(templates/)) or reads O(src) (from
    its C(files/)) on the controller; the content travels inside the call, never in its logged
    arguments.
  - New content is written to a temporary file beside O(dest), checked with O(validate), then
    renamed over O(dest), so a reader never sees half a file and a refused file never lands.
  - O(owner), O(group) and O(mode) are required, since a file written without them gets the run's
    account and umask.
  - The directories the file goes into can be made in the same call (O(directories)), which saves
    an M(ansible.builtin.file) call per directory.
extends_documentation_fragment:
  - localguard.hardening.localguard_directories
options:
  dest:
    description:
      - The file to write. Its directory must exist or be in O(directories); a --check run reports
        the file as new when the directory is still to be created.
    type: path
    required: true
  template:
    description: A Jinja2 template in the role's C(templates/), rendered on the controller.
    type: str
  src:
    description: A file in the role's C(files/), sent byte for byte.
    type: str
  content:
    description: The content itself.
    type: str
  payload:
    description:
      - Set by the action plugin, not by playbooks - the content to write, base64-encoded.
      - Kept out of the host's syslog and out of the task's shown arguments; the diff still shows
        the text.
    type: str
  owner:
    description: The owning account.
    type: str
    required: true
  group:
    description: The owning group.
    type: str
    required: true
  mode:
    description: An octal mode, quoted (C("0640")).
    type: raw
    required: true
  validate:
    description:
      - A command run on the new content before it replaces O(dest); C(%s) stands for the
        temporary file's path. A non-zero exit leaves O(dest) as it was and fails the task.
      - Not run in check mode.
    type: str
notes:
  - Exactly one of O(template), O(src) and O(content).
  - The task reports a change when a directory or the file changed.
  - Supports check mode and diff mode; files over 128 KiB or not UTF-8 are reported as changed
    without a diff. In check mode an owner or group that does not exist yet (an account an earlier
    task only predicted) reports the file as changed.
author: localguard contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: BL-TIME-02 | Point systemd-timesyncd at the inventory's NTP servers, its drop-in directory first
  localguard.hardening.localguard_file:
    template: timesyncd-localguard.conf.j2
    dest: /etc/systemd/timesyncd.conf.d/50-localguard.conf
    owner: root
    group: root
    mode: "0644"
    directories:
      - {path: /etc/systemd/timesyncd.conf.d, owner: root, group: root, mode: "0755"}

- name: FW-01 | Render the candidate ruleset, checked with nft -c
  localguard.hardening.localguard_file:
    template: localguard.nft.j2
    dest: /etc/localguard/nftables/candidate.nft
    owner: root
    group: root
    mode: "0640"
    validate: nft -c -f %s

- name: GW-02 | Install the API key hashes
  localguard.hardening.localguard_file:
    content: "{{ gateway_key_hashes | to_nice_json }}"
    dest: /etc/nginx/localguard/keys.json
    owner: root
    group: www-data
    mode: "0640"
  no_log: true
"""

RETURN = r"""
dest:
  description: The file written.
  returned: always
  type: str
content_changed:
  description: Whether the content was (or in check mode would be) replaced.
  returned: always
  type: bool
attributes_changed:
  description: Whether mode, owner or group of an existing file were (or would be) changed.
  returned: always
  type: bool
directories_changed:
  description: The directories of O(directories) that were (or would be) created or given new attributes.
  returned: always
  type: list
  elements: str
"""

import base64
import shlex
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.localguard.hardening.plugins.module_utils.localguard_file import (
    DIRECTORIES_SPEC,
    FileError,
    Wanted,
    diff_text,
    directory_diffs,
    ensure_directories,
    parse_mode,
    put,
    resolve,
    wanted_directories,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "dest": {"type": "path", "required": True},
            "template": {"type": "str"},
            "src": {"type": "str"},
            "content": {"type": "str"},
            "payload": {"type": "str", "no_log": True},
            "owner": {"type": "str", "required": True},
            "group": {"type": "str", "required": True},
            "mode": {"type": "raw", "required": True},
            "validate": {"type": "str"},
            "directories": DIRECTORIES_SPEC,
        },
        mutually_exclusive=[("template", "src", "content", "payload")],
        required_one_of=[("template", "src", "content", "payload")],
        supports_check_mode=True,
    )
    params = module.params
    if params["payload"] is None:
        module.fail_json(
            msg="template, src and content are read by the action plugin on the controller; call the action"
        )
    validate = params["validate"]
    if validate is not None and "%s" not in validate:
        module.fail_json(msg=f"validate must contain %s for the file to check: {validate!r}")

    def run_validate(path: Path) -> None:
        rc, out, err = module.run_command(validate.replace("%s", shlex.quote(str(path))))
        if rc != 0:
            said = (err or out).strip()
            raise FileError(f"validate refused the new content (rc {rc})" + (f": {said}" if said else ""))

    dest = Path(params["dest"])
    wanted_content = base64.b64decode(params["payload"])
    entries = params["directories"] or []
    try:
        made = ensure_directories(wanted_directories(entries, module.check_mode), module.check_mode)
        uid, gid = resolve(params["owner"], params["group"], module.check_mode)
        wanted = Wanted(wanted_content, parse_mode(params["mode"]), uid, gid)
        outcome = put(dest, wanted, module.check_mode, run_validate if validate else None)
    except (FileError, OSError) as exc:
        module.fail_json(msg=f"{dest}: {exc}")
    result = {
        "changed": outcome.changed or bool(made),
        "dest": str(dest),
        "content_changed": outcome.content_changed,
        "attributes_changed": outcome.attributes_changed,
        "directories_changed": [str(change.path) for change in made],
    }
    if module._diff:
        diffs = directory_diffs(made, entries)
        before, after = diff_text(outcome.before), diff_text(wanted_content)
        if outcome.content_changed and before is not None and after is not None:
            diffs.append(
                {"before": before, "after": after, "before_header": str(dest), "after_header": str(dest)}
            )
        if diffs:
            # Ansible's callbacks show a list of diffs one after another.
            result["diff"] = diffs[0] if len(diffs) == 1 else diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
