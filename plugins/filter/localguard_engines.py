"""Jinja filters over module_utils/localguard_engines: the one table of engine facts."""

from __future__ import annotations

import sys
from pathlib import Path

from ansible.errors import AnsibleFilterError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "module_utils"))
from localguard_engines import as_dict, listen_args, listen_env, routes  # noqa: E402


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
        }
