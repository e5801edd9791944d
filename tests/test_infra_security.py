"""Security rules hold over every resource of every stack, and each rule catches a violation."""

import copy
import dataclasses

import pytest

from infra import outputs, security
from stack_harness import SUBSCRIPTION_ID, run_stack, stack_names

STACKS = stack_names()


def context_of(run) -> security.Context:
    return security.Context(
        environment=run.config["azureml-platform:environment"],
        subscription_id=SUBSCRIPTION_ID,
        resource_group=run.outputs[outputs.RESOURCE_GROUP],
    )


@pytest.mark.parametrize("stack", STACKS)
def test_every_resource_of_every_stack_passes_every_rule(stack):
    run = run_stack(stack)
    assert security.violations(run.resources, context_of(run)) == []
    assert security.output_violations(run.outputs, run.secret_outputs) == []


def changed(resource, path, value):
    """A copy of a registered resource with one input set, or removed when `value` is None.

    `path` reaches into objects: "properties.enableRbacAuthorization".
    """
    inputs = copy.deepcopy(resource.inputs)
    *parents, leaf = path.split(".")
    target = inputs
    for key in parents:
        target = target.setdefault(key, {})
    if value is None:
        target.pop(leaf, None)
    else:
        target[leaf] = value
    return dataclasses.replace(resource, inputs=inputs)


ROLE = "azure-native:authorization:RoleAssignment"
RG_SCOPE = f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/rg-mlp-prod"
OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"

# (rule, resource type, name or None, mutation, what the message says); checked against prod, the strictest
VIOLATIONS = [
    (security.tls_and_https_only, security.STORAGE, None, ("minimumTlsVersion", "TLS1_0"), "TLS1_2"),
    (security.tls_and_https_only, security.STORAGE, None, ("enableHttpsTrafficOnly", False), "enableHttpsTrafficOnly"),
    (security.no_public_blob_access, security.STORAGE, None, ("allowBlobPublicAccess", True), "allowBlobPublicAccess"),
    (security.key_vault_rbac_and_soft_delete, security.KEY_VAULT, None, ("properties.enableRbacAuthorization", False), "enableRbac"),
    (security.key_vault_rbac_and_soft_delete, security.KEY_VAULT, None, ("properties.enableSoftDelete", False), "soft delete"),
    (
        security.key_vault_purge_protection_in_prod,
        security.KEY_VAULT,
        None,
        ("properties.enablePurgeProtection", None),
        "enablePurgeProtection",
    ),
    (security.no_registry_admin_user, security.REGISTRY, None, ("adminUserEnabled", True), "adminUserEnabled"),
    (security.no_registry_admin_user, security.REGISTRY, None, ("anonymousPullEnabled", True), "anonymousPull"),
    (
        security.ssh_closed,
        security.COMPUTE,
        "cpu-cluster",
        ("properties.properties.remoteLoginPortPublicAccess", "Enabled"),
        "remoteLoginPortPublicAccess",
    ),
    (
        security.ssh_closed,
        security.COMPUTE,
        "gpu-cluster",
        ("properties.properties.userAccountCredentials", {"adminUserName": "azureuser", "adminUserSshPublicKey": "k"}),
        "SSH",
    ),
    (
        security.scales_to_zero,
        security.COMPUTE,
        "cpu-cluster",
        ("properties.properties.scaleSettings.minNodeCount", 1),
        "minNodeCount",
    ),
    (
        security.scales_to_zero,
        security.COMPUTE,
        "gpu-cluster",
        ("properties.properties.scaleSettings.nodeIdleTimeBeforeScaleDown", None),
        "nodeIdleTimeBeforeScaleDown",
    ),
    (security.identity_based_access, security.WORKSPACE, None, ("v1LegacyMode", True), "v1LegacyMode"),
    (security.identity_based_access, security.AKS, None, ("aadProfile.enableAzureRBAC", False), "enableAzureRBAC"),
    (security.identity_based_access, security.AKS, None, ("disableLocalAccounts", False), "disableLocalAccounts"),
    (
        security.tls_inference_in_prod,
        security.EXTENSION,
        None,
        ("configurationSettings.allowInsecureConnections", "True"),
        "allowInsecureConnections",
    ),
    (security.least_privilege_roles, ROLE, "automation-workspace", ("scope", RG_SCOPE), "wider than"),
    (
        security.least_privilege_roles,
        ROLE,
        "automation-workspace",
        ("scope", f"/subscriptions/{SUBSCRIPTION_ID}"),
        "wider than",
    ),
    (security.least_privilege_roles, ROLE, "kubelet-image-pull", ("principalType", "User"), "principalType"),
    (
        security.least_privilege_roles,
        ROLE,
        "automation-blob-data",
        ("roleDefinitionId", f"/subscriptions/{SUBSCRIPTION_ID}/providers/Microsoft.Authorization/roleDefinitions/{OWNER}"),
        "Owner",
    ),
    (security.tagged, security.STORAGE, None, ("tags.managed-by", None), "managed-by"),
    (security.tagged, "azuread:index/application:Application", None, ("tags", ["project:x"]), "stack, managed-by"),
    (security.tagged, security.COMPUTE, "kubernetes-compute", ("tags", None), "project"),
]


def ids(case):
    rule, token, name, (path, _), _ = case
    return f"{rule.__name__}-{name or token.rsplit(':', 1)[-1]}-{path}"


@pytest.mark.parametrize("case", VIOLATIONS, ids=[ids(case) for case in VIOLATIONS])
def test_rule_catches_a_violation(case):
    rule, token, name, (path, value), says = case
    run = run_stack("prod")
    context = context_of(run)
    resource = run.one(token, name)
    assert list(rule(resource, context)) == []
    found = list(rule(changed(resource, path, value), context))
    assert found and says in found[0], found


def test_stateful_resources_unprotected_in_prod_are_caught():
    run = run_stack("prod")
    workspace = run.one(security.WORKSPACE)
    assert list(security.stateful_protected_in_prod(workspace, context_of(run))) == []
    unprotected = dataclasses.replace(workspace, protect=False)
    found = list(security.stateful_protected_in_prod(unprotected, context_of(run)))
    assert found == ["Workspace 'workspace': stateful resources must be protected in prod"]


def test_plain_text_secret_outputs_are_caught():
    exports = {outputs.WORKSPACE: "mlw", outputs.AUTOMATION_CLIENT_SECRET: "s3cret", "storage_connection_string": "x"}
    assert security.output_violations(exports, secret_keys={outputs.AUTOMATION_CLIENT_SECRET}) == [
        "stack output 'storage_connection_string' must be exported as a Pulumi secret"
    ]
    assert security.output_violations(exports, secret_keys=set()) == [
        f"stack output '{outputs.AUTOMATION_CLIENT_SECRET}' must be exported as a Pulumi secret",
        "stack output 'storage_connection_string' must be exported as a Pulumi secret",
    ]


def test_every_rule_is_exercised_here():
    exercised = {case[0] for case in VIOLATIONS} | {security.stateful_protected_in_prod}
    assert exercised == set(security.RULES)
