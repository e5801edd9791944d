"""Load-test the scoring endpoint on 127.0.0.1: jobs/src/score.py against a naive scoring script
(benchmarks/naive_score.py: JSON -> DataFrame -> predict), in one run, on the same azmlinfsrv settings and
the same model. Prints requests/s and p50/p99 latency for 1-row requests at N concurrent clients, and
rows/s for 1,000-row requests. Then score.py with data collection off and on (its inputs and outputs sent to
a jobs/local/collector.py LocalCollector, in a process of its own as Azure's sidecar is, writing to a
temporary folder), the same load, checking that every row sent was collected, and what collection costs per
request, part by part.

    python benchmarks/serving.py                      # housing's latest model in the local registry (.local/)
    python benchmarks/serving.py --workload bank-marketing   # another workload's latest model
    python benchmarks/serving.py --model DIR          # any MLflow model folder
    python benchmarks/serving.py --train ../shared/data/housing.csv   # train one with train.py first
    python benchmarks/serving.py --no-naive --rounds 3   # collection off/on/off/on/off/on/off only

Goals: score.py serves at least 3x the naive script's requests/s on 1-row requests; p99 under 10 ms
at 4 concurrent clients; collecting every request raises score.py's 1-row p50 by at most 10%.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
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


def measure(script: Path, model_dir: Path, args, bodies: tuple[bytes, bytes], logs: Path, collector=None,
            name: str = "") -> dict:  # fmt: skip
    log = logs / f"{name or script.stem}.log"
    server = LocalServer(model_dir, 0, log, args.workers, script, collector=collector).start()
    try:
        single, batch = bodies
        load(server.port, single, 1, args.clients, 25 * args.clients)  # warm-up: imports, caches, first-call paths
        one_row = load(server.port, single, 1, args.clients, args.requests)
        rows = load(server.port, batch, args.rows, args.clients, args.batch_requests)
        return {"requests_per_s": one_row.requests_per_s, "p50_ms": one_row.percentile_ms(50),
                "p99_ms": one_row.percentile_ms(99), "rows_per_s": rows.rows_per_s, "log": log}  # fmt: skip
    finally:
        server.stop()  # score.py's client sends what it still has queued before its worker exits


class CollectorProcess:
    """A LocalCollector in a process of its own (`python -m jobs.local.collector`), as Azure's sidecar is one
    beside the scoring container: its work does not slow the benchmark's client threads."""

    def __init__(self, root: Path, sampling_rate: float = 1.0):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jobs.local.collector", "--root", str(root), "--endpoint", "local-benchmark",
             "--deployment", "score", "--sampling-rate", str(sampling_rate)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the local data collector did not start (exit {self.process.wait()})")
        self.variables = json.loads(line)

    def environment(self) -> dict[str, str]:
        return self.variables

    def close(self) -> dict:
        """Stop it; what it wrote: {collection: {"rows": n, "objects": n}}."""
        self.process.stdin.close()
        written = json.loads(self.process.stdout.readline() or "{}")
        self.process.wait(timeout=30)
        return written


def collection_failures(log: Path) -> int:
    """The most score.py counted in its server log (scoring.collection_failed logs the first and every 100th)."""
    counts = [1 if "failed (the request" in line else int(line.split("failed ")[1].split()[0])
              for line in log.read_text(errors="replace").splitlines() if "data collection failed" in line]  # fmt: skip
    return max(counts, default=0)


def collection_costs(model_dir: Path, environment: dict[str, str], requests_per_s: float, workers: int,
                     repeat: int = 500) -> tuple[int, dict[str, float]]:  # fmt: skip
    """CPU microseconds per 1-row request of each part of collecting it, one part at a time in this process:
    score.py's own work on the request for scale (checks, predict, answer); on the request thread, buffering it
    (DataCollection.collect); then, per batch of the requests one worker gathers in scoring.FLUSH_INTERVAL_S at
    `requests_per_s` (the load's rate with collection on), divided by the batch's requests: the flush thread's
    flush() (concatenation, two DataFrames, two collect() calls) and what the client's background worker does
    per payload pair (DataFrame.to_json, the HTTP post to the collector). The client's legacy switches
    (AZUREML_MDC_ENABLED, AZUREML_MDC_WORKER_DISABLED) keep its worker thread off, and start(flush_thread=False)
    the flush thread, so that each part is timed alone. Returns (the batch's requests, the costs)."""
    import time

    os.environ.update({**environment, "AZUREML_MDC_ENABLED": "true", "AZUREML_MDC_WORKER_DISABLED": "true",
                       "AZUREML_MDC_QUEUE_CAPACITY": str(4 * repeat)})  # fmt: skip
    os.environ.pop("AZUREML_MDC_CONFIG_PATH", None)
    sys.path.insert(0, str(SCORING_SCRIPT.parent))
    from azureml.ai.monitoring.config import get_config
    from azureml.ai.monitoring.queue import get_queue
    from azureml.ai.monitoring.worker.sender import MdcSender
    from scoring import FLUSH_INTERVAL_S, DataCollection, Schema, Scorer, find_model_folder

    folder = find_model_folder(model_dir)
    schema = Schema(folder)
    scorer = Scorer(folder, schema)
    collection = DataCollection.start(flush_thread=False)
    queue = get_queue()
    sender = MdcSender(get_config().host(), get_config().port())
    record = [schema.example]
    columns = schema.to_columns(record)
    scores, labels = scorer.scored(columns)
    batch = max(1, round(requests_per_s / workers * FLUSH_INTERVAL_S))

    def timed(step) -> float:
        step()  # first-call paths
        started = time.process_time()
        for _ in range(repeat):
            step()
        return 1e6 * (time.process_time() - started) / repeat

    def request():
        columns = schema.to_columns(record)
        scorer.answer(*scorer.scored(columns))

    def buffer():
        collection.collect(columns, scorer, scores, labels)

    def drained() -> list:
        return [queue.dequeue()[0] for _ in range(queue.length())]

    def per_request(steps) -> float:
        """CPU us of running each step once, per request of a batch."""
        started = time.process_time()
        for step in steps:
            step()
        return 1e6 * (time.process_time() - started) / (len(steps) * batch)

    costs = {"score.py's own work (to_columns, predict, answer)": timed(request)}
    costs["request thread: buffer it (DataCollection.collect)"] = timed(buffer)
    collection.flush()
    drained()
    flushes = []
    for _ in range(1 + max(1, 2000 // batch)):  # the first: first-call paths
        for _ in range(batch):
            buffer()
        started = time.process_time()
        collection.flush()
        flushes.append(time.process_time() - started)
    flushed = flushes[1:]
    costs["flush thread: concatenate, two DataFrames, two collect()"] = 1e6 * sum(flushed) / (len(flushed) * batch)
    payloads = drained()[2:]
    pairs = list(zip(payloads[0::2], payloads[1::2]))
    to_json = per_request([lambda pair=pair: [p.content() for p in pair] for pair in pairs])
    costs["client worker: two DataFrame.to_json"] = to_json
    sent = per_request([lambda pair=pair: [sender.send(p) for p in pair] for pair in pairs])
    costs["client worker: two HTTP posts (requests.post)"] = sent - to_json
    return batch, costs


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
    parser.add_argument("--no-collection", action="store_true", help="skip the collection off/on comparison")
    parser.add_argument("--rounds", type=int, default=1,
                        help="collection on/off rounds: off, on, off, ... (default 1); the p50 rise is their median")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive script (and its comparison)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

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
        scripts = (SCORING_SCRIPT,) if args.no_naive else (NAIVE_SCRIPT, SCORING_SCRIPT)
        results = {script.name: measure(script, model_dir, args, bodies, work) for script in scripts}
        # off, on, off, on, ..., off: each run with collection between two without, on one stretch of this
        # machine's time
        offs, ons = [results[SCORING_SCRIPT.name]], []
        if not args.no_collection:
            for round_ in range(1, args.rounds + 1):
                collector = CollectorProcess(work / f"collected-{round_}")
                try:
                    on = measure(SCORING_SCRIPT, model_dir, args, bodies, work, collector, f"score-collecting-{round_}")
                finally:
                    written = collector.close()  # after the server stopped: what it sent at exit included
                on["written"], on["failures"] = written, collection_failures(on["log"])
                ons.append(on)
                offs.append(measure(SCORING_SCRIPT, model_dir, args, bodies, work, None, f"score-again-{round_}"))
            costs_collector = CollectorProcess(work / "costs")
            try:
                rate = statistics.median(on["requests_per_s"] for on in ons)
                batch, costs = collection_costs(model_dir, costs_collector.environment(), rate, args.workers)
            finally:
                costs_collector.close()

    print(f"\n{'script':<16}{'1-row req/s':>12}{'p50 ms':>9}{'p99 ms':>9}{f'{args.rows}-row rows/s':>18}")
    for name, figures in results.items():
        print(f"{name:<16}{figures['requests_per_s']:>12,.0f}{figures['p50_ms']:>9.2f}{figures['p99_ms']:>9.2f}"
              f"{figures['rows_per_s']:>18,.0f}")  # fmt: skip
    fast = results[SCORING_SCRIPT.name]
    if not args.no_naive:
        speedup = fast["requests_per_s"] / results[NAIVE_SCRIPT.name]["requests_per_s"]
        print(f"\nscore.py / naive, 1-row requests/s: {speedup:.1f}x "
              f"(goal >= 3x: {'met' if speedup >= 3 else 'missed'})")  # fmt: skip
    print(f"score.py p99 at {args.clients} clients: {fast['p99_ms']:.2f} ms "
          f"(goal < 10 ms: {'met' if fast['p99_ms'] < 10 else 'missed'})")  # fmt: skip
    if args.no_collection:
        return

    print(f"\n{'score.py collection':<24}{'1-row req/s':>12}{'p50 ms':>9}{'p99 ms':>9}{f'{args.rows}-row rows/s':>18}"
          f"{'p50 vs off':>12}")  # fmt: skip
    rises, against_mean, lost = [], [], []
    sent = 25 * args.clients + args.requests + args.batch_requests * args.rows

    def line(name: str, figures: dict, rise: str = "") -> None:
        print(f"{name:<24}{figures['requests_per_s']:>12,.0f}{figures['p50_ms']:>9.2f}{figures['p99_ms']:>9.2f}"
              f"{figures['rows_per_s']:>18,.0f}{rise:>12}")  # fmt: skip

    line("off (run 1)", offs[0])
    for round_, on in enumerate(ons, 1):
        # against the better of the runs without collection before and after it (conservative: on this noisy
        # machine the better of two runs is biased low), and against their mean
        around = [offs[round_ - 1]["p50_ms"], offs[round_]["p50_ms"]]
        rises.append(100 * (on["p50_ms"] / min(around) - 1))
        against_mean.append(100 * (on["p50_ms"] / statistics.mean(around) - 1))
        line(f"on, sampling 1.0 ({round_})", on, f"{rises[-1]:+.1f}%")
        line(f"off (run {round_ + 1})", offs[round_])
    rise = statistics.median(rises)
    print(f"\n1-row p50 with collection on vs off (median of {len(rises)} round(s)): {rise:+.1f}% against the "
          f"better off run around each (goal <= +10%: {'met' if rise <= 10 else 'missed'}); "
          f"{statistics.median(against_mean):+.1f}% against their mean")  # fmt: skip
    for round_, on in enumerate(ons, 1):
        written = on["written"]
        inputs, outputs = (written.get(name, {}).get("rows", 0) for name in ("model_inputs", "model_outputs"))
        objects = {name: written.get(name, {}).get("objects", 0) for name in ("model_inputs", "model_outputs")}
        print(f"round {round_}, collected after the server stopped: {inputs:,} input rows in "
              f"{objects['model_inputs']:,} objects and {outputs:,} output rows in {objects['model_outputs']:,} "
              f"objects, of {sent:,} rows sent; failures counted in the server log: {on['failures']}")  # fmt: skip
        missing = [f"{name} {got:,} of {sent:,}" for name, got in (("inputs", inputs), ("outputs", outputs))
                   if got != sent]  # fmt: skip
        if missing or on["failures"]:
            lost.append(f"round {round_}: rows {'; '.join(missing) or 'all there'}; failures: {on['failures']}")
    total = sum(cost for name, cost in costs.items() if not name.startswith("score.py"))
    print(f"\nwhat collecting one 1-row request costs, CPU us in the scoring process (each part alone; the flush "
          f"thread's and the client's parts per request of a {batch}-request batch):")  # fmt: skip
    for name, cost in costs.items():
        print(f"  {name:<60}{cost:>9,.1f}")
    print(f"  {'collection in all':<60}{total:>9,.1f}")
    if lost:
        raise SystemExit("collection lost data: " + " | ".join(lost))
    print("\nevery row sent was collected, inputs and outputs")


if __name__ == "__main__":
    main()
