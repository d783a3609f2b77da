# Copyright (c) 2026, localguard contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Paths several roles share on a host, defined once.

The pki role writes the host's key, certificate, CA bundle and CRL under PKI_DIR; the gateway,
key registry, log collector and log shipping roles read them through the
`localguard.hardening.localguard_pki_paths` lookup.
"""

from __future__ import annotations

PKI_DIR = "/etc/localguard/pki"
PKI_PATHS = {
    "dir": PKI_DIR,
    "key": f"{PKI_DIR}/server.key",
    "cert": f"{PKI_DIR}/server.crt",
    "ca": f"{PKI_DIR}/ca.crt",
    "crl": f"{PKI_DIR}/crl.pem",
}
