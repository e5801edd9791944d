"""`python -m jobs` against Azure, offline: the dry run on the real stacks' outputs, bad outputs, and
every failure path ending in one clear message and a non-zero exit."""

from __future__ import annotations

import json

import pytest
import yaml

from infra import outputs as keys
from jobs import cli
from jobs.azure import commands as azure_commands, entities
from jobs.azure.target import AzureTarget
from jobs.flow import COLLECTOR_ROOT, JobResult
from tests.azure_fake import FakeCredential, FakeWorkspace, Simulation, fake_answer
from tests.stack_harness import run_stack, stack_output_json
from tests.test_azure_stage import BANK, HOUSING, OUTPUTS, endpoint


def use(workspace: FakeWorkspace, monkeypatch) -> FakeWorkspace:
    """The CLI's Azure target, on the fake workspace instead of a real one."""

    def target(outputs, data_dir=None):
        return AzureTarget(workspace.client(outputs), outputs, workspace.tracking, data_dir, poll_seconds=0.002)

    monkeypatch.setattr(azure_commands, "target", target)
    return workspace


def write_outputs(tmp_path, outputs) -> str:
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    return str(path)


@pytest.mark.parametrize("stack, gpu, egress", [("dev", False, None), ("prod", True, "disabled")])
def test_dry_run_on_the_stack_outputs(stack, gpu, egress, tmp_path, capsys):
    """The outputs as `pulumi stack output --json --show-secrets` prints them: dev has no GPU cluster, so
    no gpu_cluster_name at all, and its sweep runs on the CPU cluster; prod is private."""
    outputs = json.loads(stack_output_json(run_stack(stack), show_secrets=True))
    assert (keys.GPU_CLUSTER in outputs) is gpu
    outputs[keys.AUTOMATION_CLIENT_SECRET] = "a-secret-that-must-not-show"
    code = cli.main(["run", "--outputs", write_outputs(tmp_path, outputs), "--dry-run", "--data-dir", str(tmp_path)])
    printed = capsys.readouterr().out
    assert code == 0
    documents = {doc.split("\n", 1)[0]: yaml.safe_load(doc) for doc in printed.split("---\n")[1:]}
    by_name = {title.split(" (")[0]: doc for title, doc in documents.items()}
    jobs = [by_name[f"# job {key}"] for key in ("housing-lightgbm", "housing-automl-regression")]
    assert {job["compute"] for job in jobs} == {f"azureml:{outputs[keys.CPU_CLUSTER]}"}
    sweep = by_name["# job housing-mlp-sweep"]
    if gpu:
        assert sweep["compute"] == f"azureml:{outputs[keys.GPU_CLUSTER]}"
        assert "# job housing-mlp-sweep" in documents
    else:
        assert sweep["compute"] == f"azureml:{outputs[keys.CPU_CLUSTER]}"
        note = f"no {keys.GPU_CLUSTER} output (GPU cluster off in this stack): housing-mlp-sweep runs on the CPU cluster"
        assert any(title.startswith(f"# job housing-mlp-sweep ({note}") for title in documents)
    assert sweep["trial"]["environment"].startswith("azureml:tabular-training-gpu:")
    for workload in (HOUSING, BANK):
        managed_deployment = next(doc for t, doc in documents.items() if t.startswith(f"# {workload.name}: managed deployment"))
        assert managed_deployment.get("egress_public_network_access") == egress
        assert managed_deployment["model"] == f"azureml:{workload.model}:N"
        managed = by_name[f"# {workload.name}: managed online endpoint"]
        assert managed["name"] == endpoint(workload, "managed", outputs) and managed["auth_mode"] == "key"
        model_title = next(title for title in documents if title.startswith(f"# model {workload.model}: "))
        # both ship an AutoML candidate, whose winning model serves in its own environments
        assert f"its own conda file: {workload.model}-inference, {workload.model}-batch)" in model_title
    for key in ("bank-marketing-lightgbm", "bank-marketing-automl-classification"):
        assert by_name[f"# job {key}"]["compute"] == f"azureml:{outputs[keys.CPU_CLUSTER]}"
    kubernetes = by_name["# housing: kubernetes online endpoint"]
    assert kubernetes["compute"] == f"azureml:{outputs[keys.KUBERNETES_COMPUTE]}"
    assert "# bank-marketing: kubernetes online endpoint" not in by_name  # bank marketing serves managed only
    deployment = next(doc for title, doc in documents.items() if title.startswith("# housing: kubernetes deployment"))
    assert deployment["instance_type"] == outputs[keys.KUBERNETES_INSTANCE_TYPE]
    assert deployment["endpoint_name"] == endpoint(HOUSING, "kubernetes", outputs)
    assert deployment["environment"].startswith("azureml:tabular-inference:")
    assert "a-secret-that-must-not-show" not in printed
    assert_the_production_loop(stack, outputs, documents)


def assert_the_production_loop(stack: str, outputs: dict, documents: dict) -> None:
    """Every online deployment collects its inputs and outputs under a data asset fixed per endpoint; each endpoint
    has its monitor: Azure's on serverless Spark in a public stack, monitor.py in a scheduled pipeline on the CPU
    cluster in a private one (serverless Spark cannot run in the stack's own VNet); the retraining pipeline starts
    with its drift gate."""
    for workload in (HOUSING, BANK):
        for kind in workload.online:
            name = endpoint(workload, kind, outputs)
            title, deployment = next((t, d) for t, d in documents.items() if t.startswith(f"# {workload.name}: {kind} deployment"))
            assert title.endswith("collects its inputs and outputs")
            collector = deployment["data_collector"]
            assert collector["sampling_rate"] == workload.monitor.sampling_rate
            assert {c: (v["enabled"], v["data"]["name"], v["data"]["path"]) for c, v in collector["collections"].items()} == {
                c: ("true", f"{name}-{c}", f"{COLLECTOR_ROOT}/{workload.name}/{name}/{c}") for c in ("model_inputs", "model_outputs")}  # fmt: skip
            [(monitor_title, monitor)] = [(t, d) for t, d in documents.items() if t.startswith(f"# {workload.name}: monitor of the {kind} endpoint")]
            assert f"enabled in {stack}" in monitor_title and monitor["name"] == f"{workload.name}-monitor-{kind}"
            if outputs[keys.NETWORK_ISOLATION] == "private":
                assert "create_monitor" not in monitor and "mails ml-platform@example.com" in monitor_title
                step = monitor["create_job"]["jobs"]["monitor"]
                assert step["inputs"]["mode"] == "alert" and step["inputs"]["production"]["path"] == f"{COLLECTOR_ROOT}/{workload.name}/{name}/"
                assert monitor["create_job"]["settings"]["default_compute"] == f"azureml:{outputs[keys.CPU_CLUSTER]}"
            else:
                definition = monitor["create_monitor"]
                assert definition["monitoring_target"]["endpoint_deployment_id"] == f"azureml:{name}:{deployment['name']}"
                assert {s["production_data"]["input_data"]["path"] for s in definition["monitoring_signals"].values()} == {
                    f"azureml:{name}-model_inputs:1", f"azureml:{name}-model_outputs:1"}  # fmt: skip
        pipeline = next(d for t, d in documents.items() if t.startswith(f"# {workload.name}: retraining pipeline, gated by drift"))
        assert pipeline["jobs"]["monitor"]["inputs"]["production"]["path"] == "${{parent.inputs.production}}"
        assert all(step["inputs"]["decision"]["path"] == "${{parent.jobs.monitor.outputs.decision}}"
                   for name, step in pipeline["jobs"].items() if name != "monitor")  # fmt: skip
        assert pipeline["inputs"]["production"]["path"] == f"{COLLECTOR_ROOT}/{workload.name}/"


def test_the_dry_run_of_one_workload(tmp_path, capsys):
    code = cli.main(["run", "--outputs", write_outputs(tmp_path, OUTPUTS), "--dry-run", "--workload", "bank-marketing"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "# job bank-marketing-lightgbm" in printed and "# data asset bank-marketing-mltable" in printed
    assert "# job housing-lightgbm" not in printed and "# data asset housing" not in printed


@pytest.mark.parametrize("dry_run", [True, False])
def test_missing_and_malformed_outputs_are_named(tmp_path, capsys, dry_run):
    outputs = {k: v for k, v in OUTPUTS.items() if k not in (keys.WORKSPACE, keys.KUBERNETES_COMPUTE)}
    outputs[keys.CPU_CLUSTER] = None
    outputs[keys.TENANT_ID] = "[secret]"
    outputs[keys.STORAGE_ACCOUNT] = ""
    outputs[keys.NETWORK_ISOLATION] = "vnet"
    code = cli.main(["run", "--outputs", write_outputs(tmp_path, outputs)] + (["--dry-run"] if dry_run else []))
    error = capsys.readouterr().err
    assert code == 1
    for message in (
        f"{keys.WORKSPACE}: missing",
        f"{keys.KUBERNETES_COMPUTE}: missing",
        f"{keys.CPU_CLUSTER}: is null",
        f"{keys.TENANT_ID}: hidden as a secret",
        f"{keys.STORAGE_ACCOUNT}: expected a non-empty string, got str",
        f"{keys.NETWORK_ISOLATION}: 'vnet' is none of public, private",
    ):
        assert message in error
    assert keys.GPU_CLUSTER not in error  # optional: absent is fine


def test_stack_outputs_need_the_pulumi_cli(capsys, monkeypatch):
    monkeypatch.setenv("PATH", "")
    assert cli.main(["run", "--stack", "dev", "--dry-run"]) == 1
    assert "pulumi stack dev: the pulumi CLI is not installed (or pass --outputs FILE)" in capsys.readouterr().err


def test_authentication_failure_exits_non_zero(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AZUREML_PLATFORM_CREDENTIAL", "default")  # even inside a GitHub job that has OIDC
    monkeypatch.setattr("azure.identity.DefaultAzureCredential", lambda: FakeCredential(fail=True))
    code = cli.main(["run", "--outputs", write_outputs(tmp_path, OUTPUTS)])
    error = capsys.readouterr().err
    assert code == 1
    assert "could not authenticate to Azure with DefaultAzureCredential" in error and "az login" in error


@pytest.mark.parametrize(
    "simulation, message",
    [
        (Simulation(failing_jobs=("housing-automl-regression",)), "job housing-automl-regression (housing-automl-regression-"),
        (Simulation(failing_deployments=("managed",)), f"on endpoint {endpoint(BANK, 'managed')} failed"),
        (Simulation(broken_scoring=("kubernetes",)), "smoke test of deployment v1-"),
    ],
    ids=["failed job", "failed deployment", "failed smoke test"],
)
def test_failures_exit_non_zero_with_the_message(simulation, message, data_dir, tmp_path, capsys, monkeypatch):
    use(FakeWorkspace(simulation), monkeypatch)
    code = cli.main(["run", "--outputs", write_outputs(tmp_path, OUTPUTS), "--data-dir", str(data_dir)])
    assert code == 1
    assert message in capsys.readouterr().err


def test_steps_on_their_own(data_dir, tmp_path, capsys, monkeypatch):
    """submit, deploy, invoke and status each work without re-running the rest."""
    workspace = use(FakeWorkspace(), monkeypatch)
    common = ["--outputs", write_outputs(tmp_path, OUTPUTS), "--data-dir", str(data_dir)]
    assert cli.main(["submit", "housing-lightgbm", *common]) == 0
    assert [job.tags["job"] for job in workspace.jobs.submitted] == ["housing-lightgbm"]
    assert not workspace.online_endpoints.sent

    lightgbm = workspace.jobs.submitted[0]
    model = entities.model_entity(
        HOUSING,
        JobResult(HOUSING.jobs[0], lightgbm.name, "Completed", {"MAE": 27000.0},
                  model_uri=f"azureml://jobs/{lightgbm.name}/outputs/results/paths/model/"),
        "1",
    )  # fmt: skip
    workspace.models.create_or_update(model)
    assert cli.main(["deploy", "--workload", "housing", *common]) == 0
    assert {d.model for d in workspace.online_deployments.sent} == {"azureml:housing-regressor:1"}

    request = tmp_path / "request.json"
    request.write_text(json.dumps({"data": [{"longitude": -122.2}]}))
    assert cli.main(["invoke", "--workload", "housing", "--file", str(request), *common]) == 0
    assert cli.main(["status", *common]) == 0
    printed = capsys.readouterr().out
    assert f"{endpoint(HOUSING, 'managed')}: answers [{fake_answer(False, {'longitude': -122.2})}]" in printed
    assert f"job housing-lightgbm: {lightgbm.name} Completed" in printed
    assert "job housing-mlp-sweep: housing-mlp-sweep-" in printed and "not submitted yet" in printed
    assert "traffic {'v1-" in printed


def test_steps_name_what_is_missing(data_dir, tmp_path, capsys, monkeypatch):
    use(FakeWorkspace(), monkeypatch)
    common = ["--outputs", write_outputs(tmp_path, OUTPUTS), "--data-dir", str(data_dir)]
    assert cli.main(["deploy", *common]) == 1
    assert "`deploy` needs one workload: --workload bank-marketing|housing" in capsys.readouterr().err
    assert cli.main(["deploy", "--workload", "housing", *common]) == 1
    assert "model housing-regressor:latest is not registered" in capsys.readouterr().err
    assert cli.main(["invoke", "--workload", "bank-marketing", *common]) == 1
    assert f"bank-marketing: managed endpoint {endpoint(BANK, 'managed')} does not exist yet" in capsys.readouterr().err


@pytest.mark.parametrize(
    "gpu, expected",
    [("absent", None), (None, None), ("gpu-from-outputs", "gpu-from-outputs")],
    ids=["absent, as the engine exports it", "null, from an older outputs file", "exported"],
)
def test_optional_outputs_read_as_none_when_absent_or_null(tmp_path, gpu, expected):
    outputs = dict(OUTPUTS) if gpu == "absent" else {**OUTPUTS, keys.GPU_CLUSTER: gpu}
    read = azure_commands.load_outputs(None, write_outputs(tmp_path, outputs))
    assert set(read) == set(keys.REQUIRED + keys.OPTIONAL + keys.MAPS)
    assert read[keys.GPU_CLUSTER] == expected
    assert read[keys.WORKSTATIONS] == {}  # outputs of a stack from before workstations


def test_a_malformed_optional_output_is_named(tmp_path, capsys):
    code = cli.main(["run", "--outputs", write_outputs(tmp_path, {**OUTPUTS, keys.GPU_CLUSTER: 7}), "--dry-run"])
    assert code == 1
    assert f"{keys.GPU_CLUSTER}: expected a non-empty string, got int" in capsys.readouterr().err


@pytest.mark.parametrize(
    "workstations, message",
    [(["ada-ci1"], "expected a JSON object of names, got list"), ({"ada": "", "bob": 3}, "expected a non-empty name for ada, bob")],
)
def test_a_malformed_workstation_map_is_named(workstations, message, tmp_path, capsys):
    code = cli.main(["run", "--outputs", write_outputs(tmp_path, {**OUTPUTS, keys.WORKSTATIONS: workstations}), "--dry-run"])
    assert code == 1
    assert f"{keys.WORKSTATIONS}: {message}" in capsys.readouterr().err


@pytest.mark.parametrize("stack", ["dev", "dev+team"])
def test_the_stage_reads_the_workstations_as_the_stack_exports_them(stack, tmp_path):
    """dev exports an empty object (no one listed); with a team, user -> instance name."""
    exported = json.loads(stack_output_json(run_stack(stack), show_secrets=True))
    read = azure_commands.load_outputs(None, write_outputs(tmp_path, exported))
    assert read[keys.WORKSTATIONS] == exported[keys.WORKSTATIONS]
    assert bool(read[keys.WORKSTATIONS]) is (stack == "dev+team")


def test_status_lists_each_workstation_with_its_state(data_dir, tmp_path, capsys, monkeypatch):
    workspace = use(FakeWorkspace(), monkeypatch)
    workspace.compute.instances = {"ada-ci1a2b3": "Running", "grace-hopper-ci1a2b3": "Stopped"}
    names = {"ada": "ada-ci1a2b3", "grace.hopper": "grace-hopper-ci1a2b3", "alan": "alan-ci1a2b3"}
    outputs = write_outputs(tmp_path, {**OUTPUTS, keys.WORKSTATIONS: names})
    assert cli.main(["status", "--outputs", outputs, "--data-dir", str(data_dir)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line for line in printed if line.startswith("workstation")] == [
        "workstation ada-ci1a2b3 (ada): Running",
        "workstation alan-ci1a2b3 (alan): not created yet",
        "workstation grace-hopper-ci1a2b3 (grace.hopper): Stopped",
    ]
    assert workspace.sim.calls["compute.get"] == 3


def test_status_says_when_a_stack_has_no_workstations(data_dir, tmp_path, capsys, monkeypatch):
    use(FakeWorkspace(), monkeypatch)
    outputs = write_outputs(tmp_path, {**OUTPUTS, keys.WORKSTATIONS: {}})
    assert cli.main(["status", "--outputs", outputs, "--data-dir", str(data_dir)]) == 0
    assert "workstations: none in this stack" in capsys.readouterr().out


def test_an_ml_registry_access_that_is_neither_publish_nor_read_is_named(tmp_path, capsys):
    outputs = {**OUTPUTS, keys.ML_REGISTRY_NAME: "mlr-x", keys.ML_REGISTRY_ACCESS: "write"}
    assert cli.main(["run", "--outputs", write_outputs(tmp_path, outputs), "--dry-run"]) == 1
    assert f"{keys.ML_REGISTRY_ACCESS}: 'write' is none of publish, read" in capsys.readouterr().err
