"""The ML registry's own stack (ml-registry/) and each environment's way to it, under mocks: the registry program on
its stack file, dev and prod reading its outputs as the engine stores them through a StackReference, the roles, the
private endpoints, the settings and the teardown guard. The rules on them are in tests/rule_cases.py."""

from __future__ import annotations

import pytest
import yaml

from infra import outputs, roles, security, stacks
from infra.network import PRIVATE_DNS_ZONES
from infra.settings import ML_REGISTRY_PROJECT, PROJECT, SettingsError, parse_ml_registry
from stack_harness import (
    ML_REGISTRY,
    ML_REGISTRY_DIR,
    ML_REGISTRY_STACK,
    ROOT,
    evaluate,
    only_problem,
    run_stack,
    stack_config,
    with_setting,
)

REGISTRY = "azure-native:machinelearningservices:Registry"
ROLE = security.ROLE_ASSIGNMENT
ENDPOINT = "azure-native:network:PrivateEndpoint"


@pytest.fixture(scope="module")
def registry_stack():
    return run_stack(ML_REGISTRY)


def test_the_registry_is_protected_public_with_entra_auth_and_its_acr_is_premium(registry_stack):
    registry = registry_stack.one(REGISTRY)
    assert registry.protect and registry_stack.one("azure-native:resources:ResourceGroup").protect
    assert registry.inputs["publicNetworkAccess"] == "Enabled" and registry.inputs["identity"] == {"type": "SystemAssigned"}
    (region,) = registry.inputs["regionDetails"]
    assert region["location"] == registry.inputs["location"] == "westeurope"
    assert region["acrDetails"] == [{"systemCreatedAcrAccount": {"acrAccountSku": "Premium"}}]
    storage = region["storageAccountDetails"][0]["systemCreatedStorageAccount"]
    assert storage == {"storageAccountType": "Standard_ZRS", "storageAccountHnsEnabled": False, "allowBlobPublicAccess": False}


def test_its_two_roles_hold_exactly_the_documented_actions_on_its_resource_group(registry_stack):
    registry, group = registry_stack.one(REGISTRY), registry_stack.one("azure-native:resources:ResourceGroup")
    definitions = {r.name: r for r in registry_stack.of_type(security.ROLE_DEFINITION)}
    assert set(definitions) == {"reader-role", "publisher-role"}
    for kind in ("reader", "publisher"):
        role = definitions[f"{kind}-role"].inputs
        assert role["permissions"] == [{"actions": list(roles.ML_REGISTRY_ROLE_ACTIONS[kind]), "notActions": [], "dataActions": [], "notDataActions": []}]
        assert role["scope"] == group.id and role["assignableScopes"] == [group.id]
        assert role["roleDefinitionId"] == roles.ml_registry_role_guid(kind, registry.id)  # the rules recognise it by its scope
        assert registry.state["name"] in role["roleName"]  # unique in the tenant
        assert not any(action.endswith("/delete") for action in role["permissions"][0]["actions"])


def test_its_outputs_are_what_every_environment_reads(registry_stack):
    assert set(registry_stack.outputs) == set(outputs.ML_REGISTRY_STACK.values())
    assert all(isinstance(value, str) and value for value in registry_stack.outputs.values())
    registry = registry_stack.one(REGISTRY)
    assert registry_stack.outputs["ml_registry_id"] == registry.id
    # the storage and ACR Azure made in the registry's managed resource group, as ARM fills them in
    managed = registry.state["managedResourceGroup"]["resourceId"]
    assert registry_stack.outputs["ml_registry_storage_id"].startswith(managed + "/providers/Microsoft.Storage/storageAccounts/")
    assert registry_stack.outputs["ml_registry_acr_id"].startswith(managed + "/providers/Microsoft.ContainerRegistry/registries/")


@pytest.mark.parametrize("stack, access", [("dev", "publish"), ("prod", "read")])
def test_each_environment_reads_the_registry_stack_and_gets_its_own_role(registry_stack, stack, access):
    run = run_stack(stack)
    config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    assert run.reads == (("pulumi:pulumi:StackReference", config[f"{PROJECT}:mlRegistry"]["stack"]),)
    assert run.outputs[outputs.ML_REGISTRY_NAME] == registry_stack.outputs["ml_registry_name"]
    assert run.outputs[outputs.ML_REGISTRY_ACCESS] == access
    automation = run.one(ROLE, "automation-ml-registry").inputs
    kind = "publisher" if access == "publish" else "reader"
    assert automation["scope"] == registry_stack.outputs["ml_registry_id"]
    assert automation["roleDefinitionId"] == registry_stack.outputs[f"ml_registry_{kind}_role_id"]
    assert automation["principalId"] == run.one("azuread:index/servicePrincipal:ServicePrincipal").state["objectId"]
    # no one else may write: every assignment at the registry is the reader's but dev's automation identity's
    at_registry = [r for r in run.of_type(ROLE) if r.inputs["scope"] == registry_stack.outputs["ml_registry_id"]]
    assert {r.role_name for r in at_registry if r.name != "automation-ml-registry"} <= {"ML registry reader"}


def test_prods_data_scientists_read_the_registry_and_devs_are_granted_nothing_there(registry_stack):
    prod, dev = run_stack("prod+team"), run_stack("dev+team")
    registry_id = registry_stack.outputs["ml_registry_id"]
    team = [r for r in prod.of_type(ROLE) if r.inputs["scope"] == registry_id and r.inputs["principalType"] in ("Group", "User")]
    assert [(r.inputs["principalType"], r.role_name) for r in team] == [("Group", "ML registry reader")]
    # a second grant of the same role to the same group at the same scope would be ARM's 409: one environment grants it
    assert not [r for r in dev.of_type(ROLE) if r.inputs["scope"] == registry_id and r.inputs["principalType"] != "ServicePrincipal"]


def test_prod_reaches_the_registry_its_storage_and_its_acr_through_endpoints_beside_the_workspaces(registry_stack):
    prod = run_stack("prod")
    endpoints = {r.name: r.inputs for r in prod.of_type(ENDPOINT)}
    targets = {"pe-mlregistry-amlregistry": ("amlregistry", "ml_registry_id"), "pe-mlregistry-storage-blob": ("blob", "ml_registry_storage_id"),
               "pe-mlregistry-acr-registry": ("registry", "ml_registry_acr_id")}  # fmt: skip
    workspace_subnet = endpoints["pe-workspace-amlworkspace"]["subnet"]
    for name, (group, output) in targets.items():
        (connection,) = endpoints[name]["privateLinkServiceConnections"]
        assert connection["groupIds"] == [group] and connection["privateLinkServiceId"] == registry_stack.outputs[output]
        assert endpoints[name]["subnet"] == workspace_subnet
    zone_groups = {r.inputs["privateEndpointName"]: r.inputs for r in prod.of_type("azure-native:network:PrivateDnsZoneGroup")}
    zones = {r.id: r.inputs["privateZoneName"] for r in prod.of_type("azure-native:privatedns:PrivateZone")}
    registry_zones = [zones[c["privateDnsZoneId"]] for c in zone_groups["pe-mlp-prod-mlregistry-amlregistry"]["privateDnsZoneConfigs"]]
    assert registry_zones == ["privatelink.api.azureml.ms"] == list(PRIVATE_DNS_ZONES["amlregistry"])
    assert not [r for r in run_stack("dev").of_type(ENDPOINT)]  # dev has no VNet: it publishes over the public endpoint


def test_a_stack_without_an_ml_registry_declares_no_access_and_exports_none():
    run = evaluate("dev", with_setting(stack_config("dev"), f"{PROJECT}:mlRegistry", remove=True))
    assert run.reads == () and not [r for r in run.of_type(ROLE) if "ml-registry" in r.name]
    assert outputs.ML_REGISTRY_NAME not in run.outputs and outputs.ML_REGISTRY_ACCESS not in run.outputs


def test_a_stack_reference_to_a_stack_that_does_not_exist_fails_the_program():
    config = with_setting(stack_config("prod"), f"{PROJECT}:mlRegistry.stack", f"example-org/{ML_REGISTRY_PROJECT}/staging")
    with pytest.raises(Exception, match=f"unknown stack 'example-org/{ML_REGISTRY_PROJECT}/staging'"):
        evaluate("prod", config)


@pytest.mark.parametrize(
    "value, says",
    [
        ("mlr-shared", "expected <organization>/azureml-platform-ml-registry/<stack>"),
        ("example-org/azureml-platform/prod", "a stack of project 'azureml-platform'; expected one of the ML registry's project"),
    ],
)
def test_a_bad_ml_registry_reference_is_refused_naming_the_key(value, says):
    problem = only_problem(with_setting(stack_config("dev"), f"{PROJECT}:mlRegistry.stack", value))
    assert problem.startswith(f"{PROJECT}:mlRegistry.stack is ") and says in problem


@pytest.mark.parametrize(
    "key, value, says",
    [
        ("storageAccountType", "Premium_LRS", "storageAccountType is 'Premium_LRS'; allowed: Standard_LRS"),
        ("replicationLocations", ["North Europe"], "replicationLocations[0] is 'North Europe'"),
        ("namePrefix", "a" * 30, "makes an invalid Azure ML registry name"),
        ("publicNetworkAccess", "Disabled", "publicNetworkAccess is not a known setting"),
    ],
)
def test_bad_registry_settings_are_refused_naming_the_key(key, value, says):
    config = with_setting(stack_config(ML_REGISTRY_STACK, ML_REGISTRY_DIR), f"{ML_REGISTRY_PROJECT}:{key}", value)
    with pytest.raises(SettingsError) as raised:
        parse_ml_registry(config, ML_REGISTRY_STACK)
    assert any(says in problem for problem in raised.value.problems), raised.value.problems


def test_the_teardown_guard_refuses_the_registry_stack_and_the_workflow_never_offers_it(capsys):
    assert stacks.main(["--require-unprotected", ML_REGISTRY_STACK, "--config-dir", str(ML_REGISTRY_DIR)]) == 1
    assert "the ML registry" in capsys.readouterr().err
    assert stacks.main(["--require-unprotected", "missing", "--config-dir", str(ML_REGISTRY_DIR)]) == 2
    teardown = yaml.safe_load((ROOT / ".github/workflows/teardown.yml").read_text())
    assert teardown[True]["workflow_dispatch"]["inputs"]["stack"]["options"] == ["dev"]  # PyYAML reads `on:` as True
