"""The local target runs every workload's real specs end to end on small generated data: command jobs, a
sweep with a tiny trial budget, AutoML through FLAML with a tiny time budget, the local MLflow registry, and
azmlinfsrv serving score.py for each workload's winner; a workload added as a folder runs with no code change;
failures are plain."""

from __future__ import annotations

import json
import random
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs import flow
from jobs.cli import main
from jobs.flow import FlowError
from jobs.local.specs import Bandit, render, sample
from jobs.local.target import SOURCE_DIR, LocalTarget, new_store
from jobs.workloads import load_workloads
from tests.bank_sample import bank_frame
from tests.housing_sample import housing_frame

WORKLOADS = {workload.name: workload for workload in load_workloads()}
HOUSING, BANK = WORKLOADS["housing"], WORKLOADS["bank-marketing"]
# minutes of FLAML search per AutoML job (3 s): enough for a few trials on a few hundred rows
AUTOML_MINUTES = 0.05


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    # 400 rows: enough validation rows for train.py's early stopping (MIN_VALIDATION_ROWS), not 3,000 trees
    housing_frame(400).to_csv(folder / HOUSING.data.file, index=False)
    bank_frame(400).to_csv(folder / BANK.data.file, index=False, sep=";")
    return folder


@pytest.fixture(scope="module")
def third(data_dir, tmp_path_factory):
    """A third workload in a workloads folder of its own, its data beside the others'."""
    root = tmp_path_factory.mktemp("workloads")
    third_workload(root, data_dir)
    (penguins,) = load_workloads(root=root)
    return penguins


def target_for(data_dir, work_dir, **options) -> LocalTarget:
    # two processes at a time: on small data they mostly wait on imports, one core each
    return LocalTarget(data_dir, work_dir, trials=1, fixed={"epochs": 2}, workers=1, automl_minutes=AUTOML_MINUTES,
                       parallel=2, **{"keep_serving": True, **options})  # fmt: skip


@pytest.fixture(scope="module")
def local_run(data_dir, third, tmp_path_factory):
    """One whole local flow over the shipped workloads and the third; the servers stay up until the module's
    tests are done."""
    lines: list[str] = []
    target = target_for(data_dir, tmp_path_factory.mktemp("work"))
    try:
        summary = flow.run(target, [*WORKLOADS.values(), third], lines.append)
        yield target, {done.workload.name: done for done in summary.workloads}, summary, lines
    finally:
        target.close()


def test_every_candidate_of_every_workload_runs_nothing_skipped(local_run):
    _, done, _, lines = local_run
    assert set(done) == {*WORKLOADS, "penguins"}
    for name, workload in WORKLOADS.items():
        assert [r.job.key for r in done[name].results] == [job.key for job in workload.jobs]
        assert done[name].skipped == {}
        for result in done[name].results:
            assert result.succeeded and workload.metric in result.metrics, result.job.key
    assert not [line for line in lines if "not run" in line]
    assert any("trial 1 completed: MAE=" in line for line in lines)  # progress as it goes
    sweep = next(r for r in done["housing"].results if r.job.key == "housing-mlp-sweep")
    assert sweep.primary_metric == "MAE"


@pytest.mark.parametrize("name", WORKLOADS)
def test_each_workload_served_in_batch_scores_its_sample_as_its_online_endpoint_answers(local_run, name):
    target, done, _, lines = local_run
    batch, records = done[name].batch, len(WORKLOADS[name].request()["data"])
    assert (batch.files, batch.tally.scored, batch.tally.failed, batch.failed_items) == (records, records, 0, 0)
    # the registered model's batch output, in the target's work folder, row by row the online answers
    assert Path(batch.output).is_relative_to(target.work_dir / "batch" / name) and Path(batch.output).is_file()
    output = pd.read_csv(batch.output, sep=" ", header=None).sort_values(0)  # file, row, status, prediction...
    answers = next(iter(done[name].answers.values()))
    if WORKLOADS[name].task == "regression":
        assert output[3].tolist() == pytest.approx(answers, rel=1e-9)
    else:
        assert output[3].tolist() == [answer["label"] for answer in answers]
        assert output[4].tolist() == pytest.approx([answer["probability"] for answer in answers], rel=1e-9)
    assert any(f"{name} batch: batch: {records} files; {records} rows scored; 0 rows failed" in line for line in lines)


@pytest.mark.parametrize("name", WORKLOADS)
def test_each_workloads_best_candidate_is_registered_under_its_model_name(local_run, name):
    target, done, _, _ = local_run
    workload, result = WORKLOADS[name], done[name]
    best = workload.best(result.results)
    assert (result.model.name, result.model.source_run, result.model.metric) == (workload.model, best.run_name, workload.metric)
    version = target.client.get_model_version(workload.model, result.model.version)
    assert version.tags["source_job"] == best.job.key and float(version.tags[workload.metric]) == best.metrics[workload.metric]
    assert version.tags["workload"] == name
    assert target.latest_model(workload).version == result.model.version  # what `serve --local` would serve


def test_housing_serves_house_values(local_run):
    target, done, _, _ = local_run
    [endpoint] = done["housing"].endpoints
    predictions = done["housing"].answers[endpoint.name]
    # house values from the served model (tests/test_score.py holds them equal to the pipeline's predict)
    assert len(predictions) == len(HOUSING.request()["data"])
    assert all(10_000 < value < 2_000_000 for value in predictions) and predictions[0] != predictions[1]
    assert target.invoke(endpoint, {"data": HOUSING.request()["data"][:1]}) == predictions[:1]


def test_bank_marketing_serves_a_label_and_the_probability_of_yes(local_run):
    target, done, _, _ = local_run
    [endpoint] = done["bank-marketing"].endpoints
    answers = done["bank-marketing"].answers[endpoint.name]
    assert len(answers) == len(BANK.request()["data"])
    for answer in answers:
        assert set(answer) == {"label", "probability"} and answer["label"] in ("yes", "no")
        assert 0 <= answer["probability"] <= 1 and (answer["label"] == "yes") == (answer["probability"] > 0.5)
    # the model's input schema is the data's columns, so a request missing one is refused by name
    broken = {"data": [{k: v for k, v in BANK.request()["data"][0].items() if k != "duration"}]}
    with pytest.raises(FlowError, match="duration"):
        target.invoke(endpoint, broken)


def test_the_summary_names_each_workloads_winner_and_endpoint_and_says_its_server_stopped(local_run):
    _, done, summary, _ = local_run
    table = summary.table(servers_stopped=True)  # as `run --local` prints it: its servers end with the run
    for name, result in done.items():
        assert f"{result.model.name}:{result.model.version}" in table and result.endpoints[0].scoring_uri in table
        assert f"make serve WORKLOAD={name}" in table
    assert "scoring URL, stopped with the run" in table.splitlines()[0]


def test_automl_trials_are_child_runs_of_the_automl_job(local_run):
    target, done, _, _ = local_run
    automl = next(r for r in done["bank-marketing"].results if r.job.key == "bank-marketing-automl-classification")
    experiment = target.client.get_experiment_by_name("bank-marketing").experiment_id
    children = target.client.search_runs([experiment], f"tags.mlflow.parentRunId = '{automl.run_name}'")
    assert children and all("estimator" in child.data.params or "learner" in child.data.params for child in children)


def test_run_stops_a_server_once_its_answer_is_checked(local_run, data_dir):
    target, _, _, _ = local_run
    releasing = LocalTarget(data_dir, target.work_dir, workers=1)  # `run --local`'s default
    model = releasing.latest_model(HOUSING)
    (endpoint,) = releasing.deploy(HOUSING, model, lambda line: None)
    assert len(releasing.invoke(endpoint, HOUSING.request())) == len(HOUSING.request()["data"])
    releasing.release([endpoint])
    assert not releasing.servers
    with pytest.raises(FlowError, match="not reachable"):  # nothing listens there any more
        releasing.invoke(endpoint, HOUSING.request())


def test_a_failing_job_stops_its_workload_with_its_name_and_log_tail(local_run, tmp_path):
    target, _, _, _ = local_run
    broken = tmp_path / HOUSING.data.file
    housing_frame(50).drop(columns="median_house_value").to_csv(broken, index=False)  # no target column
    failing = target_for(tmp_path, target.work_dir)
    failing.prepare([HOUSING], lambda line: None)
    with pytest.raises(FlowError) as raised:
        flow.run_jobs(failing, [j for j in HOUSING.jobs if j.key == "housing-lightgbm"], lambda line: None)
    message = str(raised.value)
    assert "job housing-lightgbm" in message and "exit code 1" in message
    assert "median_house_value" in message  # the script's own error, from the log tail


def test_an_automl_spec_that_cannot_run_here_stops_the_run_before_any_job(data_dir, tmp_path):
    root = tmp_path / "workloads"
    shutil.copytree(HOUSING.folder, root / "housing")
    spec = root / "housing" / "automl-regression.yml"
    spec.write_text(spec.read_text().replace("primary_metric: normalized_root_mean_squared_error",
                                             "primary_metric: spearman_correlation"))
    (housing,) = load_workloads(root=root)
    target = target_for(data_dir, tmp_path / "work")
    with pytest.raises(FlowError) as raised:
        flow.run(target, [housing], lambda line: None)
    assert f"job housing-automl-regression: {spec}: primary_metric" in str(raised.value)
    assert not (tmp_path / "work" / "runs").exists()  # nothing ran


# -- a third workload: a folder, its data and nothing else -------------------------------------------------------------
def species_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """Three species told apart by two measurements and an island: a multiclass problem none of the shipped
    workloads has."""
    rng = np.random.default_rng(seed)
    species = rng.choice(["adelie", "gentoo", "chinstrap"], rows)
    centre = {"adelie": (38.8, 18.3), "gentoo": (47.5, 15.0), "chinstrap": (48.8, 18.4)}
    bill, depth = np.array([centre[s] for s in species]).T + rng.normal(0, 1.5, (2, rows))
    island = np.where(species == "gentoo", "biscoe", rng.choice(["dream", "torgersen", "biscoe"], rows))
    return pd.DataFrame({"bill_length_mm": bill.round(1), "bill_depth_mm": depth.round(1), "island": island, "species": species})


def third_workload(root, data_dir) -> None:
    folder = root / "penguins"
    folder.mkdir(parents=True)
    species_frame(240).to_csv(data_dir / "penguins.csv", index=False)
    (folder / "workload.yml").write_text(textwrap.dedent("""\
        name: penguins
        description: The species of a penguin from its bill and its island
        data: {file: penguins.csv, source: https://example.org/penguins.csv, target: species, task: classification}
        candidates: [lightgbm.yml]
        compare: {metric: AUC_weighted}
        model: penguin-classifier
        serve: {online: [managed], sample_request: sample-request.json}
        """))
    (folder / "lightgbm.yml").write_text(textwrap.dedent(f"""\
        type: command
        display_name: penguins-lightgbm
        experiment_name: penguins
        code: {SOURCE_DIR}
        command: python train.py --data ${{{{inputs.data}}}} --target species --task classification --n-estimators 200 --output ${{{{outputs.results}}}}
        inputs:
          data: {{type: uri_file, path: azureml:penguins@latest}}
        outputs:
          results: {{type: uri_folder}}
        environment: azureml:tabular-training-cpu@latest
        compute: azureml:cpu-cluster
        """))
    records = species_frame(3, seed=1).drop(columns="species").to_dict(orient="records")
    (folder / "sample-request.json").write_text(json.dumps({"data": records}))


def test_a_third_workload_is_a_folder_and_runs_with_no_code_change(local_run, third):
    target, done, _, _ = local_run
    penguins = done["penguins"]
    assert [r.job.key for r in penguins.results] == ["penguins-lightgbm"] and penguins.skipped == {}
    assert penguins.model.name == "penguin-classifier" and penguins.model.metric == "AUC_weighted"
    assert penguins.model.value > 0.5
    assert target.latest_model(third).version == penguins.model.version
    (answers,) = penguins.answers.values()
    assert len(answers) == 3
    for answer in answers:  # more than two classes: every class's probability
        assert set(answer) == {"label", "probabilities"} and set(answer["probabilities"]) == {"adelie", "chinstrap", "gentoo"}
        assert answer["label"] == max(answer["probabilities"], key=answer["probabilities"].get)
        assert sum(answer["probabilities"].values()) == pytest.approx(1)


def test_cli_exits_non_zero_naming_the_missing_data_file(tmp_path, capsys):
    assert main(["run", "--local", "--data-dir", str(tmp_path), "--work-dir", str(tmp_path / "work")]) == 1
    error = capsys.readouterr().err
    for workload in WORKLOADS.values():  # every missing file, each with where to get it
        assert f"data file {workload.data.file} not found in {tmp_path}" in error and workload.data.source in error


def test_cli_refuses_azure_only_commands_locally(capsys):
    assert main(["status", "--local"]) == 1
    assert "--stack NAME or --outputs FILE" in capsys.readouterr().err


@pytest.mark.parametrize("workload, frame", [(HOUSING, housing_frame), (BANK, bank_frame)], ids=["housing", "bank"])
def test_each_sample_request_has_its_datas_columns_but_the_target(workload, frame):
    columns = set(frame(1).columns) - {workload.data.target}
    assert all(set(record) == columns for record in workload.request()["data"])


def test_cli_refuses_an_unknown_workload_naming_the_known_ones(tmp_path, capsys):
    assert main(["run", "--local", "--workload", "titanic", "--data-dir", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert "unknown workload(s) titanic" in error and "bank-marketing, housing" in error


def test_serve_needs_one_workload(capsys):
    assert main(["serve", "--local"]) == 1
    assert "`serve` needs one workload: --workload bank-marketing|housing" in capsys.readouterr().err


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
        time.sleep(0.2)
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


def test_the_sweep_stops_a_trial_by_the_specs_bandit_policy_while_it_runs(local_run, tmp_path):
    target, *_ = local_run
    (tmp_path / "trial.py").write_text(TOY_TRIAL)
    (tmp_path / "sweep.yml").write_text(TOY_SWEEP.replace("MARKER", str(tmp_path / "first-trial-ran")))
    sweep = LocalTarget(tmp_path, target.work_dir, trials=2)
    lines: list[str] = []
    result = sweep.run_job(flow.Job("toy-sweep", "toy-sweep", tmp_path / "sweep.yml"), lines.append)
    assert result.succeeded and result.metrics["MAE"] == 20.0  # the first trial, run to its end
    stopped = next(line for line in lines if "trial 2 stopped by the bandit policy" in line)
    assert "outside the slack factor 0.1" in stopped
    toy = target.client.get_experiment_by_name("toy-sweep").experiment_id
    killed = target.client.search_runs([toy], "tags.trial = '2'")
    assert killed[0].info.status == "KILLED" and len(target.client.get_metric_history(killed[0].info.run_id, "MAE")) < 30


def test_a_sweep_whose_trials_fail_is_a_failed_job_with_the_trials_log(local_run, tmp_path):
    target, *_ = local_run
    (tmp_path / "trial.py").write_text("import sys\nsys.exit('cannot read ' + sys.argv[1])\n")
    spec = TOY_SWEEP.replace("trial.py ${{outputs.results}}", "trial.py").replace("MARKER", "housing.csv")
    (tmp_path / "sweep.yml").write_text(spec)
    result = LocalTarget(tmp_path, target.work_dir, trials=2).run_job(
        flow.Job("toy-failing", "toy-failing", tmp_path / "sweep.yml"), print)
    assert result.status == "Failed" and result.error == "no trial completed; trial 2 exit code 1"
    assert "cannot read housing.csv" in result.log


def test_a_new_store_is_a_copy_of_the_migrated_template_with_its_artifacts_beside_it(tmp_path, monkeypatch):
    """Each work dir's MLflow store starts as a copy of one migrated empty store (made once per MLflow version), and
    its Default experiment keeps artifacts in the work dir, never in ./mlruns of wherever the command runs."""
    import mlflow

    monkeypatch.setattr("jobs.local.target.STORE_TEMPLATES", tmp_path / "cache")
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        new_store(tmp_path / name / "mlflow.db")
        uri = f"sqlite:///{tmp_path / name / 'mlflow.db'}"
        (default,) = mlflow.MlflowClient(uri, uri).search_experiments()
        assert default.artifact_location == (tmp_path / name / "artifacts" / "Default").as_uri()
    assert [path.name for path in (tmp_path / "cache").iterdir() if path.suffix == ".db"] == [f"mlflow-{mlflow.__version__}.db"]
    # the second came from the template: the same schema, byte for byte, but for the experiment's location
    assert (tmp_path / "first" / "mlflow.db").stat().st_size == (tmp_path / "second" / "mlflow.db").stat().st_size
