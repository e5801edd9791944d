"""The stack outputs: the contract between infra/ (which exports them) and jobs/ (which reads them)."""

import ast
import json
from pathlib import Path

import pytest

from infra import outputs
from stack_harness import (
    FAKE_CLIENT_SECRET,
    ROOT,
    evaluate,
    is_secret,
    reveal,
    run_stack,
    stack_config,
    stack_names,
    stack_output_json,
    with_setting,
)

STACKS = stack_names()
CONTRACT_KEYS = {
    name: value for name, value in vars(outputs).items() if name.isupper() and isinstance(value, str)
}


def keys_jobs_reads() -> set[str]:
    """Every output key the post-provision stage names through `infra.outputs` constants, under any alias."""
    read = set()
    for path in Path(ROOT, "jobs").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "infra":
                aliases.update(alias.asname or alias.name for alias in node.names if alias.name == "outputs")
            elif isinstance(node, ast.ImportFrom) and node.module == "infra.outputs":
                read.update(alias.name for alias in node.names)
            elif isinstance(node, ast.Import):
                aliases.update(alias.asname for alias in node.names if alias.name == "infra.outputs" and alias.asname)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                read.add(node.attr)
    return {CONTRACT_KEYS[name] for name in read if name in CONTRACT_KEYS}


def test_jobs_reads_the_contract():
    # guards the scan above: the post-provision stage does read the workspace and compute keys
    assert {outputs.WORKSPACE, outputs.CPU_CLUSTER, outputs.KUBERNETES_COMPUTE} <= keys_jobs_reads()


@pytest.mark.parametrize("stack", STACKS)
def test_every_required_key_is_exported(stack):
    run = run_stack(stack)
    assert set(outputs.REQUIRED) <= set(run.outputs)
    declared = set(outputs.REQUIRED) | set(outputs.OPTIONAL) | set(outputs.MAPS) | set(outputs.SECRET)
    assert set(outputs.MAPS) <= set(run.outputs)  # every stack exports them, empty or not
    assert set(run.outputs) <= declared, "undeclared keys: add them to infra/outputs.py"
    assert None not in run.outputs.values() and not run.dropped_outputs  # the engine would drop them


@pytest.mark.parametrize("stack", STACKS)
def test_every_key_jobs_reads_is_exported(stack):
    # secrets exist only when config asks, optional keys only when the stack has the thing
    exported = set(run_stack(stack).outputs) | set(outputs.SECRET) | set(outputs.OPTIONAL)
    assert keys_jobs_reads() <= exported


@pytest.mark.parametrize("stack", STACKS)
def test_exports_name_the_real_resources(stack):
    run = run_stack(stack)
    exported = run.outputs
    ml = "azure-native:machinelearningservices"
    assert exported[outputs.RESOURCE_GROUP] == run.one("azure-native:resources:ResourceGroup").state["name"]
    assert exported[outputs.WORKSPACE] == run.one(f"{ml}:Workspace").state["name"]
    assert exported[outputs.CPU_CLUSTER] == run.one(f"{ml}:Compute", "cpu-cluster").state["name"]
    gpu = [r.state["name"] for r in run.of_type(f"{ml}:Compute") if r.name == "gpu-cluster"]
    assert exported.get(outputs.GPU_CLUSTER) == (gpu[0] if gpu else None)
    kubernetes = run.one(f"{ml}:Compute", "kubernetes-compute")
    assert exported[outputs.KUBERNETES_COMPUTE] == kubernetes.state["name"]
    instance_type = run.one("kubernetes:amlarc.azureml.com/v1alpha1:InstanceType")
    assert exported[outputs.KUBERNETES_INSTANCE_TYPE] == instance_type.state["metadata"]["name"]
    assert exported[outputs.STORAGE_ACCOUNT] == run.one("azure-native:storage:StorageAccount").state["name"]
    isolated = bool(run.of_type("azure-native:network:VirtualNetwork"))
    assert exported[outputs.NETWORK_ISOLATION] == ("private" if isolated else "public")
    vault = run.one("azure-native:keyvault:Vault").state
    assert exported[outputs.KEY_VAULT_URI] == f"https://{vault['name']}.vault.azure.net/"
    assert exported[outputs.REGISTRY_LOGIN_SERVER] == run.one("azure-native:containerregistry:Registry").state["loginServer"]
    application = run.one("azuread:index/application:Application").state
    assert exported[outputs.AUTOMATION_CLIENT_ID] == application["clientId"]
    assert exported[outputs.LOCATION] == run.config["azure-native:location"]


@pytest.mark.parametrize("stack", STACKS)
def test_outputs_name_only_what_pulumi_creates(stack):
    """Endpoints and models are the stage's, named per workload (jobs/azure/entities.py), never stack outputs."""
    exported = json.loads(stack_output_json(run_stack(stack)))
    assert not [key for key in exported if "endpoint" in key or "model" in key]


def test_an_optional_key_is_absent_as_pulumi_stack_output_shows_it():
    """dev has no GPU cluster, so `pulumi stack output --json` has no gpu_cluster_name (never a null)."""
    assert outputs.GPU_CLUSTER not in json.loads(stack_output_json(run_stack("dev")))
    assert json.loads(stack_output_json(run_stack("prod")))[outputs.GPU_CLUSTER] == "gpu-cluster"


def test_secrets_print_as_pulumi_prints_them():
    run = evaluate("dev", with_setting(stack_config("dev"), "azureml-platform:createClientSecret", True))
    assert json.loads(stack_output_json(run))[outputs.AUTOMATION_CLIENT_SECRET] == "[secret]"
    assert json.loads(stack_output_json(run, show_secrets=True))[outputs.AUTOMATION_CLIENT_SECRET] == FAKE_CLIENT_SECRET


def test_client_secret_only_on_request_and_only_as_a_secret():
    for stack in STACKS:
        assert outputs.AUTOMATION_CLIENT_SECRET not in run_stack(stack).outputs
    config = with_setting(stack_config("dev"), "azureml-platform:createClientSecret", True)
    run = evaluate("dev", config)
    assert run.outputs[outputs.AUTOMATION_CLIENT_SECRET] == FAKE_CLIENT_SECRET
    assert outputs.AUTOMATION_CLIENT_SECRET in run.secret_outputs
    stored = run.one("azure-native:keyvault:Secret")
    assert stored.inputs["vaultName"] == run.one("azure-native:keyvault:Vault").state["name"]
    assert is_secret(stored.inputs["properties"])  # the engine only ever sees it encrypted
    assert reveal(stored.inputs["properties"])["value"] == FAKE_CLIENT_SECRET
    assert FAKE_CLIENT_SECRET not in repr({key: run.outputs[key] for key in outputs.REQUIRED})
