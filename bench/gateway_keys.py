#!/usr/bin/env python3
"""Requests/s and p50/p99 latency through the gateway with 3, 1,000 and 10,000 API keys on the host.

The key check reads one file, by-hash/<sha256(key)>, whatever the number of keys (GW-03): this
measures that claim. On one gateway host of the lab (default gpu2), the static key file is filled
with the bench's own key plus random hashes, merged into by-hash/ by `localguard-keys apply`, and
keep-alive GETs with the bench key are sent from the host's own network namespace (as
bench/gateway_vs_direct.py does). Prints the numbers and the 10,000 / 3 ratios measured in this
one run; asserts nothing. Needs the hardened lab (make lab harden). The rate limits are raised for
the run, and the static keys and limits set back after.

Usage: bench/gateway_keys.py [HOST] [--inventory inventories/lab/hosts.yml] [--requests 400]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import subprocess
import sys
from pathlib import Path

import yaml
from netns import run_in_netns

ROOT = Path(__file__).resolve().parent.parent

SIZES = (3, 1_000, 10_000)
STATIC = "/etc/localguard/gateway/static-keys.json"
CLI = "/usr/local/sbin/localguard-keys"
# A GET every engine's allowlist has, answered by the engine without work.
ROUTE = {"ollama": "/api/tags"}
DEFAULT_ROUTE = "/v1/models"
PROBE = r"""
import json, statistics, sys, time, httpx
args = json.load(sys.stdin)
latencies = []
headers = {"Authorization": "Bearer " + args["key"]}
with httpx.Client(verify=args["ca"], headers=headers, timeout=10) as client:
    client.get(args["url"])  # connection and TLS setup are not what is measured
    started = time.perf_counter()
    for _ in range(args["count"]):
        t0 = time.perf_counter()
        response = client.get(args["url"])
        latencies.append(time.perf_counter() - t0)
        if response.status_code != 200:
            raise SystemExit(f"{args['url']}: {response.status_code}")
    elapsed = time.perf_counter() - started
latencies.sort()
print(json.dumps({"rps": args["count"] / elapsed, "p50": statistics.median(latencies),
                  "p99": latencies[int(len(latencies) * 0.99) - 1]}))
"""


def on_host(container: str, *command: str, stdin: str | None = None) -> str:
    command = ["podman", "exec", "-i", container, *command]
    proc = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


def install_static(container: str, text: str) -> dict:
    """Replace the static key file (atomically, as the role leaves it) and merge it into by-hash/."""
    temp = STATIC + ".bench"
    write = f"cat >{temp} && chown root:lg-keys {temp} && chmod 0640 {temp}"
    on_host(container, "sh", "-c", write, stdin=text)
    on_host(container, "mv", temp, STATIC)
    return json.loads(on_host(container, "runuser", "-u", "lg-keys", "--", CLI, "apply"))


def static_with(key: str, count: int) -> str:
    """The bench key and count - 1 random hashes (nobody holds their keys)."""
    record = {"not_after": "2099-01-01T00:00:00Z", "status": "active", "scopes": [], "engines": [],
              "rate": ""}  # fmt: skip
    keys = {hashlib.sha256(key.encode()).hexdigest(): {"id": "bench-keys", **record}}
    for n in range(count - 1):
        keys[secrets.token_hex(32)] = {"id": f"bench-filler-{n}", **record}
    return json.dumps(keys, sort_keys=True)


def converge_gateway(host: str, *extra: str) -> None:
    command = [str(ROOT / ".venv/bin/ansible-playbook"), "harden.yml", "--tags", "gateway", "--limit", host]
    subprocess.run([*command, *extra], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host", nargs="?", default="gpu2", help="gateway host's inventory name")
    parser.add_argument("--inventory", default=str(ROOT / "inventories" / "lab" / "hosts.yml"))
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args(argv)

    inventory = yaml.safe_load(Path(args.inventory).read_text())
    spec = inventory["all"]["children"]["gpu_hosts"]["hosts"][args.host]
    container = spec["lab_container"]
    key = "lgk_" + secrets.token_urlsafe(32)
    payload = {
        "count": args.requests,
        "url": f"https://{spec['ansible_host']}:443{ROUTE.get(spec['localguard_engine'], DEFAULT_ROUTE)}",
        "key": key,
        "ca": str(ROOT / ".lab" / "pki" / "ca.crt"),
    }
    # The lab's per-key rate would answer 429: lift both limits for the run, then restore.
    unlimited = {"gateway_rate_per_key": "100000r/s", "gateway_rate_per_address": "100000r/s"}
    converge_gateway(args.host, "-e", json.dumps(unlimited))
    original = on_host(container, "cat", STATIC)
    results = {}
    try:
        for size in SIZES:
            applied = install_static(container, static_with(key, size))
            results[size] = {**run_in_netns(container, PROBE, payload), "files": applied["keys"]}
    finally:
        install_static(container, original)
        converge_gateway(args.host)

    print(f"{args.host}: {args.requests} sequential keep-alive GETs of {payload['url']} with a valid key")
    print(f"{'static keys':>11} {'by-hash':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for size, r in results.items():
        print(f"{size:>11} {r['files']:>8} {r['rps']:>8.0f} {r['p50'] * 1000:>8.2f} {r['p99'] * 1000:>8.2f}")
    many, few = results[SIZES[-1]], results[SIZES[0]]
    print()
    print(f"throughput {SIZES[-1]:,} / {SIZES[0]} keys: {many['rps'] / few['rps']:.2f}x")
    print(f"p50 latency {SIZES[-1]:,} / {SIZES[0]} keys: {many['p50'] / few['p50']:.2f}x")
    print(f"p99 latency {SIZES[-1]:,} / {SIZES[0]} keys: {many['p99'] / few['p99']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
