#!/usr/bin/env python3
"""Load time of localguard's address sets at 10, 1,000 and 10,000 CIDRs.

Builds each set with the firewall role's own validation code (module_utils/localguard_nftables),
loads a table holding it and one rule that uses it with `nft -f` inside a scratch network
namespace (so the machine's own ruleset is never touched), and prints the load times and the
throughput ratios measured in this one run. Needs root and nft. Asserts nothing.
"""

from __future__ import annotations

import ipaddress
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ansible_collections.localguard.hardening.plugins.module_utils.localguard_nftables import address_set

SIZES = (10, 1_000, 10_000)
REPEATS = 5


def cidrs(count: int, seed: int = 42) -> list[str]:
    """Distinct /24s and /32s spread over 10.0.0.0/8 (deterministic)."""
    rng = random.Random(seed)
    picked: set[str] = set()
    while len(picked) < count:
        base = ipaddress.IPv4Address(0x0A000000 + rng.randrange(1 << 24))
        prefix = rng.choice((24, 32))
        picked.add(str(ipaddress.ip_network(f"{base}/{prefix}", strict=False)))
    return sorted(picked)


def table(members: list[str]) -> str:
    parsed = address_set("clients", members, "bench")
    elements = ",\n".join(f"            {m}" for m in parsed.v4)
    return f"""table inet localguard_bench
delete table inet localguard_bench
table inet localguard_bench {{
    set clients_v4 {{
        type ipv4_addr
        flags interval
        auto-merge
        elements = {{
{elements}
        }}
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        ip saddr @clients_v4 tcp dport 443 counter accept
    }}
}}
"""


def load_seconds(netns: str, ruleset: Path) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter()
        subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", str(ruleset)], check=True)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> int:
    netns = f"lgbench{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results = {}
            for size in SIZES:
                ruleset = Path(tmp) / f"{size}.nft"
                started = time.perf_counter()
                ruleset.write_text(table(cidrs(size)))
                render = time.perf_counter() - started
                results[size] = (render, load_seconds(netns, ruleset))
    finally:
        subprocess.run(["ip", "netns", "delete", netns], check=False)

    print(f"{'CIDRs':>7}  {'validate+render':>15}  {'nft -f (best of 5)':>18}  {'CIDRs/s loaded':>14}")
    for size, (render, load) in results.items():
        print(f"{size:>7}  {render * 1000:>12.1f} ms  {load * 1000:>15.1f} ms  {size / load:>14,.0f}")
    small, large = SIZES[0], SIZES[-1]
    print()
    print(f"load time {large} / {small} CIDRs:          {results[large][1] / results[small][1]:.1f}x")
    throughput = (large / results[large][1]) / (small / results[small][1])
    print(f"throughput {large} / {small} CIDRs (CIDRs/s): {throughput:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
