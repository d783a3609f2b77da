# Copyright (c) 2026, localguard contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Jinja filters over module_utils/localguard_engines: the one table of engine facts."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.localguard.hardening.plugins.module_utils.localguard_engines import (
    as_dict,
    denied_patterns,
    listen_args,
    listen_env,
    loopback_port,
    managed_env,
    media_args,
    problems,
    routes,
)


def _guard(function, *args):
    try:
        return function(*args)
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    def filters(self) -> dict:
        return {
            "localguard_engine_spec": lambda kind: _guard(as_dict, kind),
            "localguard_engine_listen_args": lambda kind, port: _guard(listen_args, kind, port),
            "localguard_engine_listen_env": lambda kind, port: _guard(listen_env, kind, port),
            "localguard_engine_routes": lambda kind: _guard(routes, kind),
            "localguard_engine_denied_patterns": lambda kind: _guard(denied_patterns, kind),
            "localguard_engine_port": lambda kind, port=0: _guard(loopback_port, kind, port),
            "localguard_engine_managed_env": lambda kind, port, model_dir: _guard(
                managed_env, kind, port, model_dir
            ),
            "localguard_engine_media_args": lambda kind, domains=None, local_path="": _guard(
                media_args, kind, domains, local_path
            ),
            "localguard_engine_problems": lambda kind, command, extra_env, domains=None, local_path="": (
                _guard(problems, kind, command, extra_env, domains, local_path)
            ),
        }
