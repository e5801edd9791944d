"""Time and peak memory of one evaluation of the Pulumi program under mocks, per stack.

Each stack runs in a fresh Python process, so the figures include what `pulumi preview` pays
on every run: importing Pulumi and the pulumi-azure-native submodules, validating the settings
and declaring every resource. Goal: under 3 s and 200 MB per stack. Each stack runs --repeat
times (fresh processes) and the median is shown: on a shared machine one run can be an outlier.
CPU seconds are shown beside wall seconds, as they depend less on what else the machine runs.
--users N lists N made-up data scientists in each stack's config (a workstation and, without a group, two role
assignments each), as a team would.

    .venv/bin/python benchmarks/program.py [--repeat N] [--users N] [STACK ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_SECONDS = 3.0
GOAL_MB = 200.0


def measure(stack: str, users: int = 0) -> dict:
    """Runs in the child process."""
    started, cpu_started = time.perf_counter(), time.process_time()
    sys.path.insert(0, str(ROOT / "tests"))
    from stack_harness import evaluate, stack_config, team_users, with_team

    imported = time.perf_counter()
    config = stack_config(stack)
    run = evaluate(stack, with_team(config, users=team_users(users)) if users else config)
    finished = time.perf_counter()
    return {
        "stack": stack,
        "resources": len(run.resources),
        "import_s": imported - started,
        "evaluate_s": finished - imported,
        "total_s": finished - started,
        "cpu_s": time.process_time() - cpu_started,
        # Linux reports ru_maxrss in KiB
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_child(stack: str, users: int = 0) -> dict:
    child = subprocess.run(
        [sys.executable, __file__, "--child", stack, str(users)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if child.returncode != 0:
        raise RuntimeError(f"{stack}: the program failed:\n{child.stderr}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stacks", nargs="*", help="default: every Pulumi.<stack>.yaml")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per stack (default 3)")
    parser.add_argument("--users", type=int, default=0, help="data scientists to list in each stack (default: as the file has)")
    args = parser.parse_args(argv)
    stacks = args.stacks or sorted(path.name.split(".")[1] for path in ROOT.glob("Pulumi.*.yaml"))
    print(f"median of {args.repeat} fresh processes per stack" + (f", {args.users} users listed in each" if args.users else ""))
    print(f"{'stack':<8}{'resources':>10}{'import s':>10}{'evaluate s':>12}{'total s':>9}{'cpu s':>7}{'peak MB':>9}  goal")
    met = True
    for stack in stacks:
        runs = [run_child(stack, args.users) for _ in range(args.repeat)]
        figures = {
            key: statistics.median(run[key] for run in runs) for key in runs[0] if key != "stack"
        }
        figures["peak_mb"] = max(run["peak_mb"] for run in runs)
        ok = figures["total_s"] < GOAL_SECONDS and figures["peak_mb"] < GOAL_MB
        met &= ok
        print(
            f"{stack:<8}{figures['resources']:>10.0f}{figures['import_s']:>10.2f}{figures['evaluate_s']:>12.2f}"
            f"{figures['total_s']:>9.2f}{figures['cpu_s']:>7.2f}{figures['peak_mb']:>9.0f}  {'met' if ok else 'MISSED'}"
        )
    print(f"goal: under {GOAL_SECONDS:g} s (median wall) and {GOAL_MB:g} MB (largest peak) per stack")
    return 0 if met else 2


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(measure(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0)))
    else:
        sys.exit(main(sys.argv[1:]))
