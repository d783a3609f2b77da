#!/usr/bin/env python3
"""Wall time of harden.yml on the lab: 1 host vs 5, first run vs idempotent rerun.

Each first run starts from a freshly recreated lab, so it does the full work. Also measures the
5-host rerun with SSH pipelining off, to show what pipelining buys. Prints times and the ratios
measured in this one run; it asserts nothing (numbers depend on the machine).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE = ROOT / ".venv" / "bin" / "ansible-playbook"


def lab_up() -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "lab.py"), "up"], check=True, cwd=ROOT)


def harden(limit: str | None = None, **env: str) -> float:
    cmd = [str(ANSIBLE), "harden.yml"] + (["--limit", limit] if limit else [])
    started = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    results: dict[str, float] = {}
    lab_up()
    results["1 host, first run"] = harden("gpu1")
    results["1 host, rerun"] = harden("gpu1")
    lab_up()
    results["5 hosts, first run"] = harden()
    results["5 hosts, rerun"] = harden()
    results["5 hosts, rerun, no pipelining"] = harden(ANSIBLE_PIPELINING="False")

    width = max(map(len, results))
    for name, seconds in results.items():
        print(f"{name:<{width}}  {seconds:6.1f} s")
    ratios = {
        "5 hosts / 1 host, first run": ("5 hosts, first run", "1 host, first run"),
        "5 hosts / 1 host, rerun": ("5 hosts, rerun", "1 host, rerun"),
        "rerun / first run, 5 hosts": ("5 hosts, rerun", "5 hosts, first run"),
        "pipelining off / on, 5-host rerun": ("5 hosts, rerun, no pipelining", "5 hosts, rerun"),
    }
    print()
    for name, (numerator, denominator) in ratios.items():
        print(f"{name:<34}  {results[numerator] / results[denominator]:.2f}x time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
