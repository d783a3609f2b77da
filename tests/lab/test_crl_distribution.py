"""PKI-09 from the client lab host: the CRL distribution point in a gateway's certificate is one a
client can actually fetch through the firewall, and what it serves is signed by the fleet's CA."""

from __future__ import annotations

import pytest
from netns import run_in_netns
from playbook_runner import ROOT

pytestmark = pytest.mark.lab
CA_BUNDLE = ROOT / ".lab" / "pki" / "ca.crt"

CDP_PROBE = r"""
import json, ssl, sys, urllib.request
from cryptography import x509
args = json.load(sys.stdin)
pem = ssl.get_server_certificate((args["host"], 443), timeout=10)
cert = x509.load_pem_x509_certificate(pem.encode())
cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
urls = [name.value for point in cdp for name in point.full_name]
with urllib.request.urlopen(urls[0], timeout=10) as response:
    crl = x509.load_der_x509_crl(response.read())
ca = x509.load_pem_x509_certificate(open(args["ca"], "rb").read())
print(json.dumps({"urls": urls, "signed": crl.is_signature_valid(ca.public_key()),
                  "issuer_is_ca": crl.issuer == ca.subject,
                  "revoked": [format(r.serial_number, "X") for r in crl]}))
"""


def test_pki_09_client_fetches_gpu1_cdp_and_the_crl_is_signed_by_the_ca(lab_hosts):
    result = run_in_netns(
        "lg-client", CDP_PROBE, {"host": lab_hosts["gpu1"]["ansible_host"], "ca": str(CA_BUNDLE)}
    )
    assert result["urls"] == [f"http://{lab_hosts['ca1']['ansible_host']}/crl.der"]
    assert result["signed"] and result["issuer_is_ca"]
