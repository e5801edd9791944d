"""Workloads load from their folders, and a workload that cannot run is refused with every problem named."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml

from jobs.flow import FlowError, Job, JobResult
from jobs.workloads import WORKLOADS_DIR, WorkloadError, catalog, load_workload, load_workloads, locate_data


def shipped():
    by_name = {workload.name: workload for workload in load_workloads()}
    return by_name["housing"], by_name["bank-marketing"]


def test_the_shipped_workloads():
    assert [workload.name for workload in load_workloads()] == ["bank-marketing", "housing"]  # folder order
    housing, bank = shipped()
    assert [job.key for job in housing.jobs] == ["housing-lightgbm", "housing-mlp-sweep", "housing-automl-regression"]
    assert [job.key for job in bank.jobs] == ["bank-marketing-lightgbm", "bank-marketing-automl-classification"]
    assert (housing.task, housing.metric, housing.goal, housing.model) == ("regression", "MAE", "minimize", "housing-regressor")
    assert (bank.task, bank.metric, bank.goal, bank.model) == ("classification", "AUC_weighted", "maximize", "bank-marketing-classifier")
    assert housing.online == ("managed", "kubernetes") and bank.online == ("managed",)
    assert (bank.data.target, bank.data.member) == ("y", "bank.zip/bank-full.csv")
    assert set(catalog([housing, bank])) == {"housing", "bank-marketing"}
    for workload in (housing, bank):
        assert workload.request()["data"], workload.name


def copy_of(name: str, tmp_path: Path) -> Path:
    """A copy of a shipped workload's folder to change, under a workloads root of its own."""
    root = tmp_path / "workloads"
    shutil.copytree(WORKLOADS_DIR / name, root / name)
    return root


def edit(folder: Path, change) -> None:
    path = folder / "workload.yml"
    document = yaml.safe_load(path.read_text())
    change(document)
    path.write_text(yaml.safe_dump(document))


@pytest.mark.parametrize(
    "change, says",
    [
        (lambda d: d.update(candidates=["lightgbm.yml", "no-such-spec.yml"]), "candidates[1]: spec not found"),
        (lambda d: d["compare"].update(metric="MAPE"), "compare.metric: 'MAPE' is not a held-out metric of regression"),
        (lambda d: d["compare"].update(goal="maximize"), "compare.goal: 'maximize', but a better MAE is lower"),
        (lambda d: d.update(name="Housing Prices"), "name: 'Housing Prices': 2-17 lower-case letters"),
        (lambda d: d.update(name="houses"), "differs from its folder's name 'housing'"),
        (lambda d: d["data"].pop("target"), "data.target: required"),
        (lambda d: d["data"].update(task="forecasting"), "data.task: 'forecasting'; allowed: regression, classification"),
        (lambda d: d["serve"].update(online=["managed", "batch-ish"]), "serve.online"),
        (lambda d: d["serve"].update(sample_request="missing.json"), "serve.sample_request"),
        (lambda d: d.update(model="a model with spaces"), "model: 'a model with spaces'"),
        (lambda d: d.update(owner="me"), "owner: not a workload key"),
        (lambda d: d.update(candidates=["lightgbm.yml", "lightgbm.yml"]), "housing-lightgbm is listed twice"),
    ],
)
def test_a_bad_workload_is_refused_naming_the_file_and_the_key(tmp_path, change, says):
    root = copy_of("housing", tmp_path)
    edit(root / "housing", change)
    with pytest.raises(WorkloadError) as refused:
        load_workload(root / "housing")
    assert str(root / "housing" / "workload.yml") in str(refused.value)
    assert says in str(refused.value)


def test_every_problem_is_reported_at_once(tmp_path):
    root = copy_of("housing", tmp_path)
    edit(root / "housing", lambda d: (d["compare"].update(metric="MAPE"), d.update(model=""), d["data"].pop("file")))
    with pytest.raises(WorkloadError) as refused:
        load_workload(root / "housing")
    # the file, then one line per problem: the retraining pipeline's metric no longer agrees either
    assert len(str(refused.value).splitlines()) == 5


def test_an_automl_spec_must_fit_its_workload(tmp_path):
    root = copy_of("housing", tmp_path)
    spec = root / "housing" / "automl-regression.yml"
    spec.write_text(spec.read_text().replace("target_column_name: median_house_value", "target_column_name: price"))
    with pytest.raises(WorkloadError, match=r"target_column_name 'price', but the data's target is 'median_house_value'"):
        load_workload(root / "housing")


def test_two_folders_declaring_one_name_and_unknown_names_are_refused(tmp_path):
    root = copy_of("housing", tmp_path)
    shutil.copytree(root / "housing", root / "housing2")
    edit(root / "housing2", lambda d: (d.update(name="housing"), d.pop("retrain")))  # its pipeline trains housing
    with pytest.raises(WorkloadError, match="differs from its folder's name"):
        load_workloads(root=root)
    edit(root / "housing2", lambda d: d.update(name="housing2"))
    assert [w.name for w in load_workloads(root=root)] == ["housing", "housing2"]
    with pytest.raises(WorkloadError, match=r"unknown workload\(s\) fraud; known: housing, housing2"):
        load_workloads(["fraud"], root=root)
    with pytest.raises(WorkloadError, match="no workloads"):
        load_workloads(root=tmp_path / "empty")


def test_a_folder_without_its_workload_file(tmp_path):
    with pytest.raises(WorkloadError, match="no workload.yml"):
        load_workload(tmp_path)


def test_the_best_candidate_follows_the_metrics_direction():
    housing, bank = shipped()

    def result(workload, key, **metrics):
        return JobResult(Job(workload.name, key, Path(key)), key, "Completed", metrics)

    housing_results = [result(housing, "a", MAE=30_000.0), result(housing, "b", MAE=25_000.0)]
    assert housing.best(housing_results).job.key == "b"
    bank_results = [result(bank, "c", AUC_weighted=0.93), result(bank, "d", AUC_weighted=0.95)]
    assert bank.best(bank_results + housing_results).job.key == "d"  # only its own candidates
    with pytest.raises(Exception, match="held-out AUC_weighted missing from the results of e"):
        bank.best([result(bank, "e", accuracy=0.9)])


def test_a_sample_request_must_hold_records(tmp_path):
    root = copy_of("bank-marketing", tmp_path)
    (root / "bank-marketing" / "sample-request.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(WorkloadError, match="serve.sample_request"):
        load_workload(root / "bank-marketing")


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_a_missing_data_file_is_downloaded_once_from_its_source_archive_member(tmp_path, monkeypatch):
    _, bank = shipped()
    rows = b"age;y\n30;no\n"
    archive = zipped({"bank.zip": zipped({"bank-full.csv": rows, "bank.csv": b"other"}), "bank-additional.zip": b""})
    fetched = []
    monkeypatch.setattr("jobs.workloads.urlopen", lambda url, timeout: fetched.append(url) or io.BytesIO(archive))
    path = locate_data(bank, tmp_path / "data", tmp_path / "data")
    assert path == tmp_path / "data" / "bank-marketing.csv" and path.read_bytes() == rows
    assert locate_data(bank, tmp_path / "data", tmp_path / "data") == path and fetched == [bank.data.source]


def test_a_failed_download_names_the_file_the_folder_and_where_to_get_it(tmp_path):
    _, bank = shipped()  # the suite's own fixture refuses every download
    with pytest.raises(FlowError) as raised:
        locate_data(bank, tmp_path, tmp_path)
    message = str(raised.value)
    assert f"data file bank-marketing.csv not found in {tmp_path}" in message and bank.data.source in message
    assert "the archive member bank.zip/bank-full.csv" in message and not list(tmp_path.iterdir())
    assert locate_data(bank, tmp_path, tmp_path, offline=True) is None  # a dry run never downloads
