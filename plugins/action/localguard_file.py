# Copyright (c) 2026, localguard contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Controller side of localguard_file: render or read the content, then one module call."""

from __future__ import annotations

import base64
import json
import os

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.plugins.action import ActionBase
from ansible.template import trust_as_template

SOURCES = ("template", "src", "content")
# ansible.builtin.template's defaults, so a template renders the same under either.
TEMPLATE_OVERRIDES = {"trim_blocks": True, "lstrip_blocks": False, "newline_sequence": "\n"}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("dest", *SOURCES, "owner", "group", "mode", "validate", "directories"))

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        given = [name for name in SOURCES if args.get(name) is not None]
        if len(given) != 1:
            raise AnsibleActionFail(
                f"localguard_file needs exactly one of {', '.join(SOURCES)} (got {given or 'none'})"
            )
        source = given[0]
        value = args.pop(source)
        if source == "template":
            content = self._render(str(value), task_vars).encode("utf-8")
        elif source == "src":
            content = self._read(str(value))
        elif isinstance(value, (dict, list)):
            # As ansible.builtin.copy does: `content: "{{ data }}"` may template to a structure.
            content = json.dumps(value).encode("utf-8")
        else:
            content = str(value).encode("utf-8")
        args["payload"] = base64.b64encode(content).decode("ascii")
        result.update(
            self._execute_module(
                module_name=self._task.resolved_action, module_args=args, task_vars=task_vars
            )
        )
        return result

    def _find(self, kind: str, name: str) -> str:
        try:
            return self._find_needle(kind, name)
        except AnsibleError as exc:
            raise AnsibleActionFail(str(exc)) from exc

    def _render(self, name: str, task_vars: dict) -> str:
        path = self._find(kind="templates", name=name)
        searchpath = [*task_vars.get("ansible_search_path", []), self._loader._basedir, os.path.dirname(path)]
        searchpath = [entry for base in searchpath for entry in (os.path.join(base, "templates"), base)]
        templar = self._templar.copy_with_new_env(searchpath=searchpath, available_variables=task_vars)
        text = templar.template(
            trust_as_template(self._loader.get_text_file_contents(path)),
            escape_backslashes=False,
            overrides=TEMPLATE_OVERRIDES,
        )
        return "" if text is None else str(text)

    def _read(self, name: str) -> bytes:
        with open(self._find(kind="files", name=name), "rb") as handle:
            return handle.read()
