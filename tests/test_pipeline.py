"""Retraining pipelines and their schedules: the specs load and validate as Azure ML's CLI v2 loads them, the
local runner runs a pipeline step by step (and stops at a failing step), and the stage creates or updates
each schedule in Azure only when something changed."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from azure.ai.ml import load_component, load_job
from azure.ai.ml.entities._load_functions import load_schedule

from infra import outputs as keys
from jobs import cli
from jobs.azure import commands as azure_commands
from jobs.azure.target import AzureTarget
from jobs.flow import SPECS_DIR, FlowError
from jobs.local.pipeline import LocalPipelineRunner, PipelineFailed, load_steps, waves
from jobs.local.target import LocalTarget
from jobs.workloads import Retrain, WorkloadError, load_workload, load_workloads
from tests.azure_fake import FakeWorkspace
from tests.bank_sample import bank_frame
from tests.mlflow_store import private_mlflow_store
from tests.test_azure_stage import OUTPUTS
from tests.test_workloads import copy_of, edit

SOURCE = Path(__file__).resolve().parent.parent / "jobs" / "src"
WORKLOADS = {workload.name: workload for workload in load_workloads()}
BANK, HOUSING = WORKLOADS["bank-marketing"], WORKLOADS["housing"]


@pytest.mark.parametrize("component", sorted((SPECS_DIR / "components").glob("*.yml")), ids=lambda p: p.name)
def test_every_component_loads_and_validates(component):
    loaded = load_component(component)
    assert loaded._validate().passed, loaded._validate()
    assert (component.parent / loaded.code).resolve() == SOURCE
    script = loaded.command.split()[1]
    assert (SOURCE / script).is_file(), f"{component.name} runs {script}, which jobs/src lacks"


@pytest.mark.parametrize("workload", [BANK, HOUSING], ids=lambda w: w.name)
def test_every_pipeline_and_schedule_loads_and_validates(workload):
    pipeline = load_job(workload.retrain.pipeline)
    assert pipeline.type == "pipeline" and pipeline._validate().passed, pipeline._validate()
    # the pipeline's output is an mlflow_model, bound to the evaluation's best candidate
    assert pipeline.outputs["model"].type == "mlflow_model"
    spec = yaml.safe_load(workload.retrain.pipeline.read_text())
    assert spec["jobs"]["evaluate"]["outputs"]["best"] == "${{parent.outputs.model}}"
    assert spec["jobs"]["register"]["inputs"]["verdict"] == "${{parent.jobs.evaluate.outputs.verdict}}"
    # with its drift gate on, the monitor runs first and every other step reads its decision; with it off, neither
    gated = waves(load_steps(workload.retrain.pipeline, workload.retrain.document(True))[1], workload.retrain.pipeline)
    assert gated[0] == ["monitor"] and gated[1] == ["validate"] and gated[-2:] == [["evaluate"], ["register"]]
    assert all(node["inputs"]["decision"] == "${{parent.jobs.monitor.outputs.decision}}"
               for name, node in spec["jobs"].items() if name != "monitor")  # fmt: skip
    ungated = workload.retrain.document(False)
    order = waves(load_steps(workload.retrain.pipeline, ungated)[1], workload.retrain.pipeline)
    assert order[0] == ["validate"] and order[-2:] == [["evaluate"], ["register"]]
    assert "decision" not in str(ungated["jobs"]) and not {"production", "monitor_spec", "since", "until", "force"} & set(ungated["inputs"])
    assert load_job(io.StringIO(yaml.safe_dump(ungated)), relative_origin=str(workload.retrain.pipeline))._validate().passed
    # each candidate is retrained and evaluated: the AutoML one on its spec's primary metric
    training = [step for step in spec["jobs"] if step not in ("monitor", "validate", "evaluate", "register")]
    bound = [value for name, value in spec["jobs"]["evaluate"]["inputs"].items() if name.startswith("candidate_")]
    assert sorted(bound) == sorted(f"${{{{parent.jobs.{step}.outputs.results}}}}" for step in training)
    automl = next(spec for spec in map(yaml.safe_load, (job.spec.read_text() for job in workload.jobs)) if spec["type"] == "automl")
    assert spec["jobs"]["automl"]["inputs"]["primary_metric"] == automl["primary_metric"]
    schedule = load_schedule(workload.retrain.schedule)
    assert schedule._validate().passed and schedule.trigger.type.lower() == "cron"
    # on in dev, off in prod: the model reaches prod through the ML registry (promotion: registry)
    assert workload.retrain.settings("dev")["enabled"] is True and workload.retrain.settings("prod")["enabled"] is False


@pytest.mark.parametrize(
    "change, says",
    [
        (lambda d: d["retrain"]["environments"].update(prod={"cron": "0 25 * * *"}), "retrain.environments.prod.cron: hour '25'"),
        (lambda d: d["retrain"]["environments"].update(dev={"enabled": "no"}), "retrain.environments.dev.enabled: 'no'"),
        (lambda d: d["retrain"].update(pipeline="missing.yml"), "retrain.pipeline: a YAML file in this folder"),
        (lambda d: d.update(model="another-model"), "inputs.model_name is 'housing-regressor', but the workload's is 'another-model'"),
    ],
)
def test_a_bad_retrain_section_is_refused_naming_the_key(tmp_path, change, says):
    root = copy_of("housing", tmp_path)
    edit(root / "housing", change)
    with pytest.raises(WorkloadError) as refused:
        load_workload(root / "housing")
    assert says in str(refused.value)


def test_a_schedule_with_a_time_zone_azure_refuses_is_refused(tmp_path):
    root = copy_of("housing", tmp_path)
    schedule = root / "housing" / "retrain-schedule.yml"
    schedule.write_text(schedule.read_text().replace("time_zone: UTC", "time_zone: Europe/Paris"))
    with pytest.raises(WorkloadError, match="trigger.time_zone not a Windows time zone name"):
        load_workload(root / "housing")


# -- the local runner, on a pipeline of small steps -------------------------------------------------------

STEP = """\
$schema: https://azuremlschemas.azureedge.net/latest/commandComponent.schema.json
type: command
name: {name}
version: "1"
code: .
command: >-
  python -c "import sys, pathlib; {script}"
  ${{{{inputs.data}}}} {extra}
inputs:
  data:
    type: uri_file
  factor:
    type: integer
    default: 3
  note:
    type: string
    optional: true
outputs:
  out:
    type: uri_folder
"""
# reads its inputs from argv; writes what it saw to its output folder
RECORD = ("args = sys.argv[1:]; out = pathlib.Path(args[-1]); out.mkdir(parents=True, exist_ok=True); "
          "(out / 'seen.txt').write_text(' '.join(args)); print('saw', len(args) - 1, 'values')")  # fmt: skip


def small_pipeline(folder: Path, fail: str | None = None) -> Path:
    """first -> (second, third) -> last: the middle two side by side; `fail` names a step that exits 3."""
    for name in ("first", "second", "third", "last"):
        script = "sys.exit('this step fails on purpose')" if name == fail else RECORD
        extra = "${{inputs.factor}} $[[--note ${{inputs.note}}]] ${{outputs.out}}"
        (folder / f"{name}.yml").write_text(STEP.format(name=name, script=script, extra=extra))
    spec = {
        "type": "pipeline",
        "experiment_name": "small-retrain",
        "inputs": {"data": {"type": "uri_file", "path": "azureml:bank-marketing@latest"}, "factor": 5},
        "outputs": {"result": {"type": "uri_folder"}},
        "jobs": {
            "first": {"type": "command", "component": "./first.yml", "inputs": {"data": "${{parent.inputs.data}}"}},
            "second": {"type": "command", "component": "./second.yml",
                       "inputs": {"data": "${{parent.inputs.data}}", "factor": "${{parent.inputs.factor}}",
                                  "note": "${{parent.jobs.first.outputs.out}}"}},
            "third": {"type": "command", "component": "./third.yml",
                      "inputs": {"data": "${{parent.inputs.data}}", "note": "${{parent.jobs.first.outputs.out}}"}},
            "last": {"type": "command", "component": "./last.yml",
                     "inputs": {"data": "${{parent.jobs.second.outputs.out}}", "note": "${{parent.jobs.third.outputs.out}}"},
                     "outputs": {"out": "${{parent.outputs.result}}"}},
        },
    }  # fmt: skip
    path = folder / "pipeline.yml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def local_target(tmp_path_factory):
    """One data folder and MLflow store for the module (creating a store takes seconds)."""
    folder = tmp_path_factory.mktemp("pipelines")
    (folder / "data").mkdir()
    bank_frame(60).to_csv(folder / "data" / "bank-marketing.csv", index=False, sep=";")
    target = LocalTarget(folder / "data", folder / "work")
    target.prepare([BANK], lambda line: None)
    return target


def with_pipeline(path: Path):
    return dataclasses.replace(BANK, retrain=Retrain(path, BANK.retrain.schedule, {}))


def test_the_local_runner_runs_the_steps_in_order_with_bindings_defaults_and_mlflow_runs(local_target, tmp_path):
    pipeline = small_pipeline(tmp_path)
    lines = []
    run = LocalPipelineRunner(local_target).run(with_pipeline(pipeline), lines.append, {"factor": "7"})
    assert [step.name for step in run.steps] == ["first", "second", "third", "last"]
    assert all(step.status == "Completed" for step in run.steps)
    seen = {step.name: (Path(step.outputs["out"]) / "seen.txt").read_text().split() for step in run.steps}
    data = str(local_target.data_files["bank-marketing"])
    # the first step: no note bound, so its optional `--note` part is dropped; factor takes its default
    assert seen["first"] == [data, "3", run.steps[0].outputs["out"]]
    # a parent input (overridden to 7), and the first step's output folder as the note
    assert seen["second"] == [data, "7", "--note", run.steps[0].outputs["out"], run.steps[1].outputs["out"]]
    assert seen["last"][0] == run.steps[1].outputs["out"]
    assert run.outputs["result"] == run.steps[3].outputs["out"]
    client = local_target.client
    parent = client.get_run(run.run_id)
    assert parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{run.run_id}'")
    assert sorted(child.data.tags["step"] for child in children) == ["first", "last", "second", "third"]
    assert all(child.info.status == "FINISHED" for child in children)
    assert any("first -> second + third -> last" in line for line in lines)


def test_a_failing_step_stops_the_pipeline_naming_it_with_its_log(local_target, tmp_path):
    pipeline = small_pipeline(tmp_path, fail="second")
    with pytest.raises(PipelineFailed) as failed:
        LocalPipelineRunner(local_target).run(with_pipeline(pipeline), lambda line: None)
    message = str(failed.value)
    assert "step second failed" in message and "this step fails on purpose" in message
    assert "not run: last" in message
    statuses = {step.name: step.status for step in failed.value.run.steps}
    assert statuses == {"first": "Completed", "second": "Failed", "third": "Completed", "last": "NotStarted"}
    assert local_target.client.get_run(failed.value.run.run_id).info.status == "FAILED"


def test_bad_bindings_and_unknown_inputs_are_named(local_target, tmp_path):
    pipeline = small_pipeline(tmp_path)
    spec = yaml.safe_load(pipeline.read_text())
    spec["jobs"]["last"]["inputs"]["data"] = "${{parent.jobs.nowhere.outputs.out}}"
    spec["jobs"]["first"]["inputs"]["colour"] = "blue"
    pipeline.write_text(yaml.safe_dump(spec))
    with pytest.raises(FlowError) as refused:
        load_steps(pipeline)
    assert "jobs.last.inputs.data: no step 'nowhere'" in str(refused.value)
    assert "jobs.first.inputs.colour: the component first.yml has no such input" in str(refused.value)
    with pytest.raises(FlowError, match="no pipeline input min_rows"):
        LocalPipelineRunner(local_target).run(with_pipeline(small_pipeline(tmp_path)), print, {"min_rows": "1"})


def test_the_shipped_pipeline_stops_at_validation_naming_the_column(local_target, tmp_path, capsys):
    """`python -m jobs pipeline --local` on data without a column the workload expects: the validate step
    fails naming it, and no later step runs. (The whole pipeline on the shared data: docs/operators.md figures.)"""
    data_dir = tmp_path / "data"
    shutil.copytree(local_target.data_dir, data_dir)
    frame_path = data_dir / "bank-marketing.csv"
    frame_path.write_text(frame_path.read_text().replace("balance", "saldo", 1))
    base = ["pipeline", "--local", "--workload", "bank-marketing", "--data-dir", str(data_dir),
            "--work-dir", str(local_target.work_dir), "--input", "min_rows=40", "--always"]  # fmt: skip
    assert cli.main(base) == 1
    error = capsys.readouterr().err
    assert "step validate failed" in error and "column 'balance' is missing" in error
    assert "not run: lightgbm, automl, evaluate, register" in error


def test_register_keeps_the_registered_version_when_the_candidate_is_not_better(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(SOURCE))
    import register

    model = tmp_path / "best"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")
    verdict = tmp_path / "verdict"
    verdict.mkdir()
    (verdict / "verdict.json").write_text(json.dumps({
        "metric": "MAE", "better": False, "best": {"MAE": 25000.0}, "registered": {"version": "4", "MAE": 24000.0},
    }))  # fmt: skip
    registration = register.main(["--model", str(model), "--verdict", str(verdict), "--model-name", "housing-regressor",
                                  "--output", str(tmp_path / "out")])  # fmt: skip
    assert registration["registered"] is False
    assert "does not beat version 4 (MAE=24000)" in registration["reason"]
    assert json.loads((tmp_path / "out" / "registration.json").read_text()) == registration
    sys.modules.pop("register", None)


OPAQUE_MODULE = """
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


class Opaque(ClassifierMixin, BaseEstimator):
    classes_ = np.array(["no", "yes"])

    def fit(self, x, y):
        return self

    def predict_proba(self, x):
        return np.full((len(x), 2), 0.5)
"""


def test_evaluate_counts_a_registered_version_it_cannot_load_by_the_metric_it_was_registered_with(tmp_path, monkeypatch):
    """A registered Azure AutoML model needs the AutoML runtime, which the evaluate step's environment lacks."""
    import mlflow
    import mlflow.sklearn

    monkeypatch.syspath_prepend(str(SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    with private_mlflow_store(tmp_path / "mlruns"):
        import evaluate
        import train

        data = tmp_path / "bank.csv"
        bank_frame(400).to_csv(data, index=False, sep=";")
        train.main(["--data", str(data), "--target", "y", "--task", "classification", "--output", str(tmp_path / "candidate"),
                    "--n-estimators", "20"])  # fmt: skip
        # a registered model whose pickle names a module that is not installed where evaluate runs
        (tmp_path / "automl_only.py").write_text(OPAQUE_MODULE)
        import automl_only

        saved = tmp_path / "registered"
        # its requirements given: MLflow would otherwise infer them by loading the model in a process of its own
        mlflow.sklearn.save_model(automl_only.Opaque(), saved, serialization_format="cloudpickle", pip_requirements=[])
        (tmp_path / "automl_only.py").unlink()
        del sys.modules["automl_only"]
        client = mlflow.MlflowClient()
        client.create_registered_model("bank-marketing-classifier")
        client.create_model_version("bank-marketing-classifier", str(saved))

        arguments = ["--data", str(data), "--target", "y", "--task", "classification", "--metric", "AUC_weighted",
                     "--goal", "maximize", "--model-name", "bank-marketing-classifier", "--candidate", str(tmp_path / "candidate"),
                     "--best", str(tmp_path / "best"), "--verdict", str(tmp_path / "verdict")]  # fmt: skip
        try:
            # no recorded metric either: nothing to compare with, so the step fails naming the version
            with pytest.raises(ValueError, match="registered bank-marketing-classifier:1 cannot be loaded here .*automl_only.* no AUC_weighted tag"):
                evaluate.main(arguments)
            client.set_model_version_tag("bank-marketing-classifier", "1", "AUC_weighted", "0.61")  # as every registration tags it
            verdict = evaluate.main(arguments)
        finally:
            for name in ("evaluate", "train", "tabular"):
                sys.modules.pop(name, None)
        assert verdict["registered"]["version"] == "1" and verdict["registered"]["AUC_weighted"] == 0.61
        assert "cannot load it (No module named 'automl_only')" in verdict["registered"]["measured"]
        assert verdict["better"] is (verdict["best"]["AUC_weighted"] > 0.61)
        assert json.loads((tmp_path / "verdict" / "verdict.json").read_text()) == verdict


# -- Azure: schedules created or updated, idempotently ----------------------------------------------------


def azure_target(outputs, data_dir) -> AzureTarget:
    workspace = FakeWorkspace()
    ml_client = workspace.client(outputs)
    return AzureTarget(ml_client, outputs, workspace.tracking, data_dir, poll_seconds=0.002)


def test_schedules_are_created_then_left_alone_then_updated_per_environment(data_dir):
    target = azure_target(OUTPUTS, data_dir)
    schedules = target.ml_client.schedules
    lines = []
    assert azure_commands.schedule(target, [BANK, HOUSING], lines.append) == {
        "bank-marketing-retrain": "created", "housing-retrain": "created"}  # fmt: skip
    live = schedules.get("housing-retrain")
    assert live.is_enabled is True and live.trigger.expression == "0 3 * * 1" and live.trigger.time_zone == "UTC"
    job = live.create_job
    assert job.name is None and job.settings.default_compute == OUTPUTS[keys.CPU_CLUSTER]
    assert any("enabled in dev" in line for line in lines)
    # nothing changed: nothing is written
    assert azure_commands.schedule(target, [BANK, HOUSING], lines.append) == {
        "bank-marketing-retrain": "unchanged", "housing-retrain": "unchanged"}  # fmt: skip
    assert schedules.writes == ["bank-marketing-retrain", "housing-retrain"]
    # the same workloads in prod: off, so updated
    prod = azure_target({**OUTPUTS, keys.ENVIRONMENT: "prod"}, data_dir)
    prod.ml_client._schedules = schedules
    assert azure_commands.schedule(prod, [HOUSING], lines.append) == {"housing-retrain": "updated"}
    assert schedules.get("housing-retrain").is_enabled is False
    # a prod that reads the ML registry makes no retraining schedule for a registry workload at all
    reading = azure_target({**OUTPUTS, keys.ENVIRONMENT: "prod", keys.ML_REGISTRY_NAME: "mlr", keys.ML_REGISTRY_ACCESS: "read"}, data_dir)
    assert azure_commands.schedule(reading, [HOUSING], lines.append) == {}
    assert any("housing: no retraining schedule in prod (promotion: registry)" in line for line in lines)


def test_the_dry_run_prints_the_pipeline_schedule_and_batch_entities_for_each_environment(tmp_path, capsys):
    for environment, state in (("dev", "enabled"), ("prod", "disabled")):
        outputs = tmp_path / f"{environment}.json"
        outputs.write_text(json.dumps({**OUTPUTS, keys.ENVIRONMENT: environment}))
        assert cli.main(["run", "--outputs", str(outputs), "--dry-run", "--workload", "housing"]) == 0
        printed = capsys.readouterr().out
        documents = {doc.split("\n", 1)[0]: yaml.safe_load(doc) for doc in printed.split("---\n")[1:]}
        pipeline = documents["# housing: retraining pipeline, gated by drift (retrain.when: drifted) (no gpu_cluster_name output (GPU cluster off in this stack): housing-retrain step mlp runs on the CPU cluster cpu-from-outputs)"]
        assert pipeline["type"] == "pipeline" and set(pipeline["jobs"]) == {"monitor", "validate", "lightgbm", "mlp", "automl", "evaluate", "register"}
        schedule = documents[f"# housing: retraining schedule, {state} in {environment}"]
        assert schedule["is_enabled"] is (state == "enabled") and schedule["trigger"]["expression"] == "0 3 * * 1"
        endpoint = documents["# housing: batch endpoint"]
        deployment = documents["# housing: batch deployment, made the endpoint's default, then invoked on the sample request's records"]
        assert deployment["endpoint_name"] == endpoint["name"] and deployment["settings"]["output_action"] == "append_row"
        assert deployment["environment"].startswith("azureml:tabular-batch:") and deployment["compute"].endswith(OUTPUTS[keys.CPU_CLUSTER])


def test_the_pipeline_runs_in_azure_on_the_stacks_compute_and_a_failure_names_its_log(data_dir, capsys):
    target = azure_target(OUTPUTS, data_dir)
    [result] = azure_commands.run_pipeline(target, [BANK], print)
    submitted = target.ml_client.jobs.submitted[-1]
    assert result.status == "Completed" and submitted.type == "pipeline" and submitted.name == result.run_name
    assert {step.compute for step in submitted.jobs.values()} == {OUTPUTS[keys.CPU_CLUSTER]}
    assert submitted.inputs["data"].path == target.assets["bank-marketing"].reference
    # an unchanged re-run reuses the pipeline run
    azure_commands.run_pipeline(target, [BANK], print)
    assert len([job for job in target.ml_client.jobs.submitted if job.type == "pipeline"]) == 1

    failing = azure_target(OUTPUTS, data_dir)
    failing.ml_client.jobs.sim.failing_jobs = ("bank-marketing-retrain",)
    with pytest.raises(FlowError) as failed:
        azure_commands.run_pipeline(failing, [BANK], print)
    assert "pipeline bank-marketing-retrain" in str(failed.value) and "Failed" in str(failed.value)
    assert "az ml job download --name" in str(failed.value)
