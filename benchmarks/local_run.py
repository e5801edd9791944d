"""The whole local flow (`python -m jobs run --local`), timed and its memory watched: wall time, and the peak
of the memory of its whole process tree (the flow, the prefork servers, its training processes, the scoring servers)
summed at each sample, beside the largest single process. Memory is each process's proportional set size (PSS):
processes forked from a prefork server share its libraries' pages, which their resident sizes would each count whole.

    .venv/bin/python benchmarks/local_run.py [--data-dir ../shared/data] [-- more options of `run --local`]

Runs in a throwaway work folder, so every job trains from scratch. Goals (issue 9): at most 4 minutes on
the 2-core machine, under 1.5 GB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_SECONDS = 0.2
GOAL_SECONDS, GOAL_BYTES = 4 * 60, 1.5e9


def tree_pss(process: psutil.Process) -> dict[str, int]:
    """Proportional set size of the process and each descendant (a shared page counts its share in each process
    that maps it), by a short form of its command line; a process a prefork server forked (its command line is the
    server's) by the log its output goes to, which names its job or server."""
    sizes = {}
    for member in [process, *process.children(recursive=True)]:
        try:
            words = [Path(word).name if "/" in word else word for word in member.cmdline()[:6]]
            if "prefork.py" in words:
                words = forked_label(member.pid) or words
            sizes[f"{member.pid} {' '.join(words)}"[:90]] = member.memory_full_info().pss
        except psutil.Error:  # gone meanwhile
            pass
    return sizes


def forked_label(pid: int) -> list[str] | None:
    """A forked process's label: the end of the log its output goes to (None for the prefork server itself, whose
    output is a pipe, or a process gone meanwhile)."""
    try:
        log = Path(os.readlink(f"/proc/{pid}/fd/1"))
    except OSError:
        return None
    return ["forked, log", str(log.relative_to(log.parents[min(3, len(log.parents) - 1)]))] if log.is_absolute() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after --: options passed to `run --local`")
    args = parser.parse_args()
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    with tempfile.TemporaryDirectory() as work:
        command = [sys.executable, "-m", "jobs", "run", "--local", "--data-dir", str(args.data_dir),
                   "--work-dir", work, *extra]  # fmt: skip
        log = Path(work, "run.log")
        started = time.perf_counter()
        with log.open("w") as output:
            process = psutil.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
            peak_sum = peak_one = 0
            at_peak: dict[str, int] = {}
            while process.poll() is None:
                sizes = tree_pss(process)
                if sum(sizes.values()) > peak_sum:
                    peak_sum, at_peak = sum(sizes.values()), sizes
                peak_one = max(peak_one, *sizes.values(), 0)
                time.sleep(SAMPLE_SECONDS)
        wall = time.perf_counter() - started
        lines = log.read_text().splitlines()
    # the flow's summary table: from its header line on
    headers = [number for number, line in enumerate(lines) if line.startswith("workload ")]
    print("\n".join(lines[headers[-1]:] if headers else lines[-30:]))
    print(f"\n{' '.join(command[1:4])} --local ... exit {process.returncode}")
    print(f"wall: {wall:.1f} s (goal <= {GOAL_SECONDS} s: {'met' if wall <= GOAL_SECONDS else 'MISSED'})")
    print(f"peak memory, whole process tree: {peak_sum / 1e9:.2f} GB (goal < {GOAL_BYTES / 1e9:g} GB: "
          f"{'met' if peak_sum < GOAL_BYTES else 'MISSED'}); largest single process {peak_one / 1e9:.2f} GB")  # fmt: skip
    print("at the peak:")
    for name, size in sorted(at_peak.items(), key=lambda item: -item[1]):
        print(f"  {size / 1e6:8.0f} MB  {name}")
    if process.returncode:
        sys.exit(process.returncode)


if __name__ == "__main__":
    main()
