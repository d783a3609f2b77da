#!/usr/bin/env python3
"""Wall time of harden.yml on the lab: 1, 5 and 20 GPU hosts, first run and idempotent rerun.

For each size the lab is rebuilt with that many GPU hosts (`scripts/lab.py up --gpu-hosts N`),
beside its log collector, CA host and controller: a GPU host alone cannot get a certificate, so
every run is the whole of harden.yml, without --limit. The first run on the fresh hosts does the
full work; the rerun finds nothing to change (its changed count is printed: it should be 0).

Per-role times come from the JSON callback: each task's wall time, from its start to its last
host's result, summed per role, as ansible.posix.profile_roles adds them up; what no role's task
accounts for (fact gathering, the strategy between tasks) is listed apart. Prints the times and
the ratios measured in this one run (rerun / first run; 20 vs 5 GPU hosts); it asserts nothing,
since the numbers depend on the machine. Rebuilds the default lab at the end unless --keep-lab.
Takes about half an hour on 2 cores; never run it beside other runs against the lab.

--mitogen adds a third run per size: the rerun again with the Mitogen strategy (an optional
lever, not a dependency: `.venv/bin/pip install mitogen`), and its ratio to the plain rerun.
The pki role signs in one task per play (run_once), which the free strategy does not honour:
--strategy free would measure a run that signs once per host.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE = ROOT / ".venv" / "bin" / "ansible-playbook"
LAB = ROOT / "scripts" / "lab.py"
DEFAULT_SIZES = (1, 5, 20)
OUTSIDE_ROLES = "(no role: facts, plays' own tasks)"
GAPS = "(between tasks: strategy, includes)"
MITOGEN = "mitogen"


@dataclass
class Run:
    label: str
    wall: float
    hosts: int
    changed: int
    roles: dict[str, float] = field(default_factory=dict)


def lab_up(gpu_hosts: int | None) -> None:
    size = [] if gpu_hosts is None else ["--gpu-hosts", str(gpu_hosts)]
    subprocess.run([sys.executable, str(LAB), "up", *size], check=True, cwd=ROOT)


def _seconds(duration: dict) -> float:
    start, end = (dt.datetime.fromisoformat(duration[k].rstrip("Z")) for k in ("start", "end"))
    return (end - start).total_seconds()


def role_times(report: dict) -> dict[str, float]:
    """Seconds per role: the wall time of each of its tasks (handlers included), summed."""
    times: dict[str, float] = defaultdict(float)
    for play in report["plays"]:
        for task in play["tasks"]:
            name = task["task"]["name"]
            role = name.split(" : ", 1)[0].rsplit(".", 1)[-1] if " : " in name else OUTSIDE_ROLES
            if "end" in task["task"]["duration"]:
                times[role] += _seconds(task["task"]["duration"])
    return dict(times)


def failures(report: dict) -> list[str]:
    return [
        f"{task['task']['name']} on {host}: {result.get('msg', '')}"
        for play in report.get("plays", [])
        for task in play["tasks"]
        for host, result in task["hosts"].items()
        if result.get("failed") or result.get("unreachable")
    ]


def harden(label: str, env: dict[str, str]) -> Run:
    environment = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        **env,
    }
    started = time.perf_counter()
    proc = subprocess.run(
        [str(ANSIBLE), "harden.yml"], cwd=ROOT, env=environment, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        raise SystemExit(
            f"{label}: no JSON report from harden.yml (rc={proc.returncode}):\n{proc.stderr[-3000:]}"
        ) from None
    if proc.returncode != 0:
        detail = "\n".join(failures(report)[:20]) or proc.stderr[-3000:]
        raise SystemExit(f"{label}: harden.yml failed (rc={proc.returncode}):\n{detail}")
    stats = report["stats"]
    roles = role_times(report)
    roles[GAPS] = max(0.0, wall - sum(roles.values()))
    run = Run(label, wall, len(stats), sum(s.get("changed", 0) for s in stats.values()), roles)
    print(
        f"bench: {label}: {wall:.1f} s, {run.hosts} hosts, {run.changed} changed", file=sys.stderr, flush=True
    )
    return run


def print_report(sizes: list[int], runs: dict[tuple[int, str], Run]) -> None:
    print("harden.yml wall time (s)")
    header = ("GPU hosts", "hosts", "first run", "rerun", "rerun/first", "rerun changed")
    print("  ".join(header))
    for n in sizes:
        first, rerun = runs[n, "first"], runs[n, "rerun"]
        print(f"{n:>9}  {first.hosts:>5}  {first.wall:>9.1f}  {rerun.wall:>5.1f}  "
              f"{rerun.wall / first.wall:>10.2f}x  {rerun.changed:>13}")  # fmt: skip
    for n in sizes:
        if (n, MITOGEN) in runs:
            run = runs[n, MITOGEN]
            print(f"{n:>9} GPU hosts, rerun with Mitogen: {run.wall:.1f} s, {run.changed} changed")

    columns = [(n, kind) for n in sizes for kind in ("first", "rerun", MITOGEN) if (n, kind) in runs]
    roles = sorted(
        {role for run in runs.values() for role in run.roles} - {OUTSIDE_ROLES, GAPS},
        key=lambda role: -runs[sizes[-1], "first"].roles.get(role, 0.0),
    )
    width = max(len(r) for r in [*roles, OUTSIDE_ROLES, GAPS])
    print("\nPer role (s): task wall times summed, as ansible.posix.profile_roles counts them")
    print(f"{'':<{width}}  " + "  ".join(f"{f'{n} GPU {kind}':>15}" for n, kind in columns))
    for role in [*roles, OUTSIDE_ROLES, GAPS]:
        print(f"{role:<{width}}  " + "  ".join(f"{runs[c].roles.get(role, 0.0):>15.1f}" for c in columns))

    print("\nRatios (time)")
    ratios = [
        (f"rerun / first run, {n} GPU hosts", runs[n, "rerun"].wall / runs[n, "first"].wall) for n in sizes
    ]
    ratios += [
        (f"rerun with Mitogen / rerun, {n} GPU hosts", runs[n, MITOGEN].wall / runs[n, "rerun"].wall)
        for n in sizes
        if (n, MITOGEN) in runs
    ]
    largest, reference = sizes[-1], 5 if 5 in sizes else sizes[0]
    if largest != reference:
        for kind, name in (("first", "first runs"), ("rerun", "reruns")):
            ratio = runs[largest, kind].wall / runs[reference, kind].wall
            ratios.append((f"{largest} / {reference} GPU hosts, {name}", ratio))
    width = max(len(name) for name, _ in ratios)
    for name, ratio in ratios:
        print(f"{name:<{width}}  {ratio:.2f}x")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", maxsplit=1)[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--gpu-hosts",
        default=",".join(map(str, DEFAULT_SIZES)),
        metavar="N,N,...",
        help="lab sizes to measure, in GPU hosts (1-20 each; default %(default)s)",
    )
    parser.add_argument(
        "--keep-lab",
        action="store_true",
        help="leave the last size's lab up instead of rebuilding the default one",
    )
    parser.add_argument(
        "--strategy",
        help="Ansible strategy plugin for the first runs and reruns (ANSIBLE_STRATEGY; default linear)",
    )
    parser.add_argument(
        "--mitogen",
        action="store_true",
        help="also rerun each size with the Mitogen strategy (pip install mitogen; optional)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every run's numbers to FILE")
    args = parser.parse_args(argv)
    try:
        args.sizes = sorted({int(n) for n in args.gpu_hosts.split(",")})
    except ValueError:
        parser.error(f"--gpu-hosts takes numbers separated by commas, not {args.gpu_hosts!r}")
    if not all(1 <= n <= 20 for n in args.sizes):
        parser.error("--gpu-hosts: each size must be 1-20")
    return args


def mitogen_env() -> dict[str, str]:
    """The Mitogen strategy for one run, if Mitogen is importable beside Ansible."""
    try:
        import ansible_mitogen  # noqa: PLC0415 - optional, only with --mitogen
    except ImportError:
        raise SystemExit("--mitogen needs Mitogen beside Ansible: .venv/bin/pip install mitogen") from None
    strategies = Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"
    return {"ANSIBLE_STRATEGY_PLUGINS": str(strategies), "ANSIBLE_STRATEGY": "mitogen_linear"}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = {"ANSIBLE_STRATEGY": args.strategy} if args.strategy else {}
    mitogen = mitogen_env() if args.mitogen else None
    runs: dict[tuple[int, str], Run] = {}
    try:
        for n in args.sizes:
            lab_up(n)
            runs[n, "first"] = harden(f"{n} GPU hosts, first run", env)
            runs[n, "rerun"] = harden(f"{n} GPU hosts, rerun", env)
            if mitogen:
                runs[n, MITOGEN] = harden(f"{n} GPU hosts, rerun with Mitogen", mitogen)
    finally:
        if not args.keep_lab:
            lab_up(None)
    print_report(args.sizes, runs)
    if args.json:
        data = [{"gpu_hosts": n, "run": kind, **vars(run)} for (n, kind), run in runs.items()]
        args.json.write_text(
            json.dumps({"strategy": args.strategy or "linear", "runs": data}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
