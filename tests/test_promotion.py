"""Promotion between two local environments through the local ML registry (jobs/promotion.py): dev's champion is
published with its lineage, prod compares it on its own held-out rows and serves it unchanged, a weaker dev model
(trained on fewer rows, a real run) is refused naming both figures, --force and --rollback. Models come from
train.py in this process (tests/test_score.py's helper) on generated bank marketing data."""

from __future__ import annotations

import dataclasses
import json
import re
from types import SimpleNamespace

import pytest
from azure.ai.ml.entities import Model
from azure.core.exceptions import ServiceRequestError

from infra import outputs as keys
from jobs import cli, promotion
from jobs.azure import entities as azure_entities
from jobs.azure import promotion as azure_promotion
from jobs.azure.commands import dry_run_promotion
from jobs.azure.promotion import ENVIRONMENTS_TAG, AzureEnvironment, AzureMlRegistry, check_pair
from jobs.azure.target import AzureTarget
from jobs.flow import FlowError, git_commit, model_folder
from jobs.local.promotion import LocalEnvironment, LocalMlRegistry
from jobs.local.target import LocalTarget
from jobs.workloads import WorkloadError, load_workload, load_workloads
from tests.azure_fake import AssetOperations, FakeWorkspace, ModelOperations, Simulation, arm_error
from tests.bank_sample import bank_frame
from tests.test_azure_stage import OUTPUTS
from tests.test_workloads import copy_of, edit
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


def test_dev_to_prod_serves_dev_files_unchanged_with_their_lineage(environments, tmp_path_factory, capsys):
    data, work, dev, prod = environments
    first = registered_in(dev, tmp_path_factory.mktemp("strong"), bank_frame(1200))
    # the CLI's four steps, with the online endpoint only (the batch sample's rollout is the Azure test's, on mocks)
    lines: list[str] = []
    source, destination = LocalEnvironment("dev", dev), LocalEnvironment("prod", prod)
    promotion.promote(source, destination, LocalMlRegistry(work / "ml-registry"), dataclasses.replace(BANK, batch=False), lines.append)
    printed = "\n".join(lines)
    # prod serves dev's files, byte for byte, with their lineage
    served = prod.registered_model(BANK, "1")
    dev_files = promotion.file_hashes(model_folder(dev.model_dir(dev.registered_model(BANK, first))))
    assert promotion.file_hashes(model_folder(prod.model_dir(served))) == dev_files
    tags = LocalEnvironment("prod", prod).model_tags(served)
    assert tags["lineage.source_environment"] == "dev" and tags["lineage.source_version"] == first
    assert tags["lineage.data"] == BANK.data.file and tags["lineage.git_commit"] == git_commit()  # the stage's own
    assert tags[promotion.REGISTRY_VERSION_TAG] == "1" and tags[promotion.PREVIOUS_TAG] == "" and "nothing live yet" in printed
    assert "local-bank-marketing answers the sample with bank-marketing-classifier:1" in printed
    # the ML registry holds the files, their hashes, and the conda spec they serve with
    (published,) = LocalMlRegistry(work / "ml-registry").versions(BANK.model)
    assert published.lineage["files"] == dev_files and (work / "ml-registry" / BANK.model / "1" / "conda.yaml").is_file()

    # a weaker model is refused in the Azure test below (the same compare), and on real data by `promote --local --demo`
    # nothing was live before version 1: there is nothing to roll back to (--force and --rollback roll out in the
    # Azure test below, on mocked endpoints, and in `promote --local --demo`)
    arguments = ["promote", "--local", "--workload", BANK.name, "--data-dir", str(data), "--work-dir", str(work)]
    assert cli.main([*arguments, "--to", "prod", "--rollback"]) == 1
    assert "replaced nothing" in capsys.readouterr().err
    assert LocalEnvironment("prod", prod).live_version(BANK) == "1"


def test_bad_input_is_named_and_changes_nothing(environments, tmp_path):
    data, work, dev, prod = environments
    registry = LocalMlRegistry(tmp_path / "ml-registry")
    source, destination = LocalEnvironment("dev", dev), LocalEnvironment("prod", prod)
    with pytest.raises(FlowError, match=f"no {BANK.model} version 99 in the local registry"):
        promotion.promote(source, destination, registry, BANK, lambda line: None, version="99")
    # a model without the environment it serves with cannot go into the ML registry
    model = tmp_path / "model"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")
    with pytest.raises(FlowError, match="the model has no conda.yaml"):
        registry.publish(BANK.model, model, {}, lambda line: None)
    with pytest.raises(FlowError, match="no bank-marketing-classifier version 7 .published: none"):
        registry.get(BANK.model, "7")
    assert not (tmp_path / "ml-registry").exists()
    fresh = LocalEnvironment("staging", LocalTarget(data, tmp_path / "staging", workers=1))
    with pytest.raises(FlowError, match="staging: bank-marketing serves nothing; nothing to roll back"):
        promotion.rollback(fresh, BANK, lambda line: None)
    assert cli.main(["promote", "--local", "--workload", "nowhere", "--to", "prod"]) == 1


# -- Azure: the same steps over three mocked clients (dev's workspace, the ML registry, prod's workspace) -------------

REGISTRY_NAME = "mlr-mlp-69e5f"


def stack_outputs(environment: str) -> dict:
    return {**OUTPUTS, keys.ENVIRONMENT: environment, keys.WORKSPACE: f"mlw-mlp-{environment}", keys.RESOURCE_GROUP: f"rg-mlp-{environment}",
            keys.ML_REGISTRY_NAME: REGISTRY_NAME, keys.ML_REGISTRY_ACCESS: "publish" if environment == "dev" else "read"}  # fmt: skip


def registered_in_workspace(workspace: FakeWorkspace, root, frame, version: str) -> str:
    """A model trained by train.py on `frame`, registered in a mocked workspace as the stage registers a winner (its
    files on this machine, so that the fake downloads them)."""
    folder = trained_root(root, frame, BANK.data.target, BANK.task, BANK.model) / BANK.model / "1"
    auc = json.loads((folder / "metrics.json").read_text())[BANK.metric]
    workspace.models.create_or_update(Model(name=BANK.model, version=version, path=str(folder / "model"), type="mlflow_model",
                                            tags={"workload": BANK.name, "metric": BANK.metric, BANK.metric: f"{auc:.6g}",
                                                  "source_job": f"bank-marketing-lightgbm-{version}", "job": "bank-marketing-lightgbm"}))  # fmt: skip
    return version


def azure_environment(environment: str, data_dir) -> tuple[AzureEnvironment, FakeWorkspace]:
    workspace = FakeWorkspace()
    outputs = stack_outputs(environment)
    return AzureEnvironment(AzureTarget(workspace.client(outputs), outputs, workspace.tracking, data_dir, poll_seconds=0.002)), workspace


def fake_registry(sim=None) -> SimpleNamespace:
    """An MLClient on the ML registry, at the operations level: its models and environments."""
    sim = sim or Simulation()
    return SimpleNamespace(models=ModelOperations(sim), environments=AssetOperations(sim, "environments"))


@pytest.fixture(scope="module")
def azure(environments, tmp_path_factory):
    """dev's workspace with a model registered from a real train.py run (its files on this machine), prod's with
    nothing live yet, and an empty ML registry."""
    data, *_ = environments
    dev, dev_workspace = azure_environment("dev", data)
    prod, prod_workspace = azure_environment("prod", data)
    registered_in_workspace(dev_workspace, tmp_path_factory.mktemp("azure-dev"), bank_frame(1200), "1")
    prod.target.prepare([BANK], lambda line: None, data=False)
    with pytest.MonkeyPatch.context() as patch:  # downloads into the test's folders, not the checkout's .local/
        patch.setattr(azure_promotion, "DOWNLOADS", tmp_path_factory.mktemp("downloads"))
        yield dev, prod, prod_workspace, fake_registry(), dev_workspace


def test_in_azure_prod_serves_dev_files_refuses_a_weaker_model_and_rolls_back(azure, tmp_path_factory):
    dev, prod, prod_workspace, registry_client, dev_workspace = azure
    lines = []
    registry = AzureMlRegistry(registry_client, REGISTRY_NAME, "dev")
    model = promotion.promote(dev, prod, registry, BANK, lines.append)
    # the ML registry: dev's files, their lineage, and the environments they serve with, created there first
    published = registry_client.models.get(BANK.model, version="1")
    assert published.tags["source_environment"] == "dev" and published.tags["source_version"] == "1"
    assert published.tags["source_job"] == "bank-marketing-lightgbm" and published.tags["data"] == BANK.data.file
    served_with = published.tags[ENVIRONMENTS_TAG].split(",")
    assert sorted(e.split(":")[0] for e in served_with) == ["tabular-batch", "tabular-inference"]
    assert all(registry_client.environments.get(*e.split(":")) for e in served_with)
    # prod: a version of its own holding the same bytes, tagged with where it came from, rolled out everywhere
    dev_files = promotion.file_hashes(dev.model_files(dev.registered_model(BANK, "1")))
    assert promotion.file_hashes(prod.model_files(model)) == dev_files
    tags = prod_workspace.models.get(BANK.model, version=model.version).tags
    assert tags["lineage.source_environment"] == "dev" and tags[promotion.REGISTRY_VERSION_TAG] == "1" and tags[promotion.PREVIOUS_TAG] == ""
    assert {d.model for d in prod_workspace.online_deployments.sent} == {f"azureml:{BANK.model}:{model.version}"}
    assert prod.live_version(BANK) == model.version
    assert any("answers the sample" in line for line in lines) and any("nothing live yet" in line for line in lines)
    # the same files again: nothing new in the registry
    assert registry.publish(BANK.model, dev.model_files(dev.registered_model(BANK, "1")), {}, lines.append)[1] is False

    # a weaker dev model (trained on 80 rows) is refused naming both figures, and prod's versions stay as they were
    weaker = registered_in_workspace(dev_workspace, tmp_path_factory.mktemp("azure-weak"), bank_frame(80, seed=5), "2")
    with pytest.raises(promotion.PromotionRefused, match=f"prod keeps version {model.version}: .* scores {BANK.metric}=.* live model's {BANK.metric}="):
        promotion.promote(dev, prod, registry, BANK, lines.append, version=weaker)
    assert [m.version for m in prod_workspace.models.list(BANK.model)] == [model.version]
    # --force rolls it out all the same, replacing version 1; --rollback serves version 1 again, on every endpoint
    forced = promotion.promote(dev, prod, registry, BANK, lines.append, version=weaker, force=True)
    assert prod.live_version(BANK) == forced.version and prod.model_tags(forced)[promotion.PREVIOUS_TAG] == model.version
    assert promotion.rollback(prod, BANK, lines.append).version == model.version == prod.live_version(BANK)
    live = [prod_workspace.online_endpoints.get(endpoint).traffic for endpoint in
            (azure_entities.endpoint_name(BANK, kind, prod.outputs) for kind in BANK.online)]  # fmt: skip
    assert all(len([share for share in traffic.values() if share]) == 1 for traffic in live)


@pytest.mark.parametrize(
    "source, target, says",
    [
        ("prod", "prod", "--from-outputs: stack prod's ml_registry_access is 'read'; a promotion from a stack needs 'publish'"),
        ("dev", "dev", "--to-outputs: stack dev's ml_registry_access is 'publish'; a promotion to a stack needs 'read'"),
        ("none", "prod", "--from-outputs: stack dev exports no ml_registry_name"),
        ("dev", "other", "name different ML registries"),
    ],
)
def test_outputs_of_the_wrong_stack_are_refused_before_anything_connects(source, target, says):
    outputs = {"dev": stack_outputs("dev"), "prod": stack_outputs("prod"),
               "none": {k: v for k, v in stack_outputs("dev").items() if k != keys.ML_REGISTRY_NAME},
               "other": {**stack_outputs("prod"), keys.ML_REGISTRY_NAME: "mlr-elsewhere"}}  # fmt: skip
    with pytest.raises(FlowError, match=re.escape(says)):
        check_pair(outputs[source], outputs[target])


def failing(error):
    def call(*args, **kwargs):
        raise error

    return call


def test_a_registry_it_may_not_write_to_or_cannot_reach_and_a_missing_environment_are_named(azure, monkeypatch):
    dev, *_ = azure
    files = dev.model_files(dev.registered_model(BANK, "1"))
    denied = fake_registry()
    monkeypatch.setattr(denied.environments, "create_or_update", failing(arm_error(403, "AuthorizationFailed", "does not have authorization")))
    with pytest.raises(FlowError, match=f"dev may not create environments in the ML registry {REGISTRY_NAME}: .*its publisher role"):
        AzureMlRegistry(denied, REGISTRY_NAME, "dev").publish(BANK.model, files, {"source_environment": "dev", "source_version": "1"}, print)
    assert denied.models.created == []
    unreachable = fake_registry()
    monkeypatch.setattr(unreachable.models, "get", failing(ServiceRequestError("Failed to resolve 'westeurope.api.azureml.ms'")))
    with pytest.raises(FlowError, match=f"prod cannot reach the ML registry {REGISTRY_NAME} .read models.: Failed to resolve"):
        AzureMlRegistry(unreachable, REGISTRY_NAME, "prod").get(BANK.model, "1")
    # published, then its environment gone from the registry: prod refuses before it downloads or registers anything
    registry_client = fake_registry()
    registry = AzureMlRegistry(registry_client, REGISTRY_NAME, "dev")
    published, _ = registry.publish(BANK.model, files, {"source_environment": "dev", "source_version": "1"}, print)
    registry_client.environments.store.clear()
    with pytest.raises(FlowError, match="serves with environment tabular-.*which is not in the registry"):
        registry.download(published)
    assert registry_client.models.downloads == []
    with pytest.raises(FlowError, match=f"ML registry {REGISTRY_NAME}: no {BANK.model} version 9"):
        registry.get(BANK.model, "9")


def test_the_dry_run_prints_every_call_across_the_three_clients(capsys):
    dry = dry_run_promotion(stack_outputs("dev"), stack_outputs("prod"), BANK)
    for client in ("[dev workspace mlw-mlp-dev]", f"[ML registry {REGISTRY_NAME}]", "[prod workspace mlw-mlp-prod]"):
        assert client in dry
    assert "environments.create_or_update, unless there: tabular-inference" in dry
    assert f"models.create_or_update {BANK.model}:M" in dry and f"models.create_or_update {BANK.model}:K" in dry
    assert dry.count("deployment: created at 0%, smoke-tested, then 100%") == len(BANK.online)
    assert f"model: azureml:{BANK.model}:K" in dry


def test_a_workload_chooses_its_promotion_and_a_bad_choice_is_named(tmp_path):
    assert {workload.promotion for workload in load_workloads()} == {"registry"}
    root = copy_of("housing", tmp_path)
    edit(root / "housing", lambda document: document.update(promotion="copy"))
    with pytest.raises(WorkloadError, match="promotion: 'copy'; allowed: train, registry"):
        load_workload(root / "housing")
    edit(root / "housing", lambda document: document.update(promotion="registry") or document["retrain"]["environments"].update(prod={"enabled": True}))
    with pytest.raises(WorkloadError, match="retrain.environments.prod.enabled: true, but promotion: registry retrains in dev only"):
        load_workload(root / "housing")
    edit(root / "housing", lambda document: document.pop("promotion"))
    assert load_workload(root / "housing").promotion == "train"  # every environment trains its own, as before


def test_prods_stage_trains_no_registry_workload_and_devs_trains_them(environments, capsys):
    data, *_ = environments
    prod, prod_workspace = azure_environment("prod", data)
    cli.run(SimpleNamespace(workload=[]), prod.target)
    printed = capsys.readouterr().out
    assert prod_workspace.jobs.submitted == [] and prod_workspace.online_deployments.sent == []
    assert all(f"{name}: promotion: registry, so it is not trained here" in printed for name in ("housing", "bank-marketing"))


def test_the_command_publishes_as_dev_and_reaches_prod_with_its_own_outputs(azure, environments, tmp_path, monkeypatch, capsys):
    """`promote --from-outputs dev.json` publishes, signed in as dev (its target from its own outputs, the registry's
    client with its credential); `--to-outputs prod.json` works on prod alone; then the dry run and the wrong stack."""
    from jobs.azure import commands

    dev, *_ = azure
    data, *_ = environments
    prod, _ = azure_environment("prod", data)  # its own prod and ML registry: nothing promoted there yet
    prod.target.prepare([BANK], lambda line: None, data=False)
    registry_client = fake_registry()
    targets = {"dev": dev.target, "prod": prod.target}
    signed = []
    monkeypatch.setattr(commands, "target", lambda outputs, data_dir=None: targets[outputs[keys.ENVIRONMENT]])
    monkeypatch.setattr(azure_promotion, "registry_client", lambda credential, name: signed.append(name) or registry_client)
    files = {}
    for name in ("dev", "prod"):
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(stack_outputs(name)))
    arguments = ["promote", "--workload", BANK.name, "--data-dir", str(data)]
    assert cli.main([*arguments, "--from-outputs", str(files["dev"])]) == 0  # publish only: dev's job
    assert f"as {BANK.model}:1 (azureml://registries/{REGISTRY_NAME}/models/{BANK.model}/versions/1)" in capsys.readouterr().out
    assert signed == [REGISTRY_NAME] and targets["prod"].ml_client.models.list(BANK.model) == []
    assert cli.main([*arguments, "--to-outputs", str(files["prod"]), "--rollback"]) == 1  # prod's job: nothing live yet
    assert "prod: bank-marketing serves nothing; nothing to roll back" in capsys.readouterr().err
    assert cli.main([*arguments, "--to-outputs", str(files["prod"]), "--dry-run"]) == 0
    assert f"[ML registry {REGISTRY_NAME}] environments.get, then models.download" in capsys.readouterr().out
    assert cli.main([*arguments, "--from-outputs", str(files["prod"]), "--to-outputs", str(files["prod"])]) == 1
    assert "outputs of the wrong stack?" in capsys.readouterr().err
