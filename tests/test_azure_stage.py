"""The Azure target, offline: a real MLClient with a fake credential, its operations replaced by an
in-memory workspace (tests/azure_fake.py) that records every entity sent."""

from __future__ import annotations

import socket

import pytest
import yaml

from infra import outputs as keys
from jobs import flow
from jobs.flow import COLLECTOR_ROOT
from jobs.azure import assets as azure_assets, entities as azure_entities
from jobs.azure.rollout import RolloutOptions
from jobs.azure.target import AzureTarget, connect
from jobs.workloads import load_workloads
from tests.azure_fake import FakeClock, FakeCredential, FakeWorkspace, Simulation, fake_answer

# as `pulumi stack output --json` prints a public stack without a GPU cluster: no gpu_cluster_name at all
OUTPUTS = {
    keys.SUBSCRIPTION_ID: "00000000-0000-4000-8000-000000000001",
    keys.TENANT_ID: "00000000-0000-4000-8000-000000000002",
    keys.RESOURCE_GROUP: "rg-test",
    keys.LOCATION: "westeurope",
    keys.WORKSPACE: "mlw-test",
    keys.ENVIRONMENT: "dev",
    keys.CPU_CLUSTER: "cpu-from-outputs",
    keys.KUBERNETES_COMPUTE: "k8s-from-outputs",
    keys.KUBERNETES_INSTANCE_TYPE: "instance-type-from-outputs",
    keys.KEY_VAULT_URI: "https://kv-test.vault.azure.net/",
    keys.STORAGE_ACCOUNT: "sttestfromoutputs",
    keys.NETWORK_ISOLATION: "public",
    keys.REGISTRY_LOGIN_SERVER: "crtest.azurecr.io",
    keys.AUTOMATION_CLIENT_ID: "00000000-0000-4000-8000-000000000005",
}
WORKLOADS = {workload.name: workload for workload in load_workloads()}
HOUSING, BANK = WORKLOADS["housing"], WORKLOADS["bank-marketing"]
JOBS = [job for workload in WORKLOADS.values() for job in workload.jobs]


def endpoint(workload, kind: str, outputs=OUTPUTS) -> str:
    return azure_entities.endpoint_name(workload, kind, outputs)


def done(summary: flow.Summary, workload) -> flow.WorkloadSummary:
    return next(item for item in summary.workloads if item.workload.name == workload.name)


def stage(data_dir, sim: Simulation | None = None, outputs=OUTPUTS, workspace: FakeWorkspace | None = None, **options):
    workspace = workspace or FakeWorkspace(sim)
    client = workspace.client(outputs)
    return workspace, AzureTarget(client, outputs, workspace.tracking, data_dir, poll_seconds=0.002, **options)


def run(target) -> tuple[flow.Summary, list[str]]:
    lines: list[str] = []
    summary = flow.run(target, list(WORKLOADS.values()), lines.append)
    return summary, lines


def traffic_steps(workspace: FakeWorkspace, endpoint: str) -> list[dict]:
    return [traffic for kind, name, traffic in workspace.online_endpoints.events if kind == "traffic" and name == endpoint]


def test_the_suites_check_for_experimental_entities_answers_as_azure_ai_mls():
    """tests/conftest.py swaps azure-ai-ml's stack inspection for one that reads frame names only: the same answers."""
    from azure.ai.ml._utils import _experimental

    check = _experimental._should_skip_warning
    assert check is not check.replaces

    def _from_rest_object():  # azure-ai-ml's name for building an entity from a REST object: no warning then
        return check(), check.replaces()

    assert _from_rest_object() == (True, True) and (check(), check.replaces()) == (False, False)


def test_run_sends_the_entities_built_from_the_outputs(data_dir):
    # jobs stay Running until every workload's jobs are submitted: a one-at-a-time submitter fails this test
    workspace, target = stage(data_dir, Simulation(wait_for_submissions=len(JOBS)))
    summary, lines = run(target)

    data = {entity.name: entity for entity in workspace.data.created}
    # the stage's data, and (registered by azure-ai-ml before a deployment with a data collector is sent) each
    # online endpoint's collections, under the names and paths the deployments give them
    collected = {f"{endpoint(w, kind)}-{c}": f"{COLLECTOR_ROOT}/{w.name}/{endpoint(w, kind)}/{c}"
                 for w in WORKLOADS.values() for kind in w.online for c in ("model_inputs", "model_outputs")}  # fmt: skip
    assert set(data) == {
        f"{key}{suffix}" for key in ("housing", "bank-marketing") for suffix in ("", "-mltable", "-test-mltable")
    } | set(collected)
    assert {name: data[name].path for name in collected} == collected
    assert data["housing"].type == "uri_file" and data["housing-mltable"].type == "mltable"
    environments = {e.name: e for e in workspace.environments.created}
    # the bank winner, an AutoML model, is served in environments built from its own conda file (below)
    assert set(environments) == {
        "tabular-training-cpu", "tabular-training-gpu", "tabular-inference", "tabular-batch",
        "bank-marketing-classifier-inference", "bank-marketing-classifier-batch",
    }  # fmt: skip

    jobs = {job.tags["job"]: job for job in workspace.jobs.submitted}
    assert set(jobs) == {job.key for job in JOBS}
    assert {job.tags["workload"] for job in jobs.values()} == set(WORKLOADS)
    assert {job.compute for job in jobs.values()} == {OUTPUTS[keys.CPU_CLUSTER]}  # no GPU cluster output
    assert any("no gpu_cluster_name output (GPU cluster off in this stack): housing-mlp-sweep runs on the CPU "
               "cluster cpu-from-outputs" in line for line in lines)
    version = {name: entity.version for name, entity in data.items()}
    assert jobs["housing-lightgbm"].inputs["data"].path == f"azureml:housing:{version['housing']}"
    automl = jobs["housing-automl-regression"]
    assert automl.training_data.path == f"azureml:housing-mltable:{version['housing-mltable']}"
    assert automl.test_data.path == f"azureml:housing-test-mltable:{version['housing-test-mltable']}"
    assert jobs["housing-lightgbm"].environment.startswith("azureml:tabular-training-cpu:")

    models = {model.name: model for model in workspace.models.created}
    assert set(models) == {"housing-regressor", "bank-marketing-classifier"}
    model = models["housing-regressor"]
    winner = jobs["housing-lightgbm"].name  # the lowest held-out MAE in the simulation
    assert model.type == "mlflow_model"
    assert model.path == f"azureml://jobs/{winner}/outputs/results/paths/model/"
    assert model.tags["source_job"] == winner and model.tags["metric"] == "MAE" and model.tags["git_commit"]
    # bank marketing: AutoML's held-out AUC (0.945) beats LightGBM's (0.93); its model comes from the best child
    classifier = models["bank-marketing-classifier"]
    automl = jobs["bank-marketing-automl-classification"].name
    assert classifier.tags["metric"] == "AUC_weighted" and classifier.tags["AUC_weighted"] == "0.945"
    assert classifier.path == f"azureml://jobs/{automl}_7/outputs/artifacts/paths/outputs/mlflow-model/"

    endpoints = {e.name: e for e in workspace.online_endpoints.sent}
    assert set(endpoints) == {endpoint(HOUSING, "managed"), endpoint(HOUSING, "kubernetes"), endpoint(BANK, "managed")}
    managed, kubernetes = endpoints[endpoint(HOUSING, "managed")], endpoints[endpoint(HOUSING, "kubernetes")]
    assert managed.auth_mode == kubernetes.auth_mode == "key"
    assert kubernetes.compute == OUTPUTS[keys.KUBERNETES_COMPUTE]
    deployments = {d.endpoint_name: d for d in workspace.online_deployments.sent}
    assert deployments[managed.name].app_insights_enabled is True
    assert deployments[managed.name].egress_public_network_access is None  # a public stack: Azure's default
    assert deployments[managed.name].model == f"azureml:{model.name}:{model.version}"
    k8s_deployment = deployments[kubernetes.name]
    assert k8s_deployment.instance_type == OUTPUTS[keys.KUBERNETES_INSTANCE_TYPE]
    assert k8s_deployment.resources.requests.cpu and k8s_deployment.resources.limits.memory

    bank = endpoints[endpoint(BANK, "managed")]
    assert deployments[bank.name].model == f"azureml:{classifier.name}:{classifier.version}"
    # AutoML's model needs the AutoML runtime: its own conda file, plus the inference server it lacks by name
    assert classifier.tags["own_environment"] == "true" and "own_environment" not in model.tags
    assert workspace.models.downloads == [(classifier.name, str(classifier.version))]
    online_env = environments["bank-marketing-classifier-inference"]
    assert deployments[bank.name].environment == f"azureml:{online_env.name}:{online_env.version}"
    pip = next(d["pip"] for d in online_env.conda_file["dependencies"] if isinstance(d, dict))
    assert "azureml-train-automl-runtime==1.62.0" in pip and pip.count("inference-schema") == 1
    assert pip[-2:] == ["azureml-inference-server-http", "azureml-ai-monitoring"]  # the server, the data collector's client
    assert "python=3.10.19" in online_env.conda_file["dependencies"]
    assert online_env.image == azure_assets.MODEL_ENVIRONMENT_IMAGE
    assert deployments[managed.name].environment.startswith("azureml:tabular-inference:")
    assert bank.auth_mode == "key" and deployments[bank.name].app_insights_enabled is True

    for name, deployment in ((managed.name, deployments[managed.name].name), (kubernetes.name, k8s_deployment.name),
                             (bank.name, deployments[bank.name].name)):  # fmt: skip
        assert traffic_steps(workspace, name) == [{}, {deployment: 0}, {deployment: 100}]
        events = [e for e in workspace.online_endpoints.events if e[1] == name]
        smoke = events.index(("invoke", name, deployment))
        assert events.index(("traffic", name, {deployment: 100})) > smoke  # smoke test before traffic
    assert done(summary, HOUSING).answers[managed.name] == [fake_answer(False, r) for r in HOUSING.request()["data"]]
    assert done(summary, BANK).answers[bank.name] == [fake_answer(True, r) for r in BANK.request()["data"]]

    # both workloads are served in batch too: the sample request's records, a CSV file each, scored by a batch
    # deployment of the registered model on the CPU cluster, each row as the online endpoint answered it
    batch_deployments = {d.endpoint_name: d for d in workspace.batch_deployments.sent}
    assert set(batch_deployments) == {azure_entities.endpoint_name(w, "batch", OUTPUTS) for w in (HOUSING, BANK)}
    assert {d.model for d in batch_deployments.values()} == {f"azureml:{m.name}:{m.version}" for m in (model, classifier)}
    assert {d.compute for d in batch_deployments.values()} == {OUTPUTS[keys.CPU_CLUSTER]}
    batch_env = environments["bank-marketing-classifier-batch"]
    assert batch_deployments[endpoint(BANK, "batch")].environment == f"azureml:{batch_env.name}:{batch_env.version}"
    assert batch_deployments[endpoint(HOUSING, "batch")].environment.startswith("azureml:tabular-batch:")
    invoked = workspace.batch_endpoints.invoked
    assert {(i["endpoint"], i["deployment"]) for i in invoked} == {(d.endpoint_name, d.name) for d in batch_deployments.values()}
    assert {i["input"].type for i in invoked} == {"uri_folder"}
    for workload in (HOUSING, BANK):
        batch = done(summary, workload).batch
        records = len(workload.request()["data"])
        assert (batch.files, batch.tally.scored, batch.tally.failed) == (records, records, 0)
        assert batch.location.startswith("https://ml.azure.com/runs/batchjob-")
    output = "\n".join(lines)
    assert "swagger.json" in output and "/score" in output
    assert "fake-token" not in output


def test_rerun_with_nothing_changed_creates_nothing(data_dir):
    def sent() -> dict[str, int]:
        return {
            "data": len(workspace.data.created),
            "environments": len(workspace.environments.created),
            "jobs": len(workspace.jobs.submitted),
            "models": len(workspace.models.created),
            "deployments": len(workspace.online_deployments.sent),
            "endpoints": len(workspace.online_endpoints.sent),
        }

    workspace, target = stage(data_dir)
    run(target)
    first = sent()
    _, again = stage(data_dir, workspace=workspace)
    summary, lines = run(again)
    assert sent() == first
    assert sum("nothing to do" in line for line in lines) == 3  # each workload's endpoints
    assert sum("reusing" in line for line in lines) == len(JOBS)
    assert {done(summary, w).model.version for w in WORKLOADS.values()} == {"1"}


@pytest.mark.parametrize(
    "mae, winner, path",
    [
        # AutoML's validation MAE (0.9 x its held-out MAE in the simulation) would win; its held-out one does not
        ({"housing-lightgbm": 27000, "housing-mlp-sweep": 31000, "housing-automl-regression": 28000},
         "housing-lightgbm", "azureml://jobs/{run}/outputs/results/paths/model/"),
        ({"housing-lightgbm": 27000, "housing-mlp-sweep": 26000, "housing-automl-regression": 28000},
         "housing-mlp-sweep", "azureml://jobs/{run}_3/outputs/results/paths/model/"),
        ({"housing-lightgbm": 27000, "housing-mlp-sweep": 31000, "housing-automl-regression": 25000},
         "housing-automl-regression", "azureml://jobs/{run}_7/outputs/artifacts/paths/outputs/mlflow-model/"),
    ],
)
def test_best_model_is_the_lowest_held_out_mae(data_dir, mae, winner, path):
    workspace, target = stage(data_dir, Simulation(mae=mae))
    summary, _ = run(target)
    run_name = next(j.name for j in workspace.jobs.submitted if j.tags["job"] == winner)
    (model,) = [m for m in workspace.models.created if m.name == HOUSING.model]
    assert done(summary, HOUSING).model.source_run == run_name and model.tags["MAE"] == f"{mae[winner]:.6g}"
    assert model.path == path.format(run=run_name)


@pytest.mark.parametrize(
    "auc, winner",
    [
        # AutoML's validation AUC (higher in the simulation) would win; its held-out one does not
        ({"bank-marketing-lightgbm": 0.95, "bank-marketing-automl-classification": 0.94}, "bank-marketing-lightgbm"),
        ({"bank-marketing-lightgbm": 0.93, "bank-marketing-automl-classification": 0.94}, "bank-marketing-automl-classification"),
    ],
)
def test_best_classifier_is_the_highest_held_out_auc(data_dir, auc, winner):
    workspace, target = stage(data_dir, Simulation(auc=auc))
    summary, _ = run(target)
    bank = done(summary, BANK)
    assert bank.model.name == "bank-marketing-classifier" and bank.model.metric == "AUC_weighted"
    assert next(r for r in bank.results if r.run_name == bank.model.source_run).job.key == winner
    assert bank.model.value == auc[winner]


def test_failed_job_is_reported_with_its_error_and_log(data_dir):
    workspace, target = stage(data_dir, Simulation(failing_jobs=("housing-mlp-sweep",)))
    with pytest.raises(flow.FlowError) as failure:
        run(target)
    name = next(j.name for j in workspace.jobs.submitted if j.tags["job"] == "housing-mlp-sweep")
    message = str(failure.value)
    assert f"job housing-mlp-sweep ({name}) Failed: UserError: train.py exited with code 1" in message
    assert f"az ml job download --name {name}" in message
    assert len(workspace.jobs.submitted) == len(JOBS)  # the others ran to the end too
    # housing serves nothing; bank marketing, whose candidates all succeeded, is served all the same
    assert [model.name for model in workspace.models.created] == [BANK.model]
    assert {e.name for e in workspace.online_endpoints.sent} == {endpoint(BANK, kind) for kind in BANK.online}

    # once fixed (here: the failure was transient), a re-run submits only the failed job, as a new attempt
    workspace.sim.failing_jobs = ()
    _, again = stage(data_dir, workspace=workspace)
    run(again)
    assert [job.name for job in workspace.jobs.submitted[len(JOBS):]] == [f"{name}-r2"]


@pytest.mark.parametrize(
    "failing, other, simulation, rollout, says",
    [
        ("kubernetes", "managed", Simulation(failing_deployments=("kubernetes",)), RolloutOptions(), "failed: "),
        ("managed", "kubernetes", Simulation(stuck_deployments=("managed",)),
         RolloutOptions(deployment_timeout_s=0.05), "failed: its provisioning did not finish within 0.05 s"),
    ],
    ids=["fails to provision", "never finishes provisioning"],
)  # fmt: skip
def test_a_failed_deployment_leaves_traffic_names_itself_and_the_other_rollout_goes_on(
    data_dir, failing, other, simulation, rollout, says
):
    workspace, target = stage(data_dir, simulation, rollout=rollout)
    with pytest.raises(flow.FlowError) as failure:
        run(target)
    broken, fine = endpoint(HOUSING, failing), endpoint(HOUSING, other)
    (deployment,) = [d for d in workspace.online_deployments.sent if d.endpoint_name == broken]
    message = str(failure.value)
    assert f"deployment {deployment.name} on endpoint {broken} {says}" in message
    assert "traffic left at none" in message and "failed to load the model" in message  # and the last log lines
    assert traffic_steps(workspace, broken) == [{}]  # created, never routed
    (served,) = [d for d in workspace.online_deployments.sent if d.endpoint_name == fine]
    assert traffic_steps(workspace, fine)[-1] == {served.name: 100}


def test_failed_smoke_test_keeps_the_old_deployment_serving(data_dir):
    workspace, target = stage(data_dir)
    run(target)
    managed = endpoint(HOUSING, "managed")
    (old,) = workspace.online_endpoints.store[managed].traffic
    # a better model arrives, and its deployment answers garbage
    workspace.sim.mae = {**workspace.sim.mae, "housing-lightgbm": 20000.0}
    workspace.sim.broken_scoring = ("managed",)
    _, again = stage(data_dir, workspace=workspace)
    # a new data version means new job names, so the jobs run again and the model changes
    (data_dir / "housing.csv").write_text((data_dir / "housing.csv").read_text().replace("NEAR BAY", "NEAR OCEAN", 1))
    with pytest.raises(flow.FlowError) as failure:
        run(again)
    message = str(failure.value)
    new = [d for d in workspace.online_deployments.sent if d.endpoint_name == managed][-1].name
    assert new != old
    assert f"smoke test of deployment {new} on endpoint {managed} failed" in message
    assert f"traffic left at {{'{old}': 100}}" in message
    assert workspace.online_endpoints.store[managed].traffic == {old: 100, new: 0}
    assert (managed, old) not in workspace.online_deployments.deleted


def test_authentication_failure_is_one_clear_message(monkeypatch):
    for variable in ("ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "AZUREML_PLATFORM_CREDENTIAL"):
        monkeypatch.delenv(variable, raising=False)
    credential = FakeCredential(fail=True)
    monkeypatch.setattr("azure.identity.DefaultAzureCredential", lambda: credential)
    lines = []
    with pytest.raises(flow.FlowError) as failure:
        connect(OUTPUTS, report=lines.append)
    message = str(failure.value)
    assert "could not authenticate to Azure with DefaultAzureCredential" in message and "az login" in message
    assert OUTPUTS[keys.AUTOMATION_CLIENT_ID] in message
    assert credential.calls == 1  # not a delay worth waiting for: no retry
    assert lines == ["signing in with DefaultAzureCredential (environment, workload identity, managed identity or `az login`)"]


def test_mlflow_reads_the_workspace_tracking_server_with_the_stage_token(monkeypatch):
    from types import SimpleNamespace

    from jobs.azure.target import WorkspaceMlflow

    opened = {}

    class Client:
        def __init__(self, tracking_uri):
            opened["uri"] = tracking_uri

        def get_run(self, run_id):
            import os

            return os.environ["MLFLOW_TRACKING_TOKEN"], run_id

    monkeypatch.setattr("mlflow.MlflowClient", Client)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    uri = "westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w"
    workspaces = SimpleNamespace(get=lambda name: SimpleNamespace(mlflow_tracking_uri=f"azureml://{uri}"))
    tracking = WorkspaceMlflow(SimpleNamespace(workspaces=workspaces, workspace_name="w"), FakeCredential())
    assert tracking.get_run("job-1") == ("fake-token-never-printed", "job-1")
    assert opened["uri"] == f"https://{uri}"


AUTOML = next(job for job in JOBS if job.key == "housing-automl-regression")


def run_automl(data_dir, sim: Simulation, job=AUTOML, **options) -> tuple[flow.JobResult, str, list[str]]:
    """One AutoML job alone (default: housing's): its result, its best child, and the lines it reported."""
    workspace, target = stage(data_dir, sim, **options)
    lines: list[str] = []
    target.prepare(list(WORKLOADS.values()), lines.append)
    result = target.run_job(job, lines.append)
    return result, f"{result.run_name}_7", lines


@pytest.mark.parametrize("typed", [True, False], ids=["test run typed automl.model_test", "untyped: any child"])
def test_automl_waits_for_its_model_test_run_and_uses_its_metrics(data_dir, typed):
    sim = Simulation(test_run_polls=3, test_run_typed=typed)
    result, best, lines = run_automl(data_dir, sim)
    assert result.succeeded
    assert result.metrics["MAE"] == sim.mae[AUTOML.key]  # the test run's, not the validation 0.9 x
    waiting = f"waiting for AutoML's test run {best}_test under best child {best} (Running)"
    assert lines.count(waiting) == 1  # said once, not once per poll


def test_a_classification_automl_reports_its_test_runs_held_out_auc(data_dir):
    job = next(job for job in JOBS if job.key == "bank-marketing-automl-classification")
    sim = Simulation(test_run_polls=2)
    result, _, _ = run_automl(data_dir, sim, job)
    assert result.metrics == {"AUC_weighted": sim.auc[job.key], "accuracy": 0.9, "F1": 0.5}  # not the validation AUC


def test_automl_fails_when_its_model_test_run_fails(data_dir):
    result, best, _ = run_automl(data_dir, Simulation(test_run_status="Failed", test_run_polls=1))
    assert result.error == (
        f"AutoML job {result.run_name}: its model test run {best}_test under best child {best} Failed: "
        "ModelTestError: predictions failed on the test data"
    )
    assert not result.metrics  # never the validation metrics instead


def test_automl_fails_when_no_model_test_run_appears_in_time(data_dir):
    result, best, lines = run_automl(data_dir, Simulation(test_run_status=None), test_run_wait_s=0.05)
    assert result.error.startswith(f"AutoML job {result.run_name}: no finished model test run under best child {best} after")
    assert result.error.endswith("(no child runs); is test_data set in the spec?")
    assert f"waiting for AutoML to start its test run under best child {best}" in lines


def test_uploads_wait_for_the_storage_firewall(data_dir):
    clock = FakeClock()
    workspace, target = stage(data_dir, Simulation(storage_denials=3), storage_backoff=clock.backoff(first=5, longest=30, budget=180))
    lines: list[str] = []
    target.prepare(list(WORKLOADS.values()), lines.append)
    assert len(workspace.data.created) + len(workspace.environments.created) == len(target.assets)
    assert len(clock.sleeps) == 3
    assert f"waiting for storage account {OUTPUTS[keys.STORAGE_ACCOUNT]} to let this machine in " \
           "(403 AuthorizationFailure); retry 1 in 5s" in lines


def test_uploads_give_up_on_a_closed_storage_firewall(data_dir):
    clock = FakeClock()
    _, target = stage(data_dir, Simulation(storage_denials=10_000), storage_backoff=clock.backoff(first=5, longest=30, budget=60))
    with pytest.raises(flow.FlowError) as failure:
        target.prepare(list(WORKLOADS.values()), lambda line: None)
    message = str(failure.value)
    assert "gave up after" in message and "(403 AuthorizationFailure): This request is not authorized" in message
    assert f"check that storage account {OUTPUTS[keys.STORAGE_ACCOUNT]}'s firewall allows this machine's public IP" in message




@pytest.mark.parametrize(
    "host, resolves",
    [("20.50.60.70", None), ("ml.contoso.example", True), ("ml.contoso.example", False)],
    ids=["router IP: nothing to resolve", "sslCname with its A record", "sslCname without a DNS record"],
)
def test_kubernetes_scoring_host_must_resolve_before_the_smoke_test(data_dir, host, resolves):
    looked_up = []

    def resolve(name, port):
        looked_up.append(name)
        if not resolves:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("20.50.60.70", 0))]

    workspace, target = stage(data_dir, Simulation(kubernetes_host=host), rollout=RolloutOptions(resolve=resolve))
    kubernetes = endpoint(HOUSING, "kubernetes")
    if resolves is False:
        with pytest.raises(flow.FlowError) as failure:
            run(target)
        message = str(failure.value)
        assert f"kubernetes endpoint {kubernetes}: its scoring host {host} does not resolve" in message
        assert f"create a DNS A record for {host} pointing at the EXTERNAL-IP of " \
               "`kubectl get service azureml-fe --namespace azureml`" in message
        assert "traffic left at none" in message
        assert not [e for e in workspace.online_endpoints.events if e[0] == "invoke" and e[1] == kubernetes]  # no smoke test
        managed = endpoint(HOUSING, "managed")
        assert list(traffic_steps(workspace, managed)[-1].values()) == [100]  # the managed rollout went on
    else:
        summary, _ = run(target)
        served = done(summary, HOUSING).endpoints
        assert any(e.scoring_uri.startswith(("http://20.50.60.70/", f"https://{host}/")) for e in served)
    assert looked_up == ([] if resolves is None else [host])  # managed endpoints are Azure's names: never looked up


@pytest.mark.parametrize("isolation, egress", [("public", None), ("private", "disabled")])
def test_private_stacks_deploy_with_private_egress_under_a_new_name(isolation, egress):
    model = flow.RegisteredModel(HOUSING.model, "3", HOUSING.metric, 1.0, "job")
    assets = {asset.name: asset for asset in azure_assets.environment_assets()}
    outputs = {**OUTPUTS, keys.NETWORK_ISOLATION: isolation}
    public = {kind: azure_entities.deployment_entity(HOUSING, kind, OUTPUTS, model, assets) for kind in HOUSING.online}
    built = {kind: azure_entities.deployment_entity(HOUSING, kind, outputs, model, assets) for kind in HOUSING.online}
    assert built["managed"].egress_public_network_access == egress
    assert getattr(built["kubernetes"], "egress_public_network_access", None) is None  # managed deployments only
    # egress cannot change on a deployment, so a changed egress is a new deployment
    assert (built["managed"].name == public["managed"].name) is (egress is None)
    assert built["kubernetes"].name == public["kubernetes"].name


def test_endpoint_names_come_from_the_workload_and_keep_azures_rule():
    """`<workload>-<online|k8s>-<6 hex>`, unique per workspace (online endpoint names are unique per region)."""
    from infra.naming import ENDPOINT_RULE

    names = {endpoint(w, kind) for w in WORKLOADS.values() for kind in w.online}
    assert len(names) == 3 and all(ENDPOINT_RULE.check(name) is None for name in names)
    assert endpoint(BANK, "managed").startswith("bank-marketing-online-")
    elsewhere = {**OUTPUTS, keys.WORKSPACE: "mlw-another"}
    assert endpoint(BANK, "managed", elsewhere) != endpoint(BANK, "managed")


def _saved_model(folder, conda, env={"conda": "conda.yaml"}):  # noqa: B006 (read only)
    folder.mkdir(parents=True)
    (folder / "MLmodel").write_text(yaml.safe_dump({"flavors": {"python_function": {"env": env}}}))
    if conda is not None:
        (folder / "conda.yaml").write_text(yaml.safe_dump(conda))
    return folder


@pytest.mark.parametrize(
    "dependencies, added",
    [
        # no pip section: pip, then one with everything serving needs
        (["python=3.10"], {"tabular-inference": ["azureml-inference-server-http", "inference-schema", "azureml-ai-monitoring"],
                           "tabular-batch": ["azureml-core", "azureml-dataset-runtime[fuse]"]}),
        # listed already, pinned, by conda or pip, in any spelling: left as the model has it
        (["python=3.10", "azureml_core=1.62.0", {"pip": ["Inference.Schema==1.8", "azureml-dataset-runtime~=1.62"]}],
         {"tabular-inference": ["azureml-inference-server-http", "azureml-ai-monitoring"], "tabular-batch": []}),
    ],
)  # fmt: skip
def test_a_model_in_its_own_environment_gets_only_what_serving_adds_and_it_lacks(tmp_path, dependencies, added):
    folder = _saved_model(tmp_path / "model", {"name": "automl", "dependencies": dependencies})
    built = azure_assets.model_environments(folder, BANK.model)
    # in place of each serving environment the stage registers
    assert set(built) == set(azure_assets.SERVING_PACKAGES) <= {a.name for a in azure_assets.environment_assets()}
    for stands_for, asset in built.items():
        assert asset.name == f"{BANK.model}-{stands_for.split('-')[-1]}"
        pip = next(d["pip"] for d in asset.entity.conda_file["dependencies"] if isinstance(d, dict))
        before = next((d["pip"] for d in dependencies if isinstance(d, dict)), [])
        assert pip == before + added[stands_for]
        assert asset.entity.conda_file["dependencies"].count("pip") == (0 if before else 1)
    again = azure_assets.model_environments(folder, BANK.model)
    assert {a.version for a in again.values()} == {a.version for a in built.values()}  # content-addressed


@pytest.mark.parametrize(
    "conda, env, problem",
    [
        ({"dependencies": ["python=3.10"]}, None, "names no conda environment file"),
        (None, {"conda": "conda.yaml"}, "names no conda environment file"),
        ({"name": "no dependencies"}, {"conda": "conda.yaml"}, "conda.yaml: not a conda environment"),
    ],
)
def test_a_model_without_a_usable_conda_file_is_refused_naming_the_file(tmp_path, conda, env, problem):
    folder = _saved_model(tmp_path / "model", conda, env)
    with pytest.raises(ValueError, match=problem) as error:
        azure_assets.model_environments(folder, BANK.model)
    assert str(folder) in str(error.value)


@pytest.mark.parametrize("in_vnet", [False, True])
def test_a_private_stacks_batch_endpoint_is_invoked_only_from_inside_its_vnet(data_dir, monkeypatch, in_vnet):
    """A private link workspace's batch endpoints are private (how-to-secure-batch-endpoint): from outside the VNet
    the stage deploys the model and leaves the invoke, saying what to run where; inside, it scores the sample."""
    from jobs.azure import batch as azure_batch

    monkeypatch.setenv(azure_batch.IN_VNET, "1") if in_vnet else monkeypatch.delenv(azure_batch.IN_VNET, raising=False)
    private = {**OUTPUTS, keys.NETWORK_ISOLATION: "private"}
    workspace, target = stage(data_dir, outputs=private)
    lines: list[str] = []
    summary = flow.run(target, [HOUSING], lines.append)
    deployed = [d.endpoint_name for d in workspace.batch_deployments.sent]
    assert deployed == [endpoint(HOUSING, "batch", private)]
    invoked = [i["endpoint"] for i in workspace.batch_endpoints.invoked]
    housing = done(summary, HOUSING)
    if in_vnet:
        assert invoked == deployed and housing.batch.tally.scored == len(HOUSING.request()["data"])
    else:
        assert invoked == [] and housing.batch is None
        assert f"{deployed[0]} is a private batch endpoint" in housing.skipped["batch (sample)"]
        assert f"{azure_batch.IN_VNET}=1 python -m jobs batch" in "\n".join(lines)
        assert "batch (sample)" in summary.table()
