"""Load-test the scoring endpoint on 127.0.0.1: jobs/src/score.py against a naive scoring script
(benchmarks/naive_score.py: JSON -> DataFrame -> predict), in one run, on the same azmlinfsrv settings and
the same model. Prints requests/s and p50/p99 latency for 1-row requests at N concurrent clients, and
rows/s for 1,000-row requests.

    python benchmarks/serving.py                      # housing's latest model in the local registry (.local/)
    python benchmarks/serving.py --workload bank-marketing   # another workload's latest model
    python benchmarks/serving.py --model DIR          # any MLflow model folder
    python benchmarks/serving.py --train ../shared/data/housing.csv   # train one with train.py first

Goals: score.py serves at least 3x the naive script's requests/s on 1-row requests; p99 under 10 ms
at 4 concurrent clients.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jobs import bench  # noqa: E402
from jobs.local.server import SCORING_SCRIPT, LocalServer  # noqa: E402
from jobs.local.target import LocalTarget  # noqa: E402
from jobs.workloads import load_workloads  # noqa: E402

NAIVE_SCRIPT = Path(__file__).with_name("naive_score.py")


def request_bodies(model_dir: Path, rows: int) -> tuple[bytes, bytes]:
    """A 1-row and a `rows`-row request from the model's own input example, cycled."""
    import mlflow.models

    folder = min(model_dir.rglob("MLmodel"), key=lambda path: len(path.parts)).parent
    example = mlflow.models.Model.load(str(folder)).load_input_example(str(folder))
    records = json.loads(example.to_json(orient="records"))  # NaN -> null
    batch = [records[i % len(records)] for i in range(rows)]
    return json.dumps({"data": records[:1]}).encode(), json.dumps({"data": batch}).encode()


def load(port: int, body: bytes, rows: int, clients: int, requests: int) -> bench.Result:
    """`clients` threads posting `body` one request after another: the load test of `python -m jobs bench`
    (the server's sync workers close every connection, so each request opens one)."""
    result = bench.run(f"http://127.0.0.1:{port}/score", {}, body, rows, clients, requests, duration_s=math.inf)
    if result.errors:
        raise SystemExit(f"{result.requests - result.succeeded} request(s) failed: {result.report()}")
    return result


def measure(script: Path, model_dir: Path, args, bodies: tuple[bytes, bytes], logs: Path) -> dict:
    server = LocalServer(model_dir, 0, logs / f"{script.stem}.log", args.workers, script).start()
    try:
        single, batch = bodies
        load(server.port, single, 1, args.clients, 25 * args.clients)  # warm-up: imports, caches, first-call paths
        one_row = load(server.port, single, 1, args.clients, args.requests)
        rows = load(server.port, batch, args.rows, args.clients, args.batch_requests)
        return {"requests_per_s": one_row.requests_per_s, "p50_ms": one_row.percentile_ms(50),
                "p99_ms": one_row.percentile_ms(99), "rows_per_s": rows.rows_per_s}  # fmt: skip
    finally:
        server.stop()


def trained_model(data: Path, work: Path) -> Path:
    output = work / "model-root" / "1"
    env = {**os.environ, "MLFLOW_TRACKING_URI": (work / "mlruns").as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true"}
    subprocess.run(
        [sys.executable, "train.py", "--data", str(data.resolve()), "--target", "median_house_value",
         "--task", "regression", "--output", str(output)],
        cwd=SCORING_SCRIPT.parent, env=env, check=True,
    )  # fmt: skip
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", type=Path, help="an MLflow model folder (or a folder above one)")
    source.add_argument("--train", type=Path, metavar="CSV", help="train a model on this housing CSV first")
    parser.add_argument("--workload", default="housing", help="whose latest registered model (default: housing)")
    parser.add_argument("--work-dir", type=Path, default=ROOT / ".local", help="local registry (default: .local/)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="azmlinfsrv WORKER_COUNT")
    parser.add_argument("--requests", type=int, default=2000, help="1-row requests per script")
    parser.add_argument("--rows", type=int, default=1000, help="rows per batch request")
    parser.add_argument("--batch-requests", type=int, default=40, help="batch requests per script")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        if args.train:
            model_dir = trained_model(args.train, work)
        elif args.model:
            model_dir = args.model.resolve()
        else:
            target = LocalTarget(work, args.work_dir)
            (workload,) = load_workloads([args.workload])
            model = target.latest_model(workload)
            model_dir = args.work_dir.resolve() / "models" / model.name / model.version
            if not model_dir.is_dir():
                raise SystemExit(f"{model_dir} is missing: run `python -m jobs run --local` (or pass --model/--train)")
        bodies = request_bodies(model_dir, args.rows)
        print(f"model: {model_dir}\nworkers: {args.workers}, clients: {args.clients}, "
              f"{args.requests} 1-row requests, {args.batch_requests} x {args.rows}-row requests, cores: {os.cpu_count()}")  # fmt: skip
        results = {script.name: measure(script, model_dir, args, bodies, work) for script in (NAIVE_SCRIPT, SCORING_SCRIPT)}

    print(f"\n{'script':<16}{'1-row req/s':>12}{'p50 ms':>9}{'p99 ms':>9}{f'{args.rows}-row rows/s':>18}")
    for name, figures in results.items():
        print(f"{name:<16}{figures['requests_per_s']:>12,.0f}{figures['p50_ms']:>9.2f}{figures['p99_ms']:>9.2f}"
              f"{figures['rows_per_s']:>18,.0f}")  # fmt: skip
    fast, naive = results[SCORING_SCRIPT.name], results[NAIVE_SCRIPT.name]
    speedup = fast["requests_per_s"] / naive["requests_per_s"]
    print(f"\nscore.py / naive, 1-row requests/s: {speedup:.1f}x (goal >= 3x: {'met' if speedup >= 3 else 'missed'})")
    print(f"score.py p99 at {args.clients} clients: {fast['p99_ms']:.2f} ms "
          f"(goal < 10 ms: {'met' if fast['p99_ms'] < 10 else 'missed'})")  # fmt: skip


if __name__ == "__main__":
    main()
