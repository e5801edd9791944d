"""The Azure stage's orchestration overhead: `flow.run` with the Azure target against a simulated
workspace whose operations take realistic latencies, scaled down (default 1/500: 75 minutes -> 9 s).

Prints the wall time beside the critical path (the longest chain of dependent operations: assets ->
a workload's slowest job -> its model -> its slowest endpoint rollout -> its requests; workloads run side by
side) and beside the sum of every step's
latency (what running the steps one after another would take). Goal: wall <= 1.2 x critical path.

    .venv/bin/python benchmarks/stage.py [--scale 0.002] [--data-dir /work/shared/data]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobs import flow  # noqa: E402
from jobs.azure import assets as azure_assets  # noqa: E402
from jobs.azure.target import POLL_SECONDS, AzureTarget  # noqa: E402
from jobs.workloads import load_workloads  # noqa: E402
from tests.azure_fake import FakeWorkspace, Simulation  # noqa: E402
from tests.bank_sample import bank_frame  # noqa: E402
from tests.housing_sample import housing_frame  # noqa: E402
from tests.test_azure_stage import OUTPUTS  # noqa: E402

# VERBOSE=1 prints the stage's own lines
REPORT = print if os.environ.get("VERBOSE") else (lambda line: None)
# seconds in Azure; job durations include node start-up and the environment's image build
LATENCY = {
    "data.get": 0.4,
    "data.create": 4.0,  # upload + register
    "environments.get": 0.4,
    "environments.create": 1.5,
    "jobs.get": 0.5,
    "jobs.create": 4.0,  # code snapshot upload + submit
    "mlflow.get_run": 0.4,
    "jobs.list": 0.6,  # a run's children (AutoML's model test run under the best child)
    "models.list": 0.5,
    "models.create": 2.0,
    "models.download": 3.0,  # an AutoML winner's files, for the conda file of its own environments
    "online_endpoints.get": 0.5,
    "online_endpoints.create": 60.0,  # create, or a traffic update
    "online_endpoints.invoke": 0.3,
    "online_deployments.create": 600.0,
    "online_deployments.list": 0.5,
    "online_deployments.delete": 120.0,
    "online_endpoints.get_keys": 0.3,
    "workspaces.get": 0.4,
    "compute.get": 0.4,
    "batch_endpoints.get": 0.5,
    "batch_endpoints.create": 30.0,  # create, or the default deployment's update
    "batch_deployments.get": 0.5,
    "batch_deployments.create": 60.0,
    "batch_endpoints.invoke": 5.0,  # the sample folder's upload + the job's submission
}
JOB_MINUTES = {
    "housing-lightgbm": 12,
    "housing-mlp-sweep": 45,
    "housing-automl-regression": 75,
    "bank-marketing-lightgbm": 10,
    "bank-marketing-automl-classification": 60,
}
# reads after each job: the run (or best child); for AutoML, the parent's tags, the best child's children
# (its model test run) and the test run's metrics
MLFLOW_READS = {
    "housing-lightgbm": ("mlflow.get_run",),
    "housing-mlp-sweep": ("mlflow.get_run",),
    "housing-automl-regression": ("mlflow.get_run", "jobs.list", "mlflow.get_run"),
    "bank-marketing-lightgbm": ("mlflow.get_run",),
    "bank-marketing-automl-classification": ("mlflow.get_run", "jobs.list", "mlflow.get_run"),
}
ROLLOUT = (
    "online_endpoints.get",
    "online_endpoints.create",  # the endpoint
    "online_deployments.create",
    "online_endpoints.create",  # 0%
    "online_endpoints.invoke",  # smoke test
    "online_deployments.list",
    "online_endpoints.create",  # 100%
    "online_endpoints.get",
)


BATCH = (
    "batch_endpoints.get",
    "batch_endpoints.create",  # the endpoint
    "batch_deployments.get",
    "batch_deployments.create",
    "batch_endpoints.create",  # its default deployment
    "batch_endpoints.invoke",
)


def critical_path(latency: dict[str, float], job_seconds: dict[str, float], workloads, downloaded: set[str]) -> float:
    assets = max(latency[f"{kind}.get"] + latency[f"{kind}.create"] for kind in ("data", "environments"))

    def workload_path(workload) -> float:
        jobs = max(
            latency["jobs.get"] + latency["jobs.create"] + job_seconds[job.key] + sum(latency[r] for r in MLFLOW_READS[job.key])
            for job in workload.jobs
        )
        model = latency["models.list"] + latency["models.create"]
        if workload.model in downloaded:  # an AutoML winner: its two own environments, registered one by one
            model += latency["models.download"] + 2 * (latency["environments.get"] + latency["environments.create"])
        rollout = sum(latency[step] for step in ROLLOUT)  # the endpoints roll out side by side
        online = rollout + latency["online_endpoints.invoke"] * len(workload.online)
        # then the sample in batch: endpoint, deployment, default, invoke, and the batch job's wait
        batch = sum(latency[step] for step in BATCH) + latency["jobs.get"] if workload.batch else 0.0
        return jobs + model + online + batch

    return assets + max(workload_path(workload) for workload in workloads)


def data_folder(source: Path | None, folder: Path) -> Path:
    """Each workload's file from `source` when there, else generated (the readers sniff the delimiter)."""
    generated = {"housing": housing_frame, "bank-marketing": bank_frame}
    for workload in load_workloads():
        name = workload.data.file
        if source and (source / name).is_file():
            (folder / name).write_bytes((source / name).read_bytes())
        else:
            generated[workload.name](2000).to_csv(folder / name, index=False)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1 / 500, help="simulated seconds per Azure second")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()

    latency = {operation: seconds * args.scale for operation, seconds in LATENCY.items()}
    job_seconds = {key: minutes * 60 * args.scale for key, minutes in JOB_MINUTES.items()}
    workloads = load_workloads()
    with tempfile.TemporaryDirectory() as scratch:
        azure_assets.WORK_DIR = Path(scratch) / "work"
        data = data_folder(args.data_dir, Path(scratch))
        simulation = Simulation(latency=latency, job_seconds=job_seconds)
        workspace = FakeWorkspace(simulation)
        target = AzureTarget(
            workspace.client(OUTPUTS), OUTPUTS, workspace.tracking, data, poll_seconds=POLL_SECONDS * args.scale
        )
        azure_assets.tabular()  # process start-up (sklearn's import), as azure-ai-ml's, is not the stage's time
        started = time.perf_counter()
        flow.run(target, workloads, report=REPORT)
        wall = time.perf_counter() - started

    stepped = sum(latency[op] * count for op, count in simulation.calls.items()) + sum(job_seconds.values())
    critical = critical_path(latency, job_seconds, workloads, {name for name, _ in workspace.models.downloads})
    print(f"scale {args.scale:g} (Azure seconds -> simulated seconds), {sum(simulation.calls.values())} operations")
    print(f"critical path:       {critical:7.2f} s")
    print(f"wall time:           {wall:7.2f} s   ({wall / critical:.2f} x the critical path; goal <= 1.2 x)")
    print(f"sum of step latency: {stepped:7.2f} s   ({stepped / wall:.1f} x the wall time)")


if __name__ == "__main__":
    main()
