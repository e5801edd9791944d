"""What each dependency group installs from uv.lock, on disk and in time, with a cold and a warm package cache.

    python benchmarks/install.py [--groups infra stage local dev all]

For each group (pyproject.toml), a fresh virtual environment with that group alone (`uv sync --locked
--no-default-groups --group G`; `all`: every group, what `make test` installs): first with an empty uv cache, so every
wheel is downloaded (cold), then into another fresh environment with the cache that filled (warm). The size is the
environment's on disk; uv's cache lives outside it. Goal: the `infra` environment, which `pulumi preview` and
`pulumi up` get, at most 650 MB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GROUPS = ("infra", "stage", "local", "dev", "all")
INFRA_GOAL_MB = 650


def uv() -> str:
    found = shutil.which("uv") or ROOT / ".uv" / "bin" / "uv"
    if not Path(found).exists():
        sys.exit("no uv: run `make uv` first (it installs uv from PyPI into .uv/)")
    return str(found)


def size_mb(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink()) / 1e6


def install(group: str, cache: Path, into: Path) -> float:
    """Seconds to sync `group` into a new environment at `into`, with uv's cache at `cache`."""
    selection = ["--all-groups"] if group == "all" else ["--no-default-groups", "--group", group]
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(into), "UV_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    subprocess.run([uv(), "sync", "--locked", "--quiet", *selection], cwd=ROOT, env=env, check=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", nargs="+", choices=GROUPS, default=list(GROUPS))
    args = parser.parse_args(argv)
    print(f"{'group':6}  {'size MB':>8}  {'cold s':>7}  {'warm s':>7}")
    for group in args.groups:
        with tempfile.TemporaryDirectory(prefix=f"install-{group}-") as scratch:
            cache = Path(scratch) / "cache"
            cold = install(group, cache, Path(scratch) / "cold")
            warm = install(group, cache, Path(scratch) / "warm")
            size = size_mb(Path(scratch) / "warm")
        goal = f"  goal at most {INFRA_GOAL_MB} MB: {'met' if size <= INFRA_GOAL_MB else 'missed'}" if group == "infra" else ""
        print(f"{group:6}  {size:8.0f}  {cold:7.1f}  {warm:7.1f}{goal}", flush=True)


if __name__ == "__main__":
    main()
