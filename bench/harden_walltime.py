#!/usr/bin/env python3
"""Wall time of harden.yml on the lab: 1, 5 and 20 GPU hosts, first run and idempotent rerun.

For each size the lab is rebuilt with that many GPU hosts (`scripts/lab.py up --gpu-hosts N`),
beside its log collector, CA host and controller: a GPU host alone cannot get a certificate, so
every run is the whole of harden.yml, without --limit. The first run on the fresh hosts does the
full work; the rerun finds nothing to change (its changed count is printed: it should be 0).

Per-role times come from the JSON callback: each task's wall time, from its start to its last
host's result, summed per role, as ansible.posix.profile_roles adds them up; what no role's task
accounts for (fact gathering, the strategy between tasks) is listed apart. So do the module runs
per host (each task or loop item that ran a module on the host, not skipped), which set the floor
of a run's time. Prints the times and
the ratios measured in this one run (rerun / first run; 20 vs 5 GPU hosts); it asserts nothing,
since the numbers depend on the machine. Rebuilds the default lab at the end unless --keep-lab.
Takes about half an hour on 2 cores; never run it beside other runs against the lab.

--mitogen measures each size again with the Mitogen strategy (installed by `make bootstrap`,
optional for operators: `pip install mitogen`): the lab rebuilt, a first run and a rerun, and
their ratios to the runs on Ansible's own strategy.
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
FIRST, RERUN = "first", "rerun"
MITOGEN_FIRST, MITOGEN_RERUN = "Mitogen first", "Mitogen rerun"


@dataclass
class Run:
    label: str
    wall: float
    hosts: int
    changed: int
    roles: dict[str, float] = field(default_factory=dict)
    module_runs: dict[str, int] = field(default_factory=dict)


def lab_up(gpu_hosts: int | None) -> None:
    size = [] if gpu_hosts is None else ["--gpu-hosts", str(gpu_hosts)]
    subprocess.run([sys.executable, str(LAB), "up", *size], check=True, cwd=ROOT)


def _instant(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.rstrip("Z"))


def role_times(report: dict) -> dict[str, float]:
    """Seconds per role: the wall time of each of its tasks (handlers included), summed. The
    Mitogen strategy reports a task once per host, so a task's time runs from its first host's
    start to its last host's end."""
    # (play number, task id) -> [name, first start, last end]
    spans: dict[tuple[int, str], list] = {}
    for number, play in enumerate(report["plays"]):
        for task in play["tasks"]:
            name, duration = task["task"]["name"], task["task"]["duration"]
            if "end" not in duration:
                continue
            start, end = _instant(duration["start"]), _instant(duration["end"])
            span = spans.setdefault((number, task["task"].get("id") or name), [name, start, end])
            span[1:] = [min(span[1], start), max(span[2], end)]
    times: dict[str, float] = defaultdict(float)
    for name, start, end in spans.values():
        role = name.split(" : ", 1)[0].rsplit(".", 1)[-1] if " : " in name else OUTSIDE_ROLES
        times[role] += (end - start).total_seconds()
    return dict(times)


# Actions that run on the controller only: no module travels to the host.
CONTROLLER_ACTIONS = {
    f"{prefix}{name}"
    for prefix in ("", "ansible.builtin.")
    for name in ("debug", "set_fact", "assert", "fail", "include_vars", "meta", "add_host", "group_by")
}


def module_runs(report: dict) -> dict[str, int]:
    """Per host: the tasks and loop items that ran a module there (not skipped)."""
    counts: dict[str, int] = defaultdict(int)
    for play in report["plays"]:
        for task in play["tasks"]:
            for host, result in task["hosts"].items():
                if result.get("action") in CONTROLLER_ACTIONS or result.get("skipped"):
                    continue
                items = result.get("results")
                counts[host] += sum(not item.get("skipped") for item in items) if items else 1
    return dict(counts)


def host_kind(name: str) -> str:
    """gpu3 -> gpu: the lab's hosts of a kind are numbered."""
    return name.rstrip("0123456789")


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
    changed = sum(s.get("changed", 0) for s in stats.values())
    run = Run(label, wall, len(stats), changed, roles, module_runs(report))
    print(
        f"bench: {label}: {wall:.1f} s, {run.hosts} hosts, {run.changed} changed,"
        f" {sum(run.module_runs.values())} module runs",
        file=sys.stderr,
        flush=True,
    )
    return run


def print_report(sizes: list[int], runs: dict[tuple[int, str], Run]) -> None:
    print("harden.yml wall time (s)")
    header = ("GPU hosts", "hosts", "strategy", "first run", "rerun", "rerun/first", "rerun changed")
    print("  ".join(header))
    for n in sizes:
        for strategy, first, rerun in (("linear", FIRST, RERUN), ("Mitogen", MITOGEN_FIRST, MITOGEN_RERUN)):
            if (n, first) not in runs:
                continue
            one, two = runs[n, first], runs[n, rerun]
            print(f"{n:>9}  {one.hosts:>5}  {strategy:>8}  {one.wall:>9.1f}  {two.wall:>5.1f}  "
                  f"{two.wall / one.wall:>10.2f}x  {two.changed:>13}")  # fmt: skip

    kinds = (FIRST, RERUN, MITOGEN_FIRST, MITOGEN_RERUN)
    columns = [(n, kind) for n in sizes for kind in kinds if (n, kind) in runs]
    roles = sorted(
        {role for run in runs.values() for role in run.roles} - {OUTSIDE_ROLES, GAPS},
        key=lambda role: -runs[sizes[-1], FIRST].roles.get(role, 0.0),
    )
    width = max(len(r) for r in [*roles, OUTSIDE_ROLES, GAPS])
    print("\nPer role (s): task wall times summed, as ansible.posix.profile_roles counts them")
    print(f"{'':<{width}}  " + "  ".join(f"{f'{n} GPU {kind}':>19}" for n, kind in columns))
    for role in [*roles, OUTSIDE_ROLES, GAPS]:
        print(f"{role:<{width}}  " + "  ".join(f"{runs[c].roles.get(role, 0.0):>19.1f}" for c in columns))

    print("\nModule runs per host (tasks and loop items that ran a module there)")
    kinds_of_host = sorted({host_kind(host) for run in runs.values() for host in run.module_runs})
    print(f"{'':<{width}}  " + "  ".join(f"{f'{n} GPU {kind}':>19}" for n, kind in columns))
    for kind_of_host in kinds_of_host:
        # The most any host of the kind ran: the GPU hosts differ only by their engine.
        most = [
            max((v for h, v in runs[c].module_runs.items() if host_kind(h) == kind_of_host), default=0)
            for c in columns
        ]
        print(f"{kind_of_host + ' (most)':<{width}}  " + "  ".join(f"{v:>19}" for v in most))
    print(
        f"{'all hosts':<{width}}  " + "  ".join(f"{sum(runs[c].module_runs.values()):>19}" for c in columns)
    )

    print("\nRatios (time)")
    ratios = [(f"rerun / first run, {n} GPU hosts", runs[n, RERUN].wall / runs[n, FIRST].wall) for n in sizes]
    for n in sizes:
        if (n, MITOGEN_FIRST) in runs:
            first, rerun = runs[n, MITOGEN_FIRST].wall, runs[n, MITOGEN_RERUN].wall
            ratios += [
                (f"Mitogen rerun / Mitogen first run, {n} GPU hosts", rerun / first),
                (f"Mitogen / linear first run, {n} GPU hosts", first / runs[n, FIRST].wall),
                (f"Mitogen / linear rerun, {n} GPU hosts", rerun / runs[n, RERUN].wall),
            ]
    largest, reference = sizes[-1], 5 if 5 in sizes else sizes[0]
    if largest != reference:
        for kind in kinds:
            if (largest, kind) in runs:
                ratio = runs[largest, kind].wall / runs[reference, kind].wall
                ratios.append((f"{largest} / {reference} GPU hosts, {kind} runs", ratio))
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
        help="also measure each size with the Mitogen strategy: lab rebuilt, first run and rerun",
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
        raise SystemExit("--mitogen needs Mitogen beside Ansible: make bootstrap") from None
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
            runs[n, FIRST] = harden(f"{n} GPU hosts, first run", env)
            runs[n, RERUN] = harden(f"{n} GPU hosts, rerun", env)
            if mitogen:
                lab_up(n)
                runs[n, MITOGEN_FIRST] = harden(f"{n} GPU hosts, first run with Mitogen", mitogen)
                runs[n, MITOGEN_RERUN] = harden(f"{n} GPU hosts, rerun with Mitogen", mitogen)
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
