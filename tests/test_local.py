"""The local target runs the real specs end to end on small generated data: the command job, a sweep with a
tiny trial budget, the local MLflow registry, azmlinfsrv serving score.py; and fails plainly."""

from __future__ import annotations

import random

import pytest

from jobs import flow
from jobs.cli import main
from jobs.flow import SAMPLE_REQUEST, load_request
from jobs.flow import JOBS, MODEL_NAME, FlowError
from jobs.local import Bandit, LocalTarget, render, sample
from tests.housing_sample import housing_frame

LOCAL_JOBS = {"housing-lightgbm", "housing-mlp-sweep"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    housing_frame(300).to_csv(folder / "housing.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def local_run(data_dir, tmp_path_factory):
    """One whole local flow; the server stays up until the module's tests are done."""
    lines: list[str] = []
    target = LocalTarget(data_dir, tmp_path_factory.mktemp("work"), trials=1, fixed={"epochs": 2}, workers=1)
    try:
        summary = flow.run(target, load_request(), lines.append)
        yield target, summary, lines
    finally:
        target.close()


def test_local_flow_runs_the_jobs_and_serves_the_best_model(local_run):
    target, summary, lines = local_run
    assert {r.job.key for r in summary.results} == LOCAL_JOBS
    assert set(summary.skipped) == {j.key for j in JOBS} - LOCAL_JOBS
    assert all("AutoML runs only in Azure ML" in reason for reason in summary.skipped.values())
    for result in summary.results:
        assert result.succeeded and result.metrics[flow.HOLDOUT_METRIC] > 0
    sweep = next(r for r in summary.results if r.job.key == "housing-mlp-sweep")
    assert sweep.primary_metric == "MAE"
    assert any("trial 1 completed: MAE=" in line for line in lines)  # progress as it goes

    best = min(summary.results, key=lambda r: r.metrics["MAE"])
    assert (summary.model.name, summary.model.source_run) == (MODEL_NAME, best.run_name)
    version = target.client.get_model_version(MODEL_NAME, summary.model.version)
    assert version.tags["source_job"] == best.job.key and float(version.tags["MAE"]) == best.metrics["MAE"]

    [endpoint] = summary.endpoints
    predictions = summary.predictions[endpoint.name]
    # house values from the served model (tests/test_score.py holds them equal to the pipeline's predict)
    assert len(predictions) == len(load_request()["data"])
    assert all(10_000 < value < 2_000_000 for value in predictions) and predictions[0] != predictions[1]
    assert target.invoke(endpoint, {"data": load_request()["data"][:1]}) == predictions[:1]

    table = summary.table()
    assert f"{MODEL_NAME}:{summary.model.version}" in table and endpoint.scoring_uri in table
    assert target.latest_model().version == summary.model.version  # what `serve --local` would serve


def test_a_failing_job_stops_the_flow_with_its_name_and_log_tail(local_run, tmp_path):
    target, _, _ = local_run
    broken = tmp_path / "housing.csv"
    housing_frame(50).drop(columns="median_house_value").to_csv(broken, index=False)  # no target column
    failing = LocalTarget(tmp_path, target.work_dir, trials=1, fixed={"epochs": 1})
    with pytest.raises(FlowError) as raised:
        flow.run_jobs(failing, tuple(j for j in JOBS if j.key == "housing-lightgbm"), lambda line: None)
    message = str(raised.value)
    assert "job housing-lightgbm" in message and "exit code 1" in message
    assert "median_house_value" in message  # the script's own error, from the log tail


def test_cli_exits_non_zero_naming_the_missing_data_file(tmp_path, capsys):
    assert main(["run", "--local", "--data-dir", str(tmp_path), "--work-dir", str(tmp_path / "work")]) == 1
    error = capsys.readouterr().err
    assert "housing.csv not found in" in error and str(tmp_path) in error and "https://" in error


def test_cli_refuses_azure_only_commands_locally(capsys):
    assert main(["status", "--local"]) == 1
    assert "--stack NAME or --outputs FILE" in capsys.readouterr().err


def test_sample_request_has_the_housing_columns():
    columns = set(housing_frame(1).columns) - {"median_house_value"}
    assert all(set(record) == columns for record in load_request(SAMPLE_REQUEST)["data"])


def test_render_substitutes_and_quotes_and_drops_unset_optional_parts():
    command = "python t.py --data ${{inputs.data}} --out ${{outputs.model}} $[[--seed ${{inputs.seed}}]] --lr ${{search_space.lr}}"
    values = {"inputs": {"data": "/d/my data.csv"}, "outputs": {"model": "/o"}, "search_space": {"lr": "0.01"}}
    assert render(command, values) == "python t.py --data '/d/my data.csv' --out /o --lr 0.01"
    with pytest.raises(FlowError, match=r"inputs\.nope"):
        render("python t.py ${{inputs.nope}}", values)


def test_sampling_follows_the_search_space_and_the_fixed_values():
    space = {
        "batch": {"type": "choice", "values": [64, 128]},
        "lr": {"type": "loguniform", "min_value": -7, "max_value": -4},
        "units": {"type": "quniform", "min_value": 10, "max_value": 100, "q": 10},
        "epochs": {"type": "randint", "upper": 5},
    }
    draws = [sample(space, random.Random(0), {"epochs": 2}) for _ in range(3)]
    assert draws[0] == draws[1]  # seeded
    for params in (sample(space, rng := random.Random(1), {}) for _ in range(20)):
        assert params["batch"] in (64, 128) and 0.0009 < params["lr"] < 0.0184
        assert params["units"] % 10 == 0 and 0 <= params["epochs"] < 5
    assert draws[0]["epochs"] == 2
    with pytest.raises(FlowError, match="not in the sweep's search_space"):
        sample(space, rng, {"depth": 3})


def test_bandit_stops_a_trial_outside_the_slack_of_the_best_at_the_same_interval():
    bandit = Bandit({"slack_factor": 0.1, "evaluation_interval": 1, "delay_evaluation": 2}, "minimize")
    assert bandit.verdict([100.0, 90.0, 80.0]) is None  # nothing to compare with yet
    bandit.record([100.0, 90.0, 80.0])
    assert bandit.verdict([200.0]) is None  # delayed
    assert bandit.verdict([120.0, 98.0]) is None  # within 10% of 90
    assert "outside the slack factor 0.1" in bandit.verdict([120.0, 100.0])
    amount = Bandit({"slack_amount": 0.05, "evaluation_interval": 2}, "maximize")
    amount.record([0.5, 0.8])
    assert amount.verdict([0.9]) is None  # interval 1 is not evaluated
    assert amount.verdict([0.7, 0.74]) is not None and amount.verdict([0.7, 0.76]) is None


TOY_TRIAL = """
import pathlib, sys, time
import mlflow

out, marker = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
worse = marker.exists()  # the first trial learns well, the second does not
marker.touch()
with mlflow.start_run():
    for epoch in range(1, 31 if worse else 9):  # the worse one would run long if nothing stopped it
        mlflow.log_metric("MAE", (300.0 if worse else 100.0) - 10 * epoch, step=epoch)
        time.sleep(0.4)
out.mkdir(parents=True, exist_ok=True)
(out / "MLmodel").write_text("flavors: {}\\n")
"""
TOY_SWEEP = """
type: sweep
trial:
  code: .
  command: python trial.py ${{outputs.results}} ${{inputs.marker}} --lr ${{search_space.lr}}
inputs:
  marker: MARKER
outputs:
  results:
    type: uri_folder
sampling_algorithm: random
search_space:
  lr:
    type: uniform
    min_value: 0.001
    max_value: 0.1
objective:
  goal: minimize
  primary_metric: MAE
limits:
  max_total_trials: 2
early_termination:
  type: bandit
  evaluation_interval: 1
  delay_evaluation: 2
  slack_factor: 0.1
"""


def test_the_sweep_stops_a_trial_by_the_specs_bandit_policy_while_it_runs(local_run, tmp_path, monkeypatch):
    target, _, _ = local_run
    (tmp_path / "trial.py").write_text(TOY_TRIAL)
    (tmp_path / "sweep.yml").write_text(TOY_SWEEP.replace("MARKER", str(tmp_path / "first-trial-ran")))
    monkeypatch.setattr("jobs.local.SPECS_DIR", tmp_path)
    sweep = LocalTarget(tmp_path, target.work_dir, trials=2)
    lines: list[str] = []
    result = sweep.run_job(flow.Job("toy-sweep", "sweep.yml", True), lines.append)
    assert result.succeeded and result.metrics["MAE"] == 20.0  # the first trial, run to its end
    stopped = next(line for line in lines if "trial 2 stopped by the bandit policy" in line)
    assert "outside the slack factor 0.1" in stopped
    toy = target.client.get_experiment_by_name("toy-sweep").experiment_id
    killed = target.client.search_runs([toy], "tags.trial = '2'")
    assert killed[0].info.status == "KILLED" and len(target.client.get_metric_history(killed[0].info.run_id, "MAE")) < 30


def test_a_sweep_whose_trials_fail_is_a_failed_job_with_the_trials_log(local_run, tmp_path, monkeypatch):
    target, _, _ = local_run
    (tmp_path / "trial.py").write_text("import sys\nsys.exit('cannot read ' + sys.argv[1])\n")
    spec = TOY_SWEEP.replace("trial.py ${{outputs.results}}", "trial.py").replace("MARKER", "housing.csv")
    (tmp_path / "sweep.yml").write_text(spec)
    monkeypatch.setattr("jobs.local.SPECS_DIR", tmp_path)
    result = LocalTarget(tmp_path, target.work_dir, trials=2).run_job(flow.Job("toy-failing", "sweep.yml", True), print)
    assert result.status == "Failed" and result.error == "no trial completed; trial 2 exit code 1"
    assert "cannot read housing.csv" in result.log
