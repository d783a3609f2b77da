#!/usr/bin/env python3
"""Lines/s one sender ships to the collector over RELP/TLS, and the gateway's req/s with log
shipping on vs off, measured in one run on the hardened lab.

1. Shipping rate: the sender (default gpu3) writes N numbered lines to rsyslog's own socket as fast
   as it can (journald's rate limit is not what is measured); the rate is N over the time from the
   first line sent to the last one stored on the collector (lab hosts share this machine's clock).
2. Gateway cost: sequential keep-alive GETs through the gateway of one host (default gpu2), from
   its own network namespace, with its rsyslog running (shipping on: every request's line is read
   and sent) and stopped (off), then on again. The lab's rate limits are lifted for the run.

Prints the numbers and ratios; asserts nothing. Needs the hardened lab (make lab harden).
Usage: bench/log_shipping.py [--lines 20000] [--requests 400] [--sender gpu3] [--gateway gpu2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import secrets
import sys
import time
from pathlib import Path

import yaml
from gateway_keys import DEFAULT_ROUTE, PROBE, ROUTE, converge_gateway, on_host
from netns import run_in_netns

ROOT = Path(__file__).resolve().parent.parent

COLLECTOR = "lg-logs"
STORE = "/var/log/localguard/hosts"
# Straight to rsyslog's imuxsock socket, in RFC 3164 form, as journald forwards lines to it.
FLOOD = r"""
import socket, sys, time
count, tag = int(sys.argv[1]), sys.argv[2]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.connect("/run/systemd/journal/syslog")
print(time.time())
for n in range(count):
    while True:
        try:
            sock.send(f"<14>{tag}: line {n:07d}".encode())
            break
        except BlockingIOError:
            time.sleep(0.001)
        except OSError:
            time.sleep(0.001)  # the socket's queue is full: rsyslog is behind
"""


def stored_count(host: str, tag: str) -> tuple[int, str]:
    out = on_host(COLLECTOR, "sh", "-c", f'grep -h -F \'"tag":"{tag}"\' {STORE}/{host}/*.log || true')
    lines = out.splitlines()
    return len(lines), (json.loads(lines[-1])["received"] if lines else "")


def shipping_rate(container: str, host: str, count: int) -> dict:
    tag = f"lg-bench-{secrets.token_hex(4)}"
    started = float(on_host(container, "python3", "-c", FLOOD, str(count), tag).strip())
    deadline = time.monotonic() + 300
    stored, last = 0, ""
    while time.monotonic() < deadline:
        stored, last = stored_count(host, tag)
        if stored >= count:
            break
        time.sleep(1)
    elapsed = datetime.datetime.fromisoformat(last).timestamp() - started if last else float("nan")
    return {"sent": count, "stored": stored, "seconds": elapsed, "lines_per_s": stored / elapsed}


def rsyslog(container: str, action: str) -> None:
    # syslog.socket would start rsyslog again at the host's next log line.
    on_host(container, "systemctl", action, "syslog.socket", "rsyslog.service")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--sender", default="gpu3")
    parser.add_argument("--gateway", default="gpu2")
    parser.add_argument("--inventory", default=str(ROOT / "inventories" / "lab" / "hosts.yml"))
    args = parser.parse_args(argv)
    hosts = yaml.safe_load(Path(args.inventory).read_text())["all"]["children"]["gpu_hosts"]["hosts"]

    ship = shipping_rate(hosts[args.sender]["lab_container"], args.sender, args.lines)

    spec = hosts[args.gateway]
    container = spec["lab_container"]
    key = json.loads((ROOT / ".lab" / "api-keys.json").read_text())[0]["key"]
    payload = {
        "count": args.requests,
        "url": f"https://{spec['ansible_host']}:443{ROUTE.get(spec['localguard_engine'], DEFAULT_ROUTE)}",
        "key": key,
        "ca": str(ROOT / ".lab" / "pki" / "ca.crt"),
    }
    converge_gateway(args.gateway, "-e", json.dumps({"gateway_rate_per_key": "100000r/s",
                                                     "gateway_rate_per_address": "100000r/s"}))  # fmt: skip
    runs = {}
    try:
        runs["on"] = run_in_netns(container, PROBE, payload)
        rsyslog(container, "stop")
        try:
            runs["off"] = run_in_netns(container, PROBE, payload)
        finally:
            rsyslog(container, "start")
        runs["on again"] = run_in_netns(container, PROBE, payload)
    finally:
        converge_gateway(args.gateway)

    print(f"{args.sender} -> collector over RELP/TLS: {ship['stored']} of {ship['sent']} lines stored in "
          f"{ship['seconds']:.2f} s = {ship['lines_per_s']:.0f} lines/s")  # fmt: skip
    print(f"{args.gateway}: {args.requests} sequential keep-alive GETs of {payload['url']}")
    print(f"{'shipping':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name, run in runs.items():
        print(f"{name:>9} {run['rps']:8.0f} {run['p50'] * 1000:8.2f} {run['p99'] * 1000:8.2f}")
    on = (runs["on"]["rps"] + runs["on again"]["rps"]) / 2
    print(f"gateway req/s with shipping on / off: {on / runs['off']['rps']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
