"""Security rules (the platform's secure defaults, prod's baseline hardening) and style rules (the
project's conventions), registered in infra/rules.py beside the platform constraints of infra/constraints.py.

`output_violations` holds the stack's exports to the same standard: no secret in plain text, no export the
engine would drop.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Iterator, Mapping

from infra import outputs, roles
from infra.rules import Resource, Stack, known, rule
from infra.settings import PUBLISHING_ENVIRONMENT

STORAGE = "azure-native:storage:StorageAccount"
KEY_VAULT = "azure-native:keyvault:Vault"
REGISTRY = "azure-native:containerregistry:Registry"
WORKSPACE = "azure-native:machinelearningservices:Workspace"
COMPUTE = "azure-native:machinelearningservices:Compute"
AKS = "azure-native:containerservice:ManagedCluster"
EXTENSION = "azure-native:kubernetesconfiguration:Extension"
ROLE_ASSIGNMENT = "azure-native:authorization:RoleAssignment"
ROLE_DEFINITION = "azure-native:authorization:RoleDefinition"
ML_REGISTRY = "azure-native:machinelearningservices:Registry"
ML_REGISTRY_SCOPE = re.compile(r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.MachineLearningServices/registries/[^/]+", re.IGNORECASE)
VIRTUAL_NETWORK = "azure-native:network:VirtualNetwork"
# losing one of these loses data, models, images or secrets
STATEFUL = (WORKSPACE, STORAGE, KEY_VAULT, REGISTRY)
REQUIRED_TAGS = ("project", "stack", "managed-by", "environment")
# roles that could grant themselves more, or change anything in scope
PRIVILEGED_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
    "f58310d9-a9f6-439a-9e8d-f62e7b41a168": "Role Based Access Control Administrator",
}
# who a role assignment may name: identities (service principals, managed identities), and the data scientists: their
# Entra group, or each of them (roles.TEAM_ROLES only)
PEOPLE = ("Group", "User")
PRINCIPAL_TYPES = ("ServicePrincipal", *PEOPLE)
# a role assignment on one resource (or below it) in a resource group; never a group or subscription
RESOURCE_SCOPE = re.compile(r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/.+", re.IGNORECASE)
SECRET_LOOKING_OUTPUT = re.compile(r"secret|password|connection_string|access_key|token", re.IGNORECASE)
# the platform's own components; a resource outside one is loose (DESIGN.md: children get parent=self)
COMPONENT_PREFIX = "azureml-platform:"


def aml_compute(resource: Resource) -> Mapping | None:
    """The AmlCompute properties of a compute resource, or None for any other resource."""
    if resource.type == COMPUTE and resource.get("properties.computeType") == "AmlCompute":
        return resource.get("properties.properties", {})
    return None


def compute_instance(resource: Resource) -> Mapping | None:
    """The ComputeInstance properties of a compute resource (a workstation), or None for any other resource (and
    while a preview cannot know them)."""
    if resource.type == COMPUTE and resource.get("properties.computeType") == "ComputeInstance":
        properties = resource.get("properties.properties", {})
        return properties if known(properties) and isinstance(properties, Mapping) else None
    return None


def training_compute(resource: Resource) -> Mapping | None:
    """The properties of a compute resource that runs in the training subnet (clusters, workstations), or None."""
    found = aml_compute(resource)
    return found if found is not None else compute_instance(resource)


@rule("security")
def storage_tls_and_https_only(resource: Resource) -> Iterator[str]:
    """Storage accepts TLS 1.2 or newer, over HTTPS only."""
    if resource.type == STORAGE:
        if resource.get("minimumTlsVersion") != "TLS1_2":
            yield f"{resource.where}: minimumTlsVersion must be TLS1_2"
        if resource.get("enableHttpsTrafficOnly") is not True:
            yield f"{resource.where}: enableHttpsTrafficOnly must be true"


@rule("security")
def no_public_blob_access(resource: Resource) -> Iterator[str]:
    """No anonymous reads of blobs."""
    if resource.type == STORAGE and resource.get("allowBlobPublicAccess") is not False:
        yield f"{resource.where}: allowBlobPublicAccess must be false"


@rule("security")
def key_vault_rbac_and_soft_delete(resource: Resource) -> Iterator[str]:
    """Key Vault authorizes with Azure RBAC only, keeps soft delete, and denies the internet."""
    if resource.type == KEY_VAULT:
        if resource.get("properties.enableRbacAuthorization") is not True:
            yield f"{resource.where}: enableRbacAuthorization must be true (no access policies)"
        if resource.get("properties.enableSoftDelete") is False:
            yield f"{resource.where}: soft delete must stay on"
        if resource.get("properties.accessPolicies"):
            yield f"{resource.where}: accessPolicies are set; access is granted by RBAC only"
        if resource.get("properties.networkAcls.defaultAction") != "Deny":
            yield f"{resource.where}: networkAcls.defaultAction must be Deny (trusted Azure services and private endpoints only)"


@rule("security")
def key_vault_purge_protection_in_prod(resource: Resource) -> Iterator[str]:
    """prod's Key Vault has purge protection."""
    if resource.type == KEY_VAULT and resource.environment == "prod":
        if resource.get("properties.enablePurgeProtection") is not True:
            yield f"{resource.where}: enablePurgeProtection must be true in prod"


@rule("security")
def no_registry_admin_user(resource: Resource) -> Iterator[str]:
    """The registry has no admin user and no anonymous pull: identities pull with AcrPull."""
    if resource.type == REGISTRY:
        if resource.get("adminUserEnabled") is not False:
            yield f"{resource.where}: adminUserEnabled must be false"
        if resource.get("anonymousPullEnabled") is True:
            yield f"{resource.where}: anonymousPullEnabled must be off"


@rule("security")
def ssh_closed(resource: Resource) -> Iterator[str]:
    """Training clusters and workstations take no SSH."""
    cluster = aml_compute(resource)
    if cluster is not None:
        if cluster.get("remoteLoginPortPublicAccess") != "Disabled":
            yield f"{resource.where}: remoteLoginPortPublicAccess must be Disabled"
        if cluster.get("userAccountCredentials"):
            yield f"{resource.where}: userAccountCredentials (SSH user) must not be set"
    instance = compute_instance(resource)
    if instance is not None:
        ssh = instance.get("sshSettings") or {}
        if known(ssh) and ssh.get("sshPublicAccess") != "Disabled":
            yield f"{resource.where}: sshSettings.sshPublicAccess must be Disabled"
        if known(ssh) and ssh.get("adminPublicKey"):
            yield f"{resource.where}: sshSettings.adminPublicKey (an SSH key) must not be set"


@rule("security")
def workstations_stop_when_idle(resource: Resource) -> Iterator[str]:
    """Workstations shut down when idle (Azure's own policy: "Azure Machine Learning Compute Instance should have
    idle shutdown")."""
    instance = compute_instance(resource)
    if instance is not None and not instance.get("idleTimeBeforeShutdown"):
        yield f"{resource.where}: idleTimeBeforeShutdown must be set"


@rule("security")
def workstations_are_personal(resource: Resource) -> Iterator[str]:
    """Each workstation is assigned to one user, and its applications (Jupyter, VS Code) open to that user only."""
    instance = compute_instance(resource)
    if instance is None:
        return
    assigned = resource.get("properties.properties.personalComputeInstanceSettings.assignedUser")
    if known(assigned) and not (isinstance(assigned, Mapping) and assigned.get("objectId") and assigned.get("tenantId")):
        yield f"{resource.where}: personalComputeInstanceSettings.assignedUser (objectId, tenantId) must be set"
    if instance.get("applicationSharingPolicy") != "Personal":
        yield f"{resource.where}: applicationSharingPolicy must be Personal"


@rule("security")
def scales_to_zero(resource: Resource) -> Iterator[str]:
    """Training clusters scale down to zero nodes when idle."""
    cluster = aml_compute(resource)
    if cluster is not None:
        scale = cluster.get("scaleSettings", {})
        if scale.get("minNodeCount", 0) != 0:
            yield f"{resource.where}: scaleSettings.minNodeCount must be 0"
        if not scale.get("nodeIdleTimeBeforeScaleDown"):
            yield f"{resource.where}: scaleSettings.nodeIdleTimeBeforeScaleDown must be set"


@rule("security")
def identity_based_access(resource: Resource) -> Iterator[str]:
    """The workspace and AKS sign in with managed identities and authorize with Azure RBAC."""
    if resource.type == WORKSPACE:
        if resource.get("identity.type") != "SystemAssigned":
            yield f"{resource.where}: identity.type must be SystemAssigned"
        if resource.get("v1LegacyMode") is not False:
            yield f"{resource.where}: v1LegacyMode must be false"
    if resource.type == AKS:
        if resource.get("aadProfile.enableAzureRBAC") is not True:
            yield f"{resource.where}: aadProfile.enableAzureRBAC must be true"
        if resource.get("identity.type") not in ("SystemAssigned", "UserAssigned"):
            yield f"{resource.where}: must use a managed identity"


@rule("security")
def aks_hardened(resource: Resource) -> Iterator[str]:
    """AKS patches itself and its node images, enforces network policy and encrypts at host; prod sends
    Container Insights to Log Analytics (Azure security baseline for AKS)."""
    if resource.type != AKS:
        return
    if resource.get("autoUpgradeProfile.upgradeChannel") in (None, "none"):
        yield f"{resource.where}: autoUpgradeProfile.upgradeChannel must be set (patch), or the cluster drifts out of support"
    if resource.get("autoUpgradeProfile.nodeOSUpgradeChannel") not in ("NodeImage", "SecurityPatch"):
        yield f"{resource.where}: autoUpgradeProfile.nodeOSUpgradeChannel must be NodeImage or SecurityPatch"
    if resource.get("networkProfile.networkPolicy") in (None, "none"):
        yield f"{resource.where}: networkProfile.networkPolicy must be set (cilium)"
    for pool in resource.get("agentPoolProfiles", []) or []:
        if known(pool) and pool.get("enableEncryptionAtHost") is not True:
            yield f"{resource.where}: agent pool {pool.get('name')!r} must set enableEncryptionAtHost"
    if resource.environment == "prod" and resource.get("addonProfiles.omsagent.enabled") is not True:
        yield f"{resource.where}: prod sends Container Insights to Log Analytics (addonProfiles.omsagent)"


@rule("security")
def redundant_storage_in_prod(resource: Resource) -> Iterator[str]:
    """prod's storage survives a zone outage."""
    if resource.type == STORAGE and resource.environment == "prod":
        sku = resource.get("sku.name", "")
        if known(sku) and "ZRS" not in sku and "GRS" not in sku:
            yield f"{resource.where}: sku {sku} is locally redundant; prod uses zone- or geo-redundant storage"


@rule("security")
def zone_redundant_registry_in_prod(resource: Resource) -> Iterator[str]:
    """prod's registry is zone-redundant."""
    if resource.type == REGISTRY and resource.environment == "prod" and resource.get("zoneRedundancy") != "Enabled":
        yield f"{resource.where}: zoneRedundancy must be Enabled in prod"


@rule("security", whole_stack=True)
def isolated_data_plane(stack: Stack) -> Iterator[str]:
    """In a stack with its own VNet, storage and the registry deny the internet and compute (clusters and
    workstations) has no public IP."""
    if not stack.of_type(VIRTUAL_NETWORK):
        return
    for resource in stack.of_type(STORAGE):
        if resource.get("networkRuleSet.defaultAction") != "Deny":
            yield f"{resource.where}: networkRuleSet.defaultAction must be Deny in an isolated stack"
    for resource in stack.of_type(REGISTRY):
        if resource.get("networkRuleSet.defaultAction") != "Deny":
            yield f"{resource.where}: networkRuleSet.defaultAction must be Deny in an isolated stack"
    for resource in stack.resources:
        compute = training_compute(resource)
        if compute is not None and compute.get("enableNodePublicIp") is not False:
            yield f"{resource.where}: enableNodePublicIp must be false in an isolated stack"


@rule("security", whole_stack=True)
def tls_inference_in_prod(stack: Stack) -> Iterator[str]:
    """prod's inference router serves TLS only."""
    if stack.environment != "prod":
        return
    for resource in stack.of_type(EXTENSION):
        if resource.get("configurationSettings.allowInsecureConnections") != "False":
            yield f"{resource.where}: allowInsecureConnections must be False in prod"


@rule("security")
def least_privilege_roles(resource: Resource) -> Iterator[str]:
    """Role assignments grant reviewed, non-privileged roles on single resources: to service principals (identities),
    and to the data scientists (their Entra group, or users) only the team's roles."""
    if resource.type != ROLE_ASSIGNMENT:
        return
    scope = resource.get("scope", "")
    if known(scope) and not RESOURCE_SCOPE.fullmatch(scope):
        yield f"{resource.where}: scope {scope!r} is wider than a single resource in a resource group"
    principal_type = resource.get("principalType")
    if principal_type not in PRINCIPAL_TYPES:
        yield (f"{resource.where}: principalType must be ServicePrincipal (identities), or Group or User (the data "
               f"scientists), not {principal_type!r}")  # fmt: skip
    role_id = resource.get("roleDefinitionId", "")
    if not known(role_id):
        return
    role = role_id.rsplit("/", 1)[-1]
    if role in PRIVILEGED_ROLES:
        yield f"{resource.where}: grants {PRIVILEGED_ROLES[role]}, a privileged role"
    elif (registry_role := ml_registry_role(resource)) is not None:
        if principal_type in PEOPLE and registry_role != "reader":
            yield f"{resource.where}: principalType {principal_type} holds the ML registry's {registry_role} role; people only read it"
    elif role not in roles.NAMES:
        if known(scope):  # unknown: it may be an ML registry's own role, recognised by its scope
            yield f"{resource.where}: grants role {role}, which is not on the reviewed list in infra/roles.py"
    elif principal_type in PEOPLE and role not in roles.TEAM_ROLES:
        team = ", ".join(roles.NAMES[team_role] for team_role in roles.TEAM_ROLES)
        yield f"{resource.where}: principalType {principal_type} holds {roles.NAMES[role]}; people hold only the team's roles ({team})"


def ml_registry_role(resource: Resource) -> str | None:
    """"reader" or "publisher" when a role assignment grants one of an ML registry's two custom roles at that
    registry's scope (roles.ml_registry_role_guid); None otherwise."""
    scope, role_id = resource.get("scope", ""), resource.get("roleDefinitionId", "")
    if not known(scope, role_id) or not ML_REGISTRY_SCOPE.fullmatch(scope):
        return None
    guid = role_id.rsplit("/", 1)[-1].lower()
    return next((kind for kind in roles.ML_REGISTRY_ROLE_ACTIONS if roles.ml_registry_role_guid(kind, scope) == guid), None)


@rule("security", whole_stack=True)
def ml_registry_roles(stack: Stack) -> Iterator[str]:
    """An ML registry is reached only through its two custom roles: the publisher by dev's automation identity alone."""
    for resource in stack.of_type(ROLE_ASSIGNMENT):
        scope = resource.get("scope", "")
        if not known(scope) or not ML_REGISTRY_SCOPE.fullmatch(scope):
            continue
        kind = ml_registry_role(resource)
        if kind is None and known(resource.get("roleDefinitionId")):
            yield (f"{resource.where}: grants {resource.get('roleDefinitionId').rsplit('/', 1)[-1]} on an ML registry; only "
                   "its reader and publisher roles are granted there (AzureML Registry User, Contributor and Owner also "
                   "write and delete)")  # fmt: skip
        elif kind == "publisher" and (stack.environment != PUBLISHING_ENVIRONMENT or resource.get("principalType") != "ServicePrincipal"):
            yield (f"{resource.where}: the ML registry's publisher role goes to the {PUBLISHING_ENVIRONMENT} stack's "
                   f"automation identity only, not to a {resource.get('principalType')} of {stack.environment!r}")  # fmt: skip


@rule("security")
def ml_registry_role_definitions(resource: Resource) -> Iterator[str]:
    """The ML registry's custom roles hold exactly the documented actions, nothing that deletes, on its resource group only."""
    if resource.type != ROLE_DEFINITION:
        return
    name = resource.get("roleName", "")
    kind = next((kind for kind in roles.ML_REGISTRY_ROLE_ACTIONS if known(name) and name.startswith(f"AzureML Registry {kind.title()} ")), None)
    if kind is None:
        yield f"{resource.where}: {name!r} is not one of the ML registry's roles, the only custom roles the platform defines"
        return
    for permission in resource.get("permissions", []) or []:
        if sorted(permission.get("actions", [])) != sorted(roles.ML_REGISTRY_ROLE_ACTIONS[kind]) or any(
            permission.get(key) for key in ("notActions", "dataActions", "notDataActions")
        ):
            yield (f"{resource.where}: the {kind} role holds {permission.get('actions')} (and data actions "
                   f"{permission.get('dataActions')}); exactly {list(roles.ML_REGISTRY_ROLE_ACTIONS[kind])}")  # fmt: skip
    for scope in resource.get("assignableScopes", []) or []:
        if known(scope) and not re.fullmatch(r"/subscriptions/[^/]+/resourceGroups/[^/]+", scope, re.IGNORECASE):
            yield f"{resource.where}: assignable at {scope!r}; only at the ML registry's resource group"


@rule("security")
def ml_registry_protected(resource: Resource) -> Iterator[str]:
    """The ML registry holds every promoted model: it is protected wherever it is."""
    if resource.type == ML_REGISTRY and not resource.protect:
        yield f"{resource.where}: the ML registry must be protected"


@rule("security")
def stateful_protected_in_prod(resource: Resource) -> Iterator[str]:
    """prod protects the resources that hold data, models, images or secrets."""
    if resource.type in STATEFUL and resource.environment == "prod" and not resource.protect:
        yield f"{resource.where}: stateful resources must be protected in prod"


def takes_tags(token: str) -> bool:
    """Whether a resource type takes tags: its Args class has a `tags` parameter."""
    import importlib
    import inspect

    package, module, kind = token.split(":")
    if package == "azure-native":
        args_class = getattr(importlib.import_module(f"pulumi_azure_native.{module}"), f"{kind}Args")
    elif package == "azuread":
        args_class = getattr(importlib.import_module("pulumi_azuread"), f"{kind}Args")
    else:
        return False
    return "tags" in inspect.signature(args_class.__init__).parameters


_TAKES_TAGS: dict[str, bool] = {}


@rule("style")
def tagged(resource: Resource) -> Iterator[str]:
    """Every resource that takes tags carries the stack's (cost reports, purge and the rules match on them)."""
    if resource.type not in _TAKES_TAGS:
        _TAKES_TAGS[resource.type] = takes_tags(resource.type)
    if not _TAKES_TAGS[resource.type]:
        return
    tags = resource.get("tags") or {}
    if not known(tags):
        return
    # Entra ID objects carry "key:value" strings; Azure resources a key/value map
    present = {tag.split(":", 1)[0] for tag in tags} if isinstance(tags, list) else set(tags)
    missing = [tag for tag in REQUIRED_TAGS if tag not in present]
    if missing:
        yield f"{resource.where}: missing tags {', '.join(missing)}"


@rule("style")
def belongs_to_a_component(resource: Resource) -> Iterator[str]:
    """Each cloud resource is the child of the component that owns its concern (the resource group aside)."""
    if resource.type.startswith(COMPONENT_PREFIX) or resource.type.startswith("pulumi:"):
        return
    if resource.type == "azure-native:resources:ResourceGroup":
        return
    parent_type = resource.parent.split("::")[-2].split("$")[-1] if resource.parent.count("::") >= 3 else ""
    if not parent_type.startswith(COMPONENT_PREFIX):
        yield f"{resource.where}: declared outside the platform's components (parent {parent_type or 'the stack'})"


def output_violations(
    exports: Mapping[str, Any], secret_keys: Iterable[str], dropped: Iterable[str] = ()
) -> list[str]:
    """No secret in plain text: contract secrets, and anything named like one, must be Pulumi secrets. And no
    export the engine drops: one whose value is None never reaches `pulumi stack output` (rpc.py,
    serialize_properties), so a reader would find the key missing."""
    secret_keys = set(secret_keys)
    found = [
        f"stack output {key!r} must be exported as a Pulumi secret"
        for key in exports
        if (key in outputs.SECRET or SECRET_LOOKING_OUTPUT.search(key)) and key not in secret_keys
    ]
    found += [
        f"stack output {key!r} is None, which the engine drops: export it only when it has a value "
        "(infra/outputs.py, OPTIONAL)"
        for key in sorted(dropped)
    ]
    return found


# What Microsoft's built-in Azure Policy definitions ask, where the platform meets them (infra/conformance.py keeps
# the rest): each rule states the definition's condition for the property it fixes.
DIAGNOSTIC_SETTING = "azure-native:monitor:DiagnosticSetting"
BLOB_SERVICE = "azure-native:storage:BlobServiceProperties"
# "Storage SAS tokens should adhere to 7 day maximum validity" (Deny): at most 7 days, and Block
SAS_LIMIT_DAYS = 7
SAS_PERIOD = re.compile(r"(\d+)\.(\d{2}):(\d{2}):(\d{2})")


@rule("security")
def storage_sas_expires_within_a_week(resource: Resource) -> Iterator[str]:
    """Storage refuses a SAS valid for more than 7 days (Azure Policy: "Storage SAS tokens should adhere to 7 day maximum
    validity", Deny by default)."""
    if resource.type != STORAGE:
        return
    period, action = resource.get("sasPolicy.sasExpirationPeriod"), resource.get("sasPolicy.expirationAction")
    if not known(period, action):
        return
    match = SAS_PERIOD.fullmatch(str(period or ""))
    days = (int(match[1]), int(match[2]), int(match[3]), int(match[4])) if match else None
    if days is None or days[0] > SAS_LIMIT_DAYS or (days[0] == SAS_LIMIT_DAYS and any(days[1:])):
        yield f"{resource.where}: sasPolicy.sasExpirationPeriod is {period!r}; at most {SAS_LIMIT_DAYS}.00:00:00 (DD.HH:MM:SS)"
    if action != "Block":
        yield f"{resource.where}: sasPolicy.expirationAction is {action!r}; Block (Log passes out-of-policy SAS)"


@rule("security")
def storage_infrastructure_encryption(resource: Resource) -> Iterator[str]:
    """Storage encrypts twice: the service's layer and the infrastructure's (Azure Policy: "Storage accounts should
    have infrastructure encryption")."""
    if resource.type == STORAGE and resource.get("encryption.requireInfrastructureEncryption") is not True:
        yield f"{resource.where}: encryption.requireInfrastructureEncryption must be true"


@rule("security", whole_stack=True)
def storage_soft_delete(stack: Stack) -> Iterator[str]:
    """Deleted blobs and containers stay recoverable (Azure Policy: "Configure soft delete for blobs and containers on
    Storage Accounts", which deploys it wherever the blob service lacks either)."""
    for account in stack.of_type(STORAGE):
        services = [s for s in stack.of_type(BLOB_SERVICE) if account.urn in s.depends_on("accountName")]
        if not services:
            yield f"{account.where}: no blob service properties (BlobServiceProperties) set its soft delete"
        for service in services:
            for policy in ("deleteRetentionPolicy", "containerDeleteRetentionPolicy"):
                if service.get(f"{policy}.enabled") is not True:
                    yield f"{service.where}: {policy}.enabled must be true"


@rule("security")
def aks_guarded(resource: Resource) -> Iterator[str]:
    """AKS runs the Azure Policy add-on, Image Cleaner and workload identity, has no run command and no SSH on its
    nodes, and prod runs Defender's sensor (the built-in AKS definitions of Azure Policy)."""
    if resource.type != AKS:
        return
    required = {
        "addonProfiles.azurepolicy.enabled": "the Azure Policy add-on",
        "securityProfile.imageCleaner.enabled": "Image Cleaner",
        "securityProfile.workloadIdentity.enabled": "workload identity",
        "oidcIssuerProfile.enabled": "the OIDC issuer (workload identity needs it)",
        "apiServerAccessProfile.disableRunCommand": "no run command",
    }
    if resource.environment == "prod":
        required["securityProfile.defender.securityMonitoring.enabled"] = "Defender's sensor in prod"
    for path, what in required.items():
        if resource.get(path) is not True:
            yield f"{resource.where}: {path} must be true ({what})"
    for pool in resource.get("agentPoolProfiles", []) or []:
        if known(pool) and (pool.get("securityProfile") or {}).get("sshAccess") != "Disabled":
            yield f"{resource.where}: agent pool {pool.get('name')!r} must set securityProfile.sshAccess Disabled"


@rule("security", whole_stack=True)
def resource_logs_reach_log_analytics(stack: Stack) -> Iterator[str]:
    """The workspace, Key Vault, AKS, the blob service and the registry send their resource logs to the stack's Log
    Analytics workspace, in resource-specific tables, with the categories infra/resource_logs.py names."""
    from infra import resource_logs

    workspaces = stack.of_type("azure-native:operationalinsights:Workspace")
    expected = {
        WORKSPACE: resource_logs.WORKSPACE_CATEGORIES, KEY_VAULT: resource_logs.KEY_VAULT_CATEGORIES,
        AKS: resource_logs.AKS_CATEGORIES, BLOB_SERVICE: resource_logs.BLOB_CATEGORIES,
        REGISTRY: resource_logs.REGISTRY_CATEGORIES,
    }  # fmt: skip
    for resource in (r for r in stack.resources if r.type in expected):
        settings = [s for s in stack.of_type(DIAGNOSTIC_SETTING) if resource.urn in s.depends_on("resourceUri")]
        if not settings:
            yield f"{resource.where}: no diagnostic setting sends its resource logs to Log Analytics"
            continue
        for setting in settings:
            if not any(w.urn in setting.depends_on("workspaceId") for w in workspaces):
                yield f"{setting.where}: workspaceId must be the stack's Log Analytics workspace"
            if setting.get("logAnalyticsDestinationType") != resource_logs.DESTINATION_TYPE:
                yield f"{setting.where}: logAnalyticsDestinationType must be {resource_logs.DESTINATION_TYPE} (resource-specific tables)"
            logs = setting.get("logs", []) or []
            if not known(logs):
                continue
            logs = [entry for entry in logs if known(entry)]
            enabled = {entry.get("category") for entry in logs if entry.get("enabled") is True}
            if missing := [c for c in expected[resource.type] if c not in enabled]:
                yield f"{setting.where}: categories {', '.join(missing)} are not enabled"
            if any("retentionPolicy" in entry for entry in logs):
                yield f"{setting.where}: retentionPolicy is deprecated; the Log Analytics workspace keeps the logs"
