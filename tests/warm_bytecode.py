"""Import what the suite's jobs, servers and stack evaluations import, so that their bytecode is compiled once before
the suite runs.

    .venv/bin/python tests/warm_bytecode.py jobs|infra

`.ci/run` runs it on a fresh clone beside the suite's collection (which imports what the test modules import), the
infra preview and the docs: otherwise both test workers, and the prefork servers they start, compile the same modules
at once.
- jobs: the prefork servers' preload lists (jobs/local/server.py, jobs/local/target.py) and every job script of
  jobs/src (Keras and its backend with train_mlp.py), but not score.py and batch_score.py, which load a model when
  imported;
- infra: the Pulumi program of one stack under mocks (tests/stack_harness.py), which imports the resource modules of
  every stack: about 900 modules of pulumi_azure_native and pulumi_azuread, the test modules import none of them.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIR = ROOT / "jobs" / "src"
LOADS_A_MODEL = ("score", "batch_score")


def jobs() -> None:
    from jobs.local.server import SCORING_STACK
    from jobs.local.target import JOB_STACK

    sys.path.insert(0, str(SOURCE_DIR))
    scripts = sorted(path.stem for path in SOURCE_DIR.glob("*.py") if path.stem not in LOADS_A_MODEL)
    for name in (*SCORING_STACK, *JOB_STACK, *scripts):
        importlib.import_module(name)


def infra() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from stack_harness import run_stack

    run_stack("dev")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    parts = {"jobs": jobs, "infra": infra}
    if len(sys.argv) != 2 or sys.argv[1] not in parts:
        sys.exit(f"usage: {Path(__file__).name} {'|'.join(parts)}")
    parts[sys.argv[1]]()
