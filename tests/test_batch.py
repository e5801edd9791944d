"""Batch scoring: the batch endpoint and deployment specs, the entities built from them and the stack outputs,
batch_score.py over a folder with bad files on the local target (through `python -m jobs batch --local`), the
local run's retries and error_threshold, and the Azure side against the fake workspace."""

from __future__ import annotations

import dataclasses

import mlflow.sklearn
import pandas as pd
import pytest
import yaml
from azure.ai.ml import load_batch_deployment, load_batch_endpoint
from azure.ai.ml.entities._load_functions import load_model_batch_deployment
from marshmallow.exceptions import ValidationError

from infra import outputs as keys
from infra.naming import ENDPOINT_RULE
from jobs import cli
from jobs.azure import assets as azure_assets, batch as azure_batch, entities
from jobs.azure.commands import to_yaml
from jobs.azure.target import AzureTarget
from jobs.batch import BatchSummary, read_output, sample_problem, write_sample
from jobs.flow import SOURCE_DIR
from jobs.flow import FlowError, RegisteredModel
from jobs.local import batch as local_batch
from jobs.local.target import LocalTarget
from jobs.workloads import load_workloads
from tests.azure_fake import FakeWorkspace, Simulation
from tests.bank_sample import bank_frame
from tests.test_azure_stage import OUTPUTS
from tests.test_score import trained_root

BANK = next(workload for workload in load_workloads() if workload.name == "bank-marketing")
MODEL = RegisteredModel(BANK.model, "3", BANK.metric, 0.93, "a-job")
SETTINGS = local_batch.BatchSettings.from_spec()


@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    return trained_root(tmp_path_factory.mktemp("batch-model"), bank_frame(600), "y", "classification", BANK.model)


# -- specs and entities -----------------------------------------------------------------------------------------
def test_the_specs_load_in_the_current_format_that_load_batch_deployment_refuses():
    deployment = load_model_batch_deployment(azure_batch.DEPLOYMENT_SPEC)
    settings = deployment.settings
    assert deployment.type == "model" and deployment.code_configuration.scoring_script == "batch_score.py"
    assert (settings.output_action, settings.output_file_name) == ("append_row", "predictions.csv")
    assert settings.mini_batch_size >= 1 and settings.max_concurrency_per_instance >= 1
    assert settings.retry_settings.max_retries >= 0 and settings.retry_settings.timeout > 0
    assert settings.error_threshold >= -1 and deployment.resources.instance_count == 1
    # what the local run applies is what Azure gets
    assert (SETTINGS.mini_batch_size, SETTINGS.error_threshold, SETTINGS.max_retries) == (
        settings.mini_batch_size, settings.error_threshold, settings.retry_settings.max_retries
    )  # fmt: skip
    with pytest.raises(ValidationError, match="settings"):  # azure-ai-ml 1.35's exported loader: "Unknown field"
        load_batch_deployment(azure_batch.DEPLOYMENT_SPEC)
    assert load_batch_endpoint(azure_batch.ENDPOINT_SPEC).auth_mode == "aad_token"


def test_the_entities_come_from_the_specs_and_the_stack_outputs():
    registered = {asset.name: asset for asset in azure_assets.environment_assets()}
    endpoint = azure_batch.endpoint_entity(BANK, OUTPUTS)
    deployment = azure_batch.deployment_entity(BANK, OUTPUTS, MODEL, registered)

    assert endpoint.name == entities.endpoint_name(BANK, "batch", OUTPUTS)
    assert endpoint.name.startswith("bank-marketing-batch-") and ENDPOINT_RULE.check(endpoint.name) is None
    other_workspace = {**OUTPUTS, keys.WORKSPACE: "mlw-other"}  # unique per region: the suffix follows the workspace
    assert azure_batch.endpoint_entity(BANK, other_workspace).name != endpoint.name
    assert endpoint.tags["workload"] == "bank-marketing" and endpoint.auth_mode == "aad_token"

    assert deployment.endpoint_name == endpoint.name
    assert deployment.compute == OUTPUTS[keys.CPU_CLUSTER]
    assert deployment.model == "azureml:bank-marketing-classifier:3"
    assert deployment.environment == registered["tabular-batch"].reference
    assert deployment.code_configuration.code == str(SOURCE_DIR)
    assert deployment.settings.error_threshold == SETTINGS.error_threshold
    assert deployment.name.startswith("v3-") and len(deployment.name) <= 32
    # named after what it serves: the same inputs, the same name; another model version, another deployment
    assert azure_batch.deployment_entity(BANK, OUTPUTS, MODEL, registered).name == deployment.name
    newer = dataclasses.replace(MODEL, version="4")
    assert azure_batch.deployment_entity(BANK, OUTPUTS, newer, registered).name.startswith("v4-")

    titles = [title for title, _ in azure_batch.dry_run_documents(BANK, OUTPUTS, registered, MODEL)]
    assert titles[0] == "bank-marketing: batch endpoint" and "default" in titles[1]


# -- the local target: batch_score.py over a folder -------------------------------------------------------------
def _inputs(folder):
    """Good files (`,` and `;`, an extra column), and bad ones: a missing column, values of the wrong type in
    two rows, bytes that are not UTF-8, a header with no rows. Returns the good rows by file."""
    folder.mkdir()
    good = {"a.csv": bank_frame(30, seed=3).drop(columns="y"), "b.csv": bank_frame(20, seed=4).drop(columns="y")}
    good["a.csv"].to_csv(folder / "a.csv", index=False)
    good["b.csv"].assign(customer_id=range(20)).to_csv(folder / "b.csv", index=False, sep=";")
    bank_frame(12, seed=5).drop(columns=["y", "duration"]).to_csv(folder / "missing.csv", index=False)
    typed = bank_frame(10, seed=6).drop(columns="y").astype({"duration": object, "age": object})
    typed.loc[3, "duration"], typed.loc[7, "age"] = "long", "forty"
    typed.to_csv(folder / "typed.csv", index=False)
    (folder / "binary.csv").write_bytes(b"age,job\n\xff\xfe\x00\x81 not text\n")
    bank_frame(1).drop(columns="y").head(0).to_csv(folder / "header-only.csv", index=False)
    return good, typed


def _output(path, columns=("file", "row", "status", "label", "probability", "error")) -> pd.DataFrame:
    return pd.read_csv(path, sep=" ", header=None, names=list(columns), keep_default_na=False, na_values=[""])


def test_a_folder_with_bad_files_is_scored_through_the_cli_every_row_accounted(model_root, tmp_path, monkeypatch, capsys):
    good, typed = _inputs(tmp_path / "in")
    monkeypatch.setattr(LocalTarget, "latest_model", lambda self, workload: MODEL)
    monkeypatch.setattr(LocalTarget, "model_dir", lambda self, model: model_root)
    code = cli.main(["batch", "--local", "--workload", "bank-marketing", "--input", str(tmp_path / "in"),
                     "--output", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work")])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed

    output = _output(tmp_path / "out" / "predictions.csv")
    pipeline = mlflow.sklearn.load_model(str(model_root / BANK.model / "1" / "model"))
    for name, frame in good.items():  # scored, exactly as the pipeline's own predict_proba and predict
        rows = output[output.file == name].sort_values("row")
        assert rows.row.tolist() == list(range(len(frame))) and set(rows.status) == {"ok"}
        assert rows.probability.tolist() == pipeline.predict_proba(frame)[:, 1].tolist()
        assert rows.label.tolist() == pipeline.predict(frame).tolist()
    missing = output[output.file == "missing.csv"]
    assert missing.row.tolist() == list(range(12)) and set(missing.status) == {"error"}
    assert missing.error.iloc[0].startswith("missing column(s) duration (expected columns: age, job")
    typed_rows = output[output.file == "typed.csv"].set_index("row")
    assert typed_rows.loc[3, "error"] == "column 'duration': expected a number, got 'long'"
    assert typed_rows.loc[7, "error"] == "column 'age': expected a number, got 'forty'"
    scored = typed_rows[typed_rows.status == "ok"]
    assert len(scored) == 8 and scored.probability.isna().sum() == 0
    expected = pipeline.predict_proba(typed.drop(index=[3, 7]).astype({"duration": float, "age": float}))[:, 1]
    assert scored.probability.tolist() == expected.tolist()
    (binary,) = output[output.file == "binary.csv"].itertuples()
    assert binary.status == "error" and pd.isna(binary.row) and "UTF-8" in binary.error
    assert "header-only.csv" not in set(output.file)  # no rows, none to answer

    # every input row once: in the output scored, or as an error row
    assert len(output) == 30 + 20 + 12 + 10 + 1
    tally = read_output(tmp_path / "out" / "predictions.csv")
    assert (tally.scored, tally.failed, tally.unreadable) == (58, 14, 1)
    errors = pd.read_csv(tmp_path / "out" / local_batch.ERRORS_FILE)
    assert list(errors.columns) == ["file", "row", "error"] and len(errors) == 15
    assert "6 files; 58 rows scored; 14 rows failed; 1 unreadable file(s), rows unknown" in printed
    assert "1 file(s) with no output row" in printed and "failed items 0 (error_threshold: 0)" in printed
    assert "missing.csv 12 rows from row 0: missing column(s) duration" in printed
    assert "typed.csv row 7: column 'age': expected a number, got 'forty'" in printed


# a stand-in scoring script for the parallel run's own behaviour: a file named crash* fails its mini-batch, flaky*
# fails the first try only, skip* returns no row; init() fails when the model folder holds `broken`
TOY_SCRIPT = """
import os
from pathlib import Path

import pandas as pd


def init():
    if (Path(os.environ["AZUREML_MODEL_DIR"]) / "broken").exists():
        raise RuntimeError("the model cannot be loaded: broken")


def run(mini_batch):
    rows = []
    for path in map(Path, mini_batch):
        tried = Path(os.environ["AZUREML_MODEL_DIR"]) / f"{path.name}.tried"
        if path.name.startswith("crash") or (path.name.startswith("flaky") and not tried.exists()):
            tried.touch()
            raise ValueError(f"cannot score {path.name}")
        if not path.name.startswith("skip"):
            rows.append((path.name, 0, "ok", 1.0, None))
    return pd.DataFrame(rows, columns=["file", "row", "status", "prediction", "error"])
"""


@pytest.fixture
def toy(tmp_path):
    script = tmp_path / "toy.py"
    script.write_text(TOY_SCRIPT)
    (tmp_path / "model").mkdir()
    return dataclasses.replace(SETTINGS, scoring_script=script, mini_batch_size=1, max_concurrency_per_instance=2)


def _files(folder, *names):
    folder.mkdir()
    for name in names:
        (folder / name).write_text("x\n1\n")
    return folder


def test_failed_mini_batches_are_retried_and_counted_and_minus_one_ignores_them(toy, tmp_path):
    inputs = _files(tmp_path / "in", "a.csv", "flaky.csv", "crash.csv", "skip.csv")
    lines: list[str] = []
    settings = dataclasses.replace(toy, max_retries=1, error_threshold=-1)
    summary = local_batch.run_batch(settings, tmp_path / "model", inputs, tmp_path / "out", lines.append)
    assert summary.passed
    # crash.csv failed both tries; skip.csv came back with no row: Azure counts both against error_threshold
    assert summary.failed_items == 2
    assert any("[flaky.csv] failed (ValueError: cannot score flaky.csv); try 2" in line for line in lines)
    assert any("[crash.csv] failed after 2 tries: ValueError: cannot score crash.csv" in line for line in lines)
    assert set(_output(tmp_path / "out" / "predictions.csv", ("file", "row", "status", "prediction", "error")).file) == {
        "a.csv", "flaky.csv"
    }  # fmt: skip


def test_passing_error_threshold_stops_the_run_and_exits_non_zero(toy, tmp_path, monkeypatch, capsys):
    inputs = _files(tmp_path / "in", "a.csv", "crash.csv", "crash2.csv")
    monkeypatch.setattr(LocalTarget, "latest_model", lambda self, workload: MODEL)
    monkeypatch.setattr(LocalTarget, "model_dir", lambda self, model: tmp_path / "model")
    monkeypatch.setattr(local_batch.BatchSettings, "from_spec", classmethod(lambda cls: dataclasses.replace(toy, max_retries=0)))
    code = cli.main(["batch", "--local", "--workload", "bank-marketing", "--input", str(inputs),
                     "--output", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work")])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1
    assert "failed files passed the deployment's error_threshold (0)" in captured.err
    assert "failed after 1 tries: ValueError: cannot score crash" in captured.out


def test_init_failing_stops_the_run_with_its_traceback(toy, tmp_path):
    (tmp_path / "model" / "broken").touch()
    with pytest.raises(FlowError, match=r"init\(\) of toy.py failed:(.|\n)*RuntimeError: the model cannot be loaded: broken"):
        local_batch.run_batch(toy, tmp_path / "model", _files(tmp_path / "in", "a.csv"), tmp_path / "out", lambda line: None)


def test_an_output_that_exists_is_refused_as_azure_refuses_it(toy, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "predictions.csv").write_text("")
    with pytest.raises(FlowError, match="predictions.csv exists already"):
        local_batch.run_batch(toy, tmp_path / "model", _files(tmp_path / "in", "a.csv"), tmp_path / "out", lambda line: None)


# -- Azure, against the fake workspace --------------------------------------------------------------------------
def _azure(sim: Simulation | None = None, workspace: FakeWorkspace | None = None):
    workspace = workspace or FakeWorkspace(sim)
    return workspace, AzureTarget(workspace.client(OUTPUTS), OUTPUTS, workspace.tracking, poll_seconds=0.002)


def _registered(workspace: FakeWorkspace) -> None:
    from azure.ai.ml.entities import Model

    workspace.models.create_or_update(Model(name=BANK.model, version="3", path="azureml://jobs/j/outputs/results/paths/model/",
                                            tags={"source_job": "bank-marketing-lightgbm-0123456789"}))  # fmt: skip


def test_azure_creates_the_endpoint_and_deployment_invokes_waits_and_counts_the_output(tmp_path, monkeypatch):
    inputs = tmp_path / "in"
    inputs.mkdir()
    bank_frame(25, seed=1).drop(columns="y").to_csv(inputs / "a.csv", index=False)
    bank_frame(15, seed=2).drop(columns="y").to_csv(inputs / "b.csv", index=False)
    (inputs / "binary.csv").write_bytes(b"\xff\xfe\x00")
    workspace, azure = _azure()
    _registered(workspace)
    lines: list[str] = []
    monkeypatch.setattr(azure_batch, "DOWNLOADS", tmp_path / "dl")
    summary = azure_batch.score_latest(azure, BANK, inputs, lines.append)  # registers the environment first

    (endpoint,) = {e.name: e for e in workspace.batch_endpoints.sent}.values()
    assert endpoint.name == entities.endpoint_name(BANK, "batch", OUTPUTS) and endpoint.auth_mode == "aad_token"
    (deployment,) = workspace.batch_deployments.sent
    assert deployment.endpoint_name == endpoint.name and deployment.compute == OUTPUTS[keys.CPU_CLUSTER]
    assert deployment.model == "azureml:bank-marketing-classifier:3"
    assert deployment.environment == azure.assets["tabular-batch"].reference
    # created, then given the deployment as its default
    assert [dict(e.defaults or {}) for e in workspace.batch_endpoints.sent] == [{}, {"deployment_name": deployment.name}]
    (invoked,) = workspace.batch_endpoints.invoked
    assert invoked["deployment"] == deployment.name
    assert (invoked["input"].type, invoked["input"].path) == ("uri_folder", str(inputs.resolve()))

    assert (summary.files, summary.tally.scored, summary.tally.failed, summary.tally.unreadable) == (3, 40, 0, 1)
    assert summary.output == str(tmp_path / "dl" / "batchjob-0001" / "predictions.csv")
    assert summary.location == "https://ml.azure.com/runs/batchjob-0001" and summary.passed
    assert summary.tally.errors[0].startswith("binary.csv: cannot be read as UTF-8 CSV text")

    # again: the deployment already serves this model and is the default, so only the job is new
    azure_batch.score_batch(azure, BANK, azure.registered_model(BANK), inputs, lines.append, tmp_path / "dl")
    assert len(workspace.batch_deployments.sent) == 1 and len(workspace.batch_endpoints.sent) == 2
    assert len(workspace.batch_endpoints.invoked) == 2
    assert any("already serves this" in line for line in lines)


def test_a_failed_batch_job_is_reported_with_its_error_and_log(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    bank_frame(5).drop(columns="y").to_csv(inputs / "a.csv", index=False)
    workspace, azure = _azure(Simulation(failing_batch="UserError: init() failed: no module named lightgbm"))
    _registered(workspace)
    azure.prepare([BANK], lambda line: None, data=False)
    with pytest.raises(FlowError) as failure:
        azure_batch.score_batch(azure, BANK, MODEL, inputs, lambda line: None, tmp_path / "dl")
    message = str(failure.value)
    assert "batch job batchjob-0001 on bank-marketing-batch-" in message
    assert "Failed: UserError: init() failed: no module named lightgbm" in message
    assert "logs/user/error.txt" in message and "az ml job download --name batchjob-0001 --all" in message
    assert not (tmp_path / "dl").exists()  # nothing downloaded from a failed job


def test_the_dry_run_documents_print_as_the_dry_run_prints_entities():
    registered = {asset.name: asset for asset in azure_assets.environment_assets()}
    (_, endpoint), (_, deployment) = azure_batch.dry_run_documents(BANK, OUTPUTS, registered, MODEL)
    assert yaml.safe_load(to_yaml(endpoint))["name"] == entities.endpoint_name(BANK, "batch", OUTPUTS)
    printed = yaml.safe_load(to_yaml(deployment))
    assert printed["compute"].endswith(OUTPUTS[keys.CPU_CLUSTER]) and printed["settings"]["mini_batch_size"] == SETTINGS.mini_batch_size


# -- the flow's check of the sample ----------------------------------------------------------------------------
def test_the_sample_is_one_file_per_record_and_its_output_must_match_the_online_answers(tmp_path):
    request = {"data": [{"age": 58.0, "job": "management", "balance": None}, {"age": 41.0, "job": "technician", "balance": 849.0}]}
    assert write_sample(request, tmp_path / "sample") == 2
    assert (tmp_path / "sample" / "sample-2.csv").read_text().splitlines() == ["age,job,balance", "41.0,technician,849.0"]
    assert pd.read_csv(tmp_path / "sample" / "sample-1.csv").balance.isna().all()  # null: an empty field

    def summary(rows: list[str]) -> BatchSummary:
        output = tmp_path / f"predictions-{len(list(tmp_path.glob('predictions-*')))}.csv"
        output.write_text("".join(f"{row}\n" for row in rows))
        return BatchSummary(str(output), 2, read_output(output), 0, 0)

    answers = [{"label": "yes", "probability": 0.75}, {"label": "no", "probability": 0.125}]
    # the output's mini-batches come in the order they finish: rows are matched to records by file
    agreeing = summary(["sample-2.csv 0 ok no 0.125 ", "sample-1.csv 0 ok yes 0.75 "])
    assert sample_problem(agreeing, 2, answers) is None
    assert sample_problem(agreeing, 2, None) is None  # a workload served in batch only: the counts alone
    differing = summary(["sample-1.csv 0 ok yes 0.75 ", "sample-2.csv 0 ok no 0.5 "])
    assert sample_problem(differing, 2, answers) == (
        "sample-2.csv: the batch output ['no', '0.5'] differs from the online answer {'label': 'no', 'probability': 0.125}"
    )
    failed = summary(["sample-1.csv 0 ok yes 0.75 ", 'sample-2.csv 0 error   "column \'age\': expected a number"'])
    assert sample_problem(failed, 2, answers).startswith("expected 2 rows scored and none failed; 2 files; 1 rows scored; 1 rows failed")
    regression = summary(["sample-1.csv 0 ok 101.5 ", "sample-2.csv 0 ok 99.25 "])
    assert sample_problem(regression, 2, [101.5, 99.25]) is None
    assert sample_problem(regression, 2, [101.5, 99.0]) == "sample-2.csv: the batch output ['99.25'] differs from the online answer 99.0"
