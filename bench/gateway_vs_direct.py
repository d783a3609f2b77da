#!/usr/bin/env python3
"""Requests/s and p50/p99 latency through the TLS gateway vs directly to the engine, on one host.

Runs inside gpu2's network namespace (the Ollama stand-in behind its gateway), so both paths
start from the same place: https://<gpu2>:443 with a valid API key (TLS, key hash lookup,
allowlist, rate limit, proxy) and http://127.0.0.1:11434 (the engine itself). Keep-alive
connections, sequential requests, a bounded count. Prints the numbers and the ratios measured
in this one run; asserts nothing. Needs the hardened lab (make lab harden). The per-key and
per-address rate limits are raised for the run (and set back after), so the bench measures the
gateway's cost rather than its policy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from netns import run_in_netns

ROOT = Path(__file__).resolve().parent.parent

REQUESTS = 400
PROBE = r"""
import json, statistics, sys, time, httpx
args = json.load(sys.stdin)
def measure(url, headers, verify):
    latencies = []
    with httpx.Client(verify=verify, headers=headers, timeout=10) as client:
        client.get(url)  # connection and TLS setup are not what is measured
        started = time.perf_counter()
        for _ in range(args["count"]):
            t0 = time.perf_counter()
            response = client.get(url)
            latencies.append(time.perf_counter() - t0)
            if response.status_code != 200:
                raise SystemExit(f"{url}: {response.status_code}")
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {"rps": args["count"] / elapsed, "p50": statistics.median(latencies),
            "p99": latencies[int(len(latencies) * 0.99) - 1]}
print(json.dumps({
    "gateway": measure(args["gateway"], {"Authorization": "Bearer " + args["key"]}, args["ca"]),
    "direct": measure(args["direct"], {}, True),
}))
"""


def converge_gateway(*extra: str) -> None:
    """Converge gpu2's gateway, with extra ansible-playbook arguments."""
    command = [str(ROOT / ".venv/bin/ansible-playbook"), "harden.yml", "--tags", "gateway", "--limit", "gpu2"]
    subprocess.run([*command, *extra], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def main() -> int:
    inventory = yaml.safe_load((ROOT / "inventories" / "lab" / "hosts.yml").read_text())
    address = inventory["all"]["children"]["gpu_hosts"]["hosts"]["gpu2"]["ansible_host"]
    records = json.loads((ROOT / ".lab" / "api-keys.json").read_text())
    key = next(record["key"] for record in records if record["id"] == "lab-valid")
    payload = {
        "count": REQUESTS,
        "gateway": f"https://{address}:443/api/tags",
        "direct": "http://127.0.0.1:11434/api/tags",
        "key": key,
        "ca": str(ROOT / ".lab" / "pki" / "ca.crt"),
    }
    # The lab's per-key rate (10r/s) would answer 429: lift both limits for the run, then restore.
    converge_gateway(
        "-e", json.dumps({"gateway_rate_per_key": "100000r/s", "gateway_rate_per_address": "100000r/s"})
    )
    try:
        results = run_in_netns("lg-gpu2", PROBE, payload)
    finally:
        converge_gateway()
    print(f"{'path':<8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}   ({REQUESTS} sequential GETs of /api/tags)")
    for name, r in results.items():
        print(f"{name:<8} {r['rps']:>8.0f} {r['p50'] * 1000:>8.2f} {r['p99'] * 1000:>8.2f}")
    gateway, direct = results["gateway"], results["direct"]
    print()
    print(f"throughput gateway / direct: {gateway['rps'] / direct['rps']:.2f}x")
    print(f"p50 latency gateway / direct: {gateway['p50'] / direct['p50']:.2f}x")
    print(f"p99 latency gateway / direct: {gateway['p99'] / direct['p99']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
