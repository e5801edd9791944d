"""Import what the suite's jobs and servers import, so that their bytecode is compiled once before the suite runs.

    .venv/bin/python tests/warm_bytecode.py

`.ci/run` runs it on a fresh clone after the infra preview and the docs, while the suite's collection (which imports
what the test modules import) goes on: otherwise both test workers, and the prefork servers they start, compile the
same modules at once.
What it imports: the prefork servers' preload lists (jobs/local/server.py, jobs/local/target.py) and every job script of
jobs/src (Keras and its backend with train_mlp.py), but not score.py and batch_score.py, which load a model when imported.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIR = ROOT / "jobs" / "src"
LOADS_A_MODEL = ("score", "batch_score")

sys.path[:0] = [str(SOURCE_DIR), str(ROOT)]

from jobs.local.server import SCORING_STACK  # noqa: E402
from jobs.local.target import JOB_STACK  # noqa: E402

scripts = sorted(path.stem for path in SOURCE_DIR.glob("*.py") if path.stem not in LOADS_A_MODEL)
for name in (*SCORING_STACK, *JOB_STACK, *scripts):
    importlib.import_module(name)
