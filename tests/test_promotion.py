"""Promotion between two local environments through the local ML registry (jobs/promotion.py): dev's champion is
published with its lineage, prod compares it on its own held-out rows and serves it unchanged, a weaker dev model
(trained on fewer rows, a real run) is refused naming both figures, --force and --rollback. Models come from
train.py in this process (tests/test_score.py's helper) on generated bank marketing data."""

from __future__ import annotations

import json

import pytest

from jobs import cli, promotion
from jobs.flow import FlowError, model_folder
from jobs.local.target import LocalTarget
from jobs.workloads import load_workloads
from tests.bank_sample import bank_frame
from tests.test_score import trained_root

(BANK,) = load_workloads(["bank-marketing"])


def registered_in(target: LocalTarget, root, frame) -> str:
    """A model trained by train.py on `frame`, registered in the target as the flow registers a winner."""
    folder = trained_root(root, frame, BANK.data.target, BANK.task, BANK.model) / BANK.model / "1"
    metrics = json.loads((folder / "metrics.json").read_text())
    if not target.client.search_registered_models(filter_string=f"name='{BANK.model}'"):
        target.client.create_registered_model(BANK.model)
    tags = {"metric": BANK.metric, BANK.metric: repr(metrics[BANK.metric]), "workload": BANK.name, "source_job": "bank-marketing-lightgbm"}
    return str(target.client.create_model_version(BANK.model, str(folder / "model"), tags=tags).version)


@pytest.fixture(scope="module")
def environments(tmp_path_factory):
    """dev and prod on one work dir, each with its own store; prod's data is the full generated set, dev's too."""
    data = tmp_path_factory.mktemp("data")
    bank_frame(1200).to_csv(data / BANK.data.file, index=False, sep=";")
    work = tmp_path_factory.mktemp("work")
    dev, prod = (LocalTarget(data, work / name, workers=1) for name in ("dev", "prod"))
    dev.prepare([BANK], lambda line: None)
    yield data, work, dev, prod
    dev.close()
    prod.close()


def test_dev_to_prod_serves_dev_files_unchanged_refuses_a_weaker_model_and_rolls_back(environments, tmp_path_factory, capsys):
    data, work, dev, prod = environments
    first = registered_in(dev, tmp_path_factory.mktemp("strong"), bank_frame(1200))
    arguments = ["promote", "--local", "--workload", BANK.name, "--data-dir", str(data), "--work-dir", str(work)]
    assert cli.main([*arguments, "--from", "dev", "--to", "prod"]) == 0
    printed = capsys.readouterr().out
    # prod serves dev's files, byte for byte, with their lineage
    served = prod.registered_model(BANK, "1")
    dev_files = promotion.file_hashes(model_folder(dev.model_dir(dev.registered_model(BANK, first))))
    assert promotion.file_hashes(model_folder(prod.model_dir(served))) == dev_files
    tags = prod.model_tags(served)
    assert tags["lineage.source_environment"] == "dev" and tags["lineage.source_version"] == first
    assert tags["lineage.data"] == BANK.data.file and len(tags["lineage.git_commit"]) in (40, len("unknown"))
    assert tags["ml_registry_version"] == "1" and "nothing live yet" in printed
    assert "local-bank-marketing answers the sample with bank-marketing-classifier:1" in printed
    # the ML registry holds the files, their hashes, and the conda spec they serve with
    (published,) = promotion.LocalMlRegistry(work / "ml-registry").versions(BANK.model)
    assert published.lineage["files"] == dev_files and (published.folder / "conda.yaml").is_file()

    # a weaker dev run (trained on 80 rows): prod measures it on its own held-out rows and keeps what it serves
    weaker = registered_in(dev, tmp_path_factory.mktemp("weak"), bank_frame(80, seed=5))
    assert cli.main([*arguments, "--from", "dev", "--to", "prod"]) == 1
    refusal = capsys.readouterr().err
    assert f"prod keeps version 1: the candidate {BANK.model}:2 scores {BANK.metric}=" in refusal
    assert f"against the live model's {BANK.metric}=" in refusal
    assert [entry["version"] for entry in promotion.history(prod, BANK)] == ["1"]

    # --force rolls it out all the same; --rollback returns prod to version 1
    assert cli.main([*arguments, "--from", "dev", "--to", "prod", "--version", weaker, "--force"]) == 0
    assert prod.registered_model(BANK).version == "2"
    assert cli.main([*arguments, "--to", "prod", "--rollback"]) == 0
    assert "rolled back bank-marketing to bank-marketing-classifier:1" in capsys.readouterr().out
    assert [(entry["action"], entry["version"]) for entry in promotion.history(prod, BANK)] == [("promote", "1"), ("promote", "2"), ("rollback", "1")]


def test_bad_input_is_named_and_changes_nothing(environments, tmp_path):
    data, work, dev, prod = environments
    registry = promotion.LocalMlRegistry(tmp_path / "ml-registry")
    with pytest.raises(FlowError, match=f"no {BANK.model} version 99 in the local registry"):
        promotion.promote(dev, prod, registry, BANK, lambda line: None, environments=("dev", "prod"), version="99")
    # a model without the environment it serves with cannot go into the ML registry
    model = tmp_path / "model"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")
    with pytest.raises(FlowError, match="the model has no conda.yaml"):
        registry.publish(BANK.model, model, {})
    with pytest.raises(FlowError, match="no bank-marketing-classifier version 7 .published: none"):
        registry.get(BANK.model, "7")
    assert not (tmp_path / "ml-registry").exists()
    fresh = LocalTarget(data, tmp_path / "staging", workers=1)
    with pytest.raises(FlowError, match="0 promotion.s. on record; nothing to roll back to"):
        promotion.rollback(fresh, BANK, lambda line: None)
