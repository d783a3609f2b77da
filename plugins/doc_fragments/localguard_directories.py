# Copyright (c) 2026, localguard contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The `directories` option shared by localguard_file and localguard_directories."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  directories:
    description:
      - Directories made (or given the mode, owner and group listed) in this call, in the order
        listed; a parent must exist or be listed before its children.
      - A new directory is created C(0700) and only then given its owner and mode, so it is never
        open to more accounts than it should be.
      - In check mode a directory still to be made, or an account still to be created, is reported
        as a change.
    type: list
    elements: dict
    suboptions:
      path:
        description: The directory.
        type: path
        required: true
      owner:
        description: The owning account.
        type: str
        required: true
      group:
        description: The owning group.
        type: str
        required: true
      mode:
        description: An octal mode, quoted (C("0750"), C("2750") for setgid).
        type: raw
        required: true
"""
