"""Security rules, as plain functions over the resources a stack registers.

Each rule takes one registered resource (anything with `type`, `name`, `inputs` (the engine's
camelCase property names) and `protect`) and the stack's `Context`, and yields one line per
violation. The test suite runs every rule over every resource of every stack file, and proves
each rule catches a violation. `output_violations` does the same for the stack's exports.
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable, Iterator, Mapping

from infra import outputs
from infra import roles

STORAGE = "azure-native:storage:StorageAccount"
KEY_VAULT = "azure-native:keyvault:Vault"
REGISTRY = "azure-native:containerregistry:Registry"
WORKSPACE = "azure-native:machinelearningservices:Workspace"
COMPUTE = "azure-native:machinelearningservices:Compute"
AKS = "azure-native:containerservice:ManagedCluster"
EXTENSION = "azure-native:kubernetesconfiguration:Extension"
ROLE_ASSIGNMENT = "azure-native:authorization:RoleAssignment"
# losing one of these loses data, models, images or secrets
STATEFUL = (WORKSPACE, STORAGE, KEY_VAULT, REGISTRY)
REQUIRED_TAGS = ("project", "stack", "managed-by")
# roles that could grant themselves more, or change anything in scope
PRIVILEGED_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
    "f58310d9-a9f6-439a-9e8d-f62e7b41a168": "Role Based Access Control Administrator",
}
SECRET_LOOKING_OUTPUT = re.compile(r"secret|password|connection_string|access_key|token", re.IGNORECASE)


@dataclass(frozen=True)
class Context:
    environment: str  # dev | prod
    subscription_id: str
    resource_group: str

    @property
    def resource_group_id(self) -> str:
        return f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"


Rule = Callable[[Any, Context], Iterator[str]]


def _where(resource: Any) -> str:
    return f"{resource.type.split(':')[-1]} {resource.name!r}"


def tls_and_https_only(resource: Any, context: Context) -> Iterator[str]:
    if resource.type == STORAGE:
        if resource.inputs.get("minimumTlsVersion") != "TLS1_2":
            yield f"{_where(resource)}: minimumTlsVersion must be TLS1_2"
        if resource.inputs.get("enableHttpsTrafficOnly") is not True:
            yield f"{_where(resource)}: enableHttpsTrafficOnly must be true"


def no_public_blob_access(resource: Any, context: Context) -> Iterator[str]:
    if resource.type == STORAGE and resource.inputs.get("allowBlobPublicAccess") is not False:
        yield f"{_where(resource)}: allowBlobPublicAccess must be false"


def key_vault_rbac_and_soft_delete(resource: Any, context: Context) -> Iterator[str]:
    if resource.type == KEY_VAULT:
        properties = resource.inputs.get("properties", {})
        if properties.get("enableRbacAuthorization") is not True:
            yield f"{_where(resource)}: enableRbacAuthorization must be true (no access policies)"
        if properties.get("enableSoftDelete") is False:
            yield f"{_where(resource)}: soft delete must stay on"
        if properties.get("accessPolicies"):
            yield f"{_where(resource)}: accessPolicies are set; access is granted by RBAC only"


def key_vault_purge_protection_in_prod(resource: Any, context: Context) -> Iterator[str]:
    if resource.type == KEY_VAULT and context.environment == "prod":
        if resource.inputs.get("properties", {}).get("enablePurgeProtection") is not True:
            yield f"{_where(resource)}: enablePurgeProtection must be true in prod"


def no_registry_admin_user(resource: Any, context: Context) -> Iterator[str]:
    if resource.type == REGISTRY:
        if resource.inputs.get("adminUserEnabled") is not False:
            yield f"{_where(resource)}: adminUserEnabled must be false"
        if resource.inputs.get("anonymousPullEnabled") is True:
            yield f"{_where(resource)}: anonymousPullEnabled must be off"


def _aml_compute(resource: Any) -> dict | None:
    properties = resource.inputs.get("properties", {})
    if resource.type == COMPUTE and properties.get("computeType") == "AmlCompute":
        return properties.get("properties", {})
    return None


def ssh_closed(resource: Any, context: Context) -> Iterator[str]:
    cluster = _aml_compute(resource)
    if cluster is not None:
        if cluster.get("remoteLoginPortPublicAccess") != "Disabled":
            yield f"{_where(resource)}: remoteLoginPortPublicAccess must be Disabled"
        if cluster.get("userAccountCredentials"):
            yield f"{_where(resource)}: userAccountCredentials (SSH user) must not be set"


def scales_to_zero(resource: Any, context: Context) -> Iterator[str]:
    cluster = _aml_compute(resource)
    if cluster is not None:
        scale = cluster.get("scaleSettings", {})
        if scale.get("minNodeCount", 0) != 0:
            yield f"{_where(resource)}: scaleSettings.minNodeCount must be 0"
        if not scale.get("nodeIdleTimeBeforeScaleDown"):
            yield f"{_where(resource)}: scaleSettings.nodeIdleTimeBeforeScaleDown must be set"


def identity_based_access(resource: Any, context: Context) -> Iterator[str]:
    """Workspace and AKS sign in with managed identities and authorize with Azure RBAC."""
    if resource.type == WORKSPACE:
        if resource.inputs.get("identity", {}).get("type") != "SystemAssigned":
            yield f"{_where(resource)}: identity.type must be SystemAssigned"
        if resource.inputs.get("v1LegacyMode") is not False:
            yield f"{_where(resource)}: v1LegacyMode must be false"
    if resource.type == AKS:
        if resource.inputs.get("aadProfile", {}).get("enableAzureRBAC") is not True:
            yield f"{_where(resource)}: aadProfile.enableAzureRBAC must be true"
        if resource.inputs.get("disableLocalAccounts") is not True:
            yield f"{_where(resource)}: disableLocalAccounts must be true"
        if resource.inputs.get("identity", {}).get("type") not in ("SystemAssigned", "UserAssigned"):
            yield f"{_where(resource)}: must use a managed identity"


def tls_inference_in_prod(resource: Any, context: Context) -> Iterator[str]:
    if resource.type == EXTENSION and context.environment == "prod":
        if resource.inputs.get("configurationSettings", {}).get("allowInsecureConnections") != "False":
            yield f"{_where(resource)}: allowInsecureConnections must be False in prod"


def least_privilege_roles(resource: Any, context: Context) -> Iterator[str]:
    if resource.type == ROLE_ASSIGNMENT:
        scope = resource.inputs.get("scope", "")
        if not scope.startswith(context.resource_group_id + "/"):
            yield f"{_where(resource)}: scope {scope!r} is wider than a resource in {context.resource_group_id}"
        if resource.inputs.get("principalType") != "ServicePrincipal":
            yield f"{_where(resource)}: principalType must be ServicePrincipal"
        role = resource.inputs.get("roleDefinitionId", "").rsplit("/", 1)[-1]
        if role in PRIVILEGED_ROLES:
            yield f"{_where(resource)}: grants {PRIVILEGED_ROLES[role]}, a privileged role"
        elif role not in roles.NAMES:
            yield f"{_where(resource)}: grants role {role}, which is not on the reviewed list in infra/roles.py"


def stateful_protected_in_prod(resource: Any, context: Context) -> Iterator[str]:
    if resource.type in STATEFUL and context.environment == "prod" and not resource.protect:
        yield f"{_where(resource)}: stateful resources must be protected in prod"


@lru_cache(maxsize=None)
def takes_tags(token: str) -> bool:
    """Whether a resource type takes tags: its Args class has a `tags` parameter."""
    package, module, kind = token.split(":")
    if package == "azure-native":
        args_class = getattr(importlib.import_module(f"pulumi_azure_native.{module}"), f"{kind}Args")
    elif package == "azuread":
        args_class = getattr(importlib.import_module("pulumi_azuread"), f"{kind}Args")
    else:
        return False
    return "tags" in inspect.signature(args_class.__init__).parameters


def tagged(resource: Any, context: Context) -> Iterator[str]:
    if takes_tags(resource.type):
        tags = resource.inputs.get("tags") or {}
        # Entra ID objects carry "key:value" strings; Azure resources a key/value map
        present = {tag.split(":", 1)[0] for tag in tags} if isinstance(tags, list) else set(tags)
        missing = [tag for tag in REQUIRED_TAGS if tag not in present]
        if missing:
            yield f"{_where(resource)}: missing tags {', '.join(missing)}"


RULES: tuple[Rule, ...] = (
    tls_and_https_only,
    no_public_blob_access,
    key_vault_rbac_and_soft_delete,
    key_vault_purge_protection_in_prod,
    no_registry_admin_user,
    ssh_closed,
    scales_to_zero,
    identity_based_access,
    tls_inference_in_prod,
    least_privilege_roles,
    stateful_protected_in_prod,
    tagged,
)


def violations(resources: Iterable[Any], context: Context, rules: Iterable[Rule] = RULES) -> list[str]:
    rules = tuple(rules)
    return [line for resource in resources for rule in rules for line in rule(resource, context)]


def output_violations(exports: Mapping[str, Any], secret_keys: Iterable[str]) -> list[str]:
    """No secret in plain text: contract secrets, and anything named like one, must be Pulumi secrets."""
    secret_keys = set(secret_keys)
    return [
        f"stack output {key!r} must be exported as a Pulumi secret"
        for key in exports
        if (key in outputs.SECRET or SECRET_LOOKING_OUTPUT.search(key)) and key not in secret_keys
    ]
