"""Platform constraints: documented Azure limitations that the program could break, as rules over the
resources a stack registers (infra/rules.py). Each quotes the page and the sentence it enforces; a test
proves each one catches a violation, and the CrossGuard pack (policies/) enforces them on `pulumi preview`.

Also here: the rule a Kubernetes deployment spec must keep against its instance type, which the tests apply
to jobs/specs/ (a deployment is the stage's, not a Pulumi resource).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Iterator, Mapping

from infra import roles, schedules
from infra.naming import COMPUTE_INSTANCE as COMPUTE_INSTANCE_NAME
from infra.naming import Names
from infra.rules import UNKNOWN as UNKNOWN_VALUE
from infra.rules import Resource, Stack, known, rule
from infra.security import (
    AKS,
    COMPUTE,
    EXTENSION,
    KEY_VAULT,
    ML_REGISTRY,
    ML_REGISTRY_SCOPE,
    REGISTRY,
    ROLE_ASSIGNMENT,
    STORAGE,
    VIRTUAL_NETWORK,
    WORKSPACE,
    aml_compute,
    compute_instance,
    training_compute,
)

RESOURCE_GROUP = "azure-native:resources:ResourceGroup"
MANAGEMENT_POLICY = "azure-native:storage:ManagementPolicy"
LIFECYCLE_RULE_NAME = re.compile(r"[A-Za-z0-9]{1,256}")
LIFECYCLE_MAX_RULES = 100
PRIVATE_ENDPOINT = "azure-native:network:PrivateEndpoint"
USER_ASSIGNED_IDENTITY = "azure-native:managedidentity:UserAssignedIdentity"
INSTANCE_TYPE = "kubernetes:amlarc.azureml.com/v1alpha1:InstanceType"
AZUREML_EXTENSION = "Microsoft.AzureML.Kubernetes"
MANAGED_NETWORK_MODES = ("AllowInternetOutbound", "AllowOnlyApprovedOutbound")
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
AZURE_AI_ADMINISTRATOR = "b78c5d69-af96-48a3-bf8d-a8b4d589de94"
DNS_1123_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# Kubernetes quantities: CPU in cores or millicores, memory with a binary or decimal suffix
_QUANTITY = re.compile(r"(?P<number>\d+(\.\d+)?)(?P<unit>m|Ki|Mi|Gi|Ti|k|M|G|T)?")
_UNITS = {None: 1, "m": 0.001, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(text: Any) -> float | None:
    """A Kubernetes resource quantity as a number (cores, bytes), or None when it is not one."""
    match = _QUANTITY.fullmatch(str(text)) if text is not None else None
    return float(match["number"]) * _UNITS[match["unit"]] if match else None


def _role(resource: Resource) -> str | None:
    role_id = resource.get("roleDefinitionId", "")
    return role_id.rsplit("/", 1)[-1].lower() if known(role_id) and role_id else None


def _extensions_of(stack: Stack, cluster: Resource) -> list[Resource]:
    """The Azure ML extensions installed on `cluster` (by its name, or by what the clusterName input comes from)."""
    return [
        extension
        for extension in stack.of_type(EXTENSION)
        if extension.get("extensionType") == AZUREML_EXTENSION
        and (cluster.urn in extension.depends_on("clusterName") or extension.get("clusterName") == cluster.get("resourceName"))
    ]


@rule(
    "platform",
    source="Deploy Azure Machine Learning extension on AKS or Arc Kubernetes cluster, Limitations "
    "(learn.microsoft.com/azure/machine-learning/how-to-deploy-kubernetes-extension): \"Disabling local accounts "
    "for AKS is not supported by Azure Machine Learning.\"",
    whole_stack=True,
)
def azureml_extension_needs_local_accounts(stack: Stack) -> Iterator[str]:
    """An AKS cluster with the Azure ML extension keeps its local accounts."""
    for cluster in stack.of_type(AKS):
        if cluster.get("disableLocalAccounts") is True and _extensions_of(stack, cluster):
            yield f"{cluster.where}: disableLocalAccounts is true, but the Azure ML extension is installed on it"


@rule(
    "platform",
    source="Workspace managed network isolation, Limitations (learn.microsoft.com/azure/machine-learning/"
    "how-to-managed-network): \"Kubernetes and attached VMs aren't supported in an Azure Machine Learning managed "
    "virtual network.\"",
    whole_stack=True,
)
def kubernetes_compute_outside_managed_network(stack: Stack) -> Iterator[str]:
    """Kubernetes compute is attached only to a workspace without a managed virtual network."""
    for compute in stack.of_type(COMPUTE):
        if compute.get("properties.computeType") != "Kubernetes":
            continue
        for workspace in stack.sources(compute, "workspaceName", WORKSPACE):
            mode = workspace.get("managedNetwork.isolationMode")
            if mode in MANAGED_NETWORK_MODES:
                yield f"{compute.where}: Kubernetes compute attached to {workspace.where}, whose managed network is {mode}"


@rule(
    "platform",
    source="Azure assigns these roles itself, and ARM answers a second assignment of a role to a principal at a "
    "scope with 409 RoleAssignmentExists. Workspace identity: \"As the workspace is created, the managed identity "
    "is automatically assigned the permissions it needs to access the storage account.\" (how-to-disable-local-"
    "auth-storage; the role is Storage Blob Data Contributor: MicrosoftDocs/azure-docs#80040 \"The role assignment "
    "already exists\") and \"Workspaces created after this date assign the system-assigned managed identity to the "
    "Azure AI Administrator role\" on the resource group (how-to-assign-roles). Compute cluster identity: \"A "
    "managed identity is automatically granted ACRPull role on workspace ACR\" (how-to-identity-based-service-"
    "authentication).",
    whole_stack=True,
)
def no_role_azure_assigns_itself(stack: Stack) -> Iterator[str]:
    """No role assignment repeats one that Azure ML makes itself."""
    for assignment in stack.of_type(ROLE_ASSIGNMENT):
        role = _role(assignment)
        for workspace in stack.sources(assignment, "principalId", WORKSPACE):
            if role == roles.STORAGE_BLOB_DATA_CONTRIBUTOR and stack.sources(assignment, "scope", STORAGE):
                yield f"{assignment.where}: Azure grants {workspace.where}'s identity Storage Blob Data Contributor on its storage itself"
            if role in (CONTRIBUTOR, AZURE_AI_ADMINISTRATOR) and stack.sources(assignment, "scope", RESOURCE_GROUP):
                yield f"{assignment.where}: Azure grants {workspace.where}'s identity its resource group role itself"
        for compute in stack.sources(assignment, "principalId", COMPUTE):
            if aml_compute(compute) is not None and role == roles.ACR_PULL and stack.sources(assignment, "scope", REGISTRY):
                yield f"{assignment.where}: Azure grants {compute.where}'s identity AcrPull on the workspace registry itself"


@rule(
    "platform",
    source="Assign Azure roles using Azure Resource Manager templates (learn.microsoft.com/azure/role-based-access-"
    "control/role-assignments-template): a second assignment of one role to one principal at one scope fails "
    "with \"Conflict: RoleAssignmentExists\" (\"The role assignment already exists.\").",
    whole_stack=True,
)
def one_assignment_per_role_principal_and_scope(stack: Stack) -> Iterator[str]:
    """No two role assignments grant one role to one principal at one scope."""
    seen: dict[tuple, Resource] = {}
    for assignment in stack.of_type(ROLE_ASSIGNMENT):
        # a value when it is known; during a preview, the resources it comes from
        principal, scope = assignment.get("principalId"), assignment.get("scope")
        key = (
            _role(assignment),
            principal if known(principal) else ("from", assignment.depends_on("principalId")),
            scope.lower() if known(scope) and isinstance(scope, str) else ("from", assignment.depends_on("scope")),
        )
        if key[0] is None:
            continue
        if key in seen:
            yield f"{assignment.where}: repeats {seen[key].where} (same role, principal and scope)"
        else:
            seen[key] = assignment


@rule(
    "platform",
    source="Create and manage instance types (learn.microsoft.com/azure/machine-learning/how-to-manage-kubernetes-"
    "instance-types): CPU and memory requests and limits are \"Required\", \"String values that can't be zero or "
    "empty\"; GPU: \"Integer values that can be specified only in the limits section\"; name: \"String values that "
    "must be unique in a cluster\" (a Kubernetes object name).",
)
def instance_type_is_well_formed(resource: Resource) -> Iterator[str]:
    """Each instance type names CPU and memory requests and limits, non-zero, with GPUs only in its limits."""
    if resource.type != INSTANCE_TYPE:
        return
    name = resource.get("metadata.name", "")
    if known(name) and not DNS_1123_NAME.fullmatch(str(name)):
        yield f"{resource.where}: name {name!r} is not a Kubernetes object name (lower-case letters, digits, '-')"
    resources = resource.get("spec.resources", {}) or {}
    for part in ("requests", "limits"):
        for kind in ("cpu", "memory"):
            value = (resources.get(part) or {}).get(kind)
            if not quantity(value):
                yield f"{resource.where}: {part}.{kind} is {value!r}; it is required and must not be zero"
    if "nvidia.com/gpu" in (resources.get("requests") or {}):
        yield f"{resource.where}: nvidia.com/gpu may be set only in limits"
    for kind in ("cpu", "memory"):
        request, limit = (quantity((resources.get(part) or {}).get(kind)) for part in ("requests", "limits"))
        if request and limit and request > limit:
            yield f"{resource.where}: requests.{kind} is above limits.{kind}"


# "For MLflow model deployment, the resource request requires at least 2 CPU cores and 4 GB of memory. Otherwise,
# the deployment fails." (Create and manage instance types). That is the no-code deployment, which installs the
# model's packages when its container starts ("Online Endpoints dynamically installs Python packages provided
# MLflow model package during container runtime", Guidelines for deploying MLflow models); one with a scoring
# script and an environment is a custom deployment, which installs nothing at start
NO_CODE_MLFLOW_REQUESTS = {"cpu": ("2", 2.0), "memory": ("4Gi", 4 * 2**30)}


def deployment_fits_instance_type(deployment: Mapping, instance_type: Mapping, scoring_script: bool = True) -> list[str]:
    """What a Kubernetes online deployment's `resources` break against its instance type's `resources`:
    "With a valid resource section definition, the resource limits must be less than the instance type limits.
    Otherwise, deployment fails." and requests cpu and memory are required, memory at least 1 MB (Create and
    manage instance types); and, without a scoring script (an MLflow no-code deployment), the larger requests
    it needs (NO_CODE_MLFLOW_REQUESTS)."""
    problems = []
    requests, limits = deployment.get("requests") or {}, deployment.get("limits") or {}
    if not scoring_script:
        for kind, (shown, least) in NO_CODE_MLFLOW_REQUESTS.items():
            if (quantity(requests.get(kind)) or 0) < least:
                problems.append(f"requests.{kind} is {requests.get(kind)!r}; an MLflow deployment without a scoring "
                                f"script needs at least {shown}")  # fmt: skip
    for kind in ("cpu", "memory"):
        if not quantity(requests.get(kind)):
            problems.append(f"requests.{kind} is {requests.get(kind)!r}; it is required")
    if (quantity(requests.get("memory")) or 0) < 1e6:
        problems.append("requests.memory must be at least 1 MB")
    ceiling = instance_type.get("limits") or {}
    for kind in ("cpu", "memory", "nvidia.com/gpu"):
        ours, theirs = quantity(limits.get(kind)), quantity(ceiling.get(kind))
        if ours is not None and (theirs is None or ours >= theirs):
            problems.append(f"limits.{kind} {limits.get(kind)} is not less than the instance type's {ceiling.get(kind)}")
        request = quantity(requests.get(kind))
        if request is not None and theirs is not None and request > theirs:
            problems.append(f"requests.{kind} {requests.get(kind)} is above the instance type's limit {ceiling.get(kind)}")
    return problems


@rule(
    "platform",
    source="Secure an Azure Machine Learning training environment with virtual networks (learn.microsoft.com/"
    "azure/machine-learning/how-to-secure-training-vnet): \"You must use a workspace private endpoint for the "
    "compute resource to communicate with Azure Machine Learning services from the VNet.\"",
    whole_stack=True,
)
def compute_in_a_vnet_reaches_the_workspace_privately(stack: Stack) -> Iterator[str]:
    """A training cluster or workstation in a subnet has a workspace private endpoint to talk to."""
    workspace_endpoints = [endpoint for endpoint in stack.of_type(PRIVATE_ENDPOINT) if "amlworkspace" in _groups(endpoint)]
    for resource in stack.resources:
        compute = training_compute(resource)
        if compute is None or not compute.get("subnet"):
            continue
        if not workspace_endpoints:
            yield f"{resource.where}: in a subnet, but the workspace has no private endpoint (group amlworkspace)"


def _groups(endpoint: Resource) -> list[str]:
    """The private link groups of a private endpoint's known connections."""
    return [group for connection in endpoint.get("privateLinkServiceConnections", []) or [] if known(connection)
            for group in connection.get("groupIds") or []]  # fmt: skip


_PRIVATE_LINK_TARGETS = {"amlworkspace": WORKSPACE, "blob": STORAGE, "vault": KEY_VAULT, "registry": REGISTRY}


@rule(
    "platform",
    source="Secure Azure Kubernetes Service inferencing environment, Limitations (learn.microsoft.com/azure/"
    "machine-learning/how-to-secure-kubernetes-inferencing-environment): \"If your AKS cluster is behind of a VNet, "
    "your workspace and its associated resources (storage, key vault, Azure Container Registry) must have private "
    "endpoints or service endpoints in the same or peered VNet as AKS cluster's VNet.\"",
    whole_stack=True,
)
def aks_in_a_vnet_has_private_endpoints(stack: Stack) -> Iterator[str]:
    """An AKS cluster in a VNet reaches the workspace, storage, Key Vault and registry through private endpoints."""
    clusters = [cluster for cluster in stack.of_type(AKS) if any(
        pool.get("vnetSubnetID") for pool in cluster.get("agentPoolProfiles", []) or [] if known(pool))]  # fmt: skip
    if not clusters:
        return
    present = {group for endpoint in stack.of_type(PRIVATE_ENDPOINT) for group in _groups(endpoint)}
    for cluster in clusters:
        for group, target in _PRIVATE_LINK_TARGETS.items():
            if stack.of_type(target) and group not in present:
                yield f"{cluster.where}: in a VNet, but there is no private endpoint for {target.rsplit(':', 1)[-1]} (group {group})"


@rule(
    "platform",
    source="Azure CNI networking concepts (learn.microsoft.com/azure/aks/concepts-network-cni-overview): \"The "
    "cluster identity used by the AKS cluster must have at least Network Contributor permissions on the subnet "
    "within your virtual network.\"",
    whole_stack=True,
)
def aks_identity_may_join_its_subnet(stack: Stack) -> Iterator[str]:
    """An AKS cluster in a subnet runs as an identity that holds Network Contributor on that subnet first."""
    for cluster in stack.of_type(AKS):
        in_subnet = [pool for pool in cluster.get("agentPoolProfiles", []) or [] if known(pool) and pool.get("vnetSubnetID")]
        if not in_subnet:
            continue
        identities = stack.sources(cluster, "identity", USER_ASSIGNED_IDENTITY)
        if cluster.get("identity.type") != "UserAssigned" or not identities:
            yield f"{cluster.where}: in a subnet, so its identity must exist first to hold Network Contributor there (a user-assigned identity)"
            continue
        granted = [
            assignment
            for assignment in stack.of_type(ROLE_ASSIGNMENT)
            if _role(assignment) == roles.NETWORK_CONTRIBUTOR
            and any(identity.urn in assignment.depends_on("principalId") for identity in identities)
            and stack.sources(assignment, "scope", VIRTUAL_NETWORK)
        ]
        if not granted:
            yield f"{cluster.where}: its identity holds no Network Contributor on its subnet"


@rule(
    "platform",
    source="Secure an Azure Machine Learning workspace with virtual networks, Prerequisites: \"Your Azure Container "
    "Registry must be Premium version.\"; Enable zone redundancy in Azure Container Registry: \"Zone redundancy is "
    "a feature of the Premium container registry service tier.\"",
)
def registry_features_need_premium(resource: Resource) -> Iterator[str]:
    """Only a Premium registry takes network rules and zone redundancy."""
    if resource.type != REGISTRY or resource.get("sku.name") == "Premium":
        return
    if resource.get("zoneRedundancy") == "Enabled":
        yield f"{resource.where}: zoneRedundancy needs the Premium SKU, not {resource.get('sku.name')}"
    if resource.get("networkRuleSet"):
        yield f"{resource.where}: networkRuleSet needs the Premium SKU, not {resource.get('sku.name')}"


@rule(
    "platform",
    source="Azure Blob Storage lifecycle management policy structure (learn.microsoft.com/azure/storage/blobs/"
    "lifecycle-management-policy-structure): \"A rule name can include up to 256 alphanumeric characters. Rule name "
    "is case-sensitive. It must be unique within a policy.\" and \"You can define up to 100 rules in a policy.\"",
)
def lifecycle_rules_azure_accepts(resource: Resource) -> Iterator[str]:
    """A lifecycle management policy's rules have unique names of letters and digits, at most 100 of them."""
    if resource.type != MANAGEMENT_POLICY:
        return
    found = [r for r in resource.get("policy.rules", []) or [] if known(r)]
    names = [r.get("name") for r in found if known(r.get("name"))]
    for name in names:
        if not LIFECYCLE_RULE_NAME.fullmatch(str(name)):
            yield f"{resource.where}: rule name {name!r} is not 1-256 letters and digits"
    for name in sorted({name for name in names if names.count(name) > 1}):
        yield f"{resource.where}: rule name {name!r} is used {names.count(name)} times"
    if len(found) > LIFECYCLE_MAX_RULES:
        yield f"{resource.where}: {len(found)} rules; a policy holds {LIFECYCLE_MAX_RULES}"


@rule(
    "platform",
    source="Configure a private endpoint for an Azure Machine Learning workspace, Prerequisites: \"Do not use the "
    "172.17.0.0/16 IP address range for your VNet. This is the default subnet range used by the Docker bridge "
    "network, and will result in errors if used for your VNet.\"",
)
def vnet_avoids_the_docker_bridge(resource: Resource) -> Iterator[str]:
    """The VNet and its subnets stay out of 172.17.0.0/16."""
    if resource.type != VIRTUAL_NETWORK:
        return
    prefixes = list(resource.get("addressSpace.addressPrefixes", []) or [])
    prefixes += [subnet.get("addressPrefix") for subnet in resource.get("subnets", []) or [] if known(subnet)]
    bridge = ipaddress.ip_network("172.17.0.0/16")
    for prefix in prefixes:
        if known(prefix) and prefix and ipaddress.ip_network(prefix, strict=False).overlaps(bridge):
            yield f"{resource.where}: {prefix} overlaps the Docker bridge network {bridge}"


@rule(
    "platform",
    source="Secure access to the API server using authorized IP address ranges in AKS (learn.microsoft.com/azure/"
    "aks/api-server-authorized-ip-ranges): \"The API server authorized IP ranges feature isn't supported on private "
    "clusters.\"",
)
def authorized_ranges_not_on_a_private_cluster(resource: Resource) -> Iterator[str]:
    """API server authorized IP ranges and a private cluster exclude each other."""
    if resource.type == AKS and resource.get("apiServerAccessProfile.enablePrivateCluster") is True:
        if resource.get("apiServerAccessProfile.authorizedIPRanges"):
            yield f"{resource.where}: authorizedIPRanges set on a private cluster"


@rule(
    "platform",
    source="What is an Azure Machine Learning workspace? (learn.microsoft.com/azure/machine-learning/concept-"
    "workspace): \"You can't use an existing Azure Storage account if it is: An account of type BlobStorage; A "
    "premium account (Premium_LRS and Premium_GRS); An account with hierarchical namespace\"",
    whole_stack=True,
)
def workspace_storage_is_supported(stack: Stack) -> Iterator[str]:
    """The workspace's default storage is general-purpose v2, standard, without a hierarchical namespace."""
    for workspace in stack.of_type(WORKSPACE):
        for account in stack.sources(workspace, "storageAccount", STORAGE):
            sku, kind = account.get("sku.name", ""), account.get("kind")
            if known(sku) and str(sku).startswith("Premium"):
                yield f"{account.where}: {sku} is premium, which a workspace cannot use"
            if kind == "BlobStorage":
                yield f"{account.where}: kind BlobStorage, which a workspace cannot use"
            if account.get("isHnsEnabled") is True:
                yield f"{account.where}: hierarchical namespace is on, which a workspace cannot use"


@rule(
    "platform",
    source="Deploy Azure Machine Learning extension, configuration settings: sslCname \"Required if "
    "allowInsecureConnections=False\"; az k8s-extension (AzureMLKubernetes.py): \"To enable HTTPs endpoint, either "
    "provide sslCertPemFile and sslKeyPemFile to --configuration-protected-settings, or provide sslSecret\"",
)
def tls_router_has_a_name_and_a_certificate(resource: Resource) -> Iterator[str]:
    """A TLS-only inference router names its host and has its certificate and key."""
    if resource.type != EXTENSION or resource.get("extensionType") != AZUREML_EXTENSION:
        return
    settings = resource.get("configurationSettings", {}) or {}
    if str(settings.get("allowInsecureConnections", "")).lower() != "false":
        return
    if not settings.get("sslCname"):
        yield f"{resource.where}: allowInsecureConnections is False without sslCname"
    protected = resource.get("configurationProtectedSettings")
    if not settings.get("scoringFe.sslSecret") and not protected:
        yield f"{resource.where}: allowInsecureConnections is False without scoringFe.sslCert/sslKey (or sslSecret)"


@rule(
    "platform",
    source="Deploy Azure Machine Learning extension, configuration settings: inferenceRouterHA \"Set to False if "
    "your cluster has fewer than three worker nodes\"",
    whole_stack=True,
)
def highly_available_router_has_three_nodes(stack: Stack) -> Iterator[str]:
    """A highly available inference router runs on a cluster of at least three nodes."""
    for cluster in stack.of_type(AKS):
        for extension in _extensions_of(stack, cluster):
            if str(extension.get("configurationSettings.inferenceRouterHA", "")).lower() != "true":
                continue
            pools = [pool for pool in cluster.get("agentPoolProfiles", []) or [] if known(pool)]
            nodes = sum(pool.get("minCount") or pool.get("count") or 0 for pool in pools)
            if nodes < 3:
                yield f"{extension.where}: inferenceRouterHA is True, but {cluster.where} may run {nodes} node(s)"


@rule(
    "platform",
    source="Key Vault REST API, VaultProperties.enablePurgeProtection: \"Enabling this functionality is "
    "irreversible - that is, the property does not accept false as its value.\"",
)
def purge_protection_is_never_false(resource: Resource) -> Iterator[str]:
    """A Key Vault's purge protection is true or unset, never false."""
    if resource.type == KEY_VAULT and resource.get("properties.enablePurgeProtection") is False:
        yield f"{resource.where}: enablePurgeProtection is false, which Azure does not accept (leave it unset)"


@rule(
    "platform",
    source="az k8s-extension (AzureMLKubernetes.py): \"either enable Machine Learning training or inference by "
    "specifying '--configuration-settings enableTraining=true' or '--configuration-settings enableInference=true'\"",
)
def extension_enables_a_workload(resource: Resource) -> Iterator[str]:
    """The Azure ML extension enables training, inference or both."""
    if resource.type == EXTENSION and resource.get("extensionType") == AZUREML_EXTENSION:
        settings = resource.get("configurationSettings", {}) or {}
        if not any(str(settings.get(key, "")).lower() == "true" for key in ("enableTraining", "enableInference")):
            yield f"{resource.where}: neither enableTraining nor enableInference is True"


_CREATE_COMPUTE_INSTANCE = (
    "Create an Azure Machine Learning compute instance (learn.microsoft.com/azure/machine-learning/how-to-create-compute-"
    "instance)"
)


@rule(
    "platform",
    source=f"{_CREATE_COMPUTE_INSTANCE}, Configure idle shutdown: \"compute instance must be inactive for a minimum of 15 "
    "mins and a maximum of three days\"; REST API, ComputeInstanceProperties.idleTimeBeforeShutdown: \"Time is defined "
    "in ISO8601 format. Minimum is 15 min, maximum is 3 days.\"",
)
def idle_shutdown_azure_accepts(resource: Resource) -> Iterator[str]:
    """A workstation's idle shutdown is an ISO 8601 duration from 15 minutes to 3 days."""
    instance = compute_instance(resource)
    idle = instance.get("idleTimeBeforeShutdown") if instance else None
    if idle and known(idle) and (problem := schedules.idle_shutdown_problem(idle)):
        yield f"{resource.where}: idleTimeBeforeShutdown {idle!r}: {problem}"


@rule(
    "platform",
    source=f"{_CREATE_COMPUTE_INSTANCE}, Schedule automatic start and stop: \"You can create a total of four schedules "
    "per compute instance.\", and the cron syntax it gives (\"The value column can have a * or a list of elements "
    "separated by commas\"); REST API, Cron: \"The expression should follow NCronTab format\", \"TimeZone should follow "
    "Windows time zone format\" (azure-ai-ml's TimeZone: \"Time zones that a job or compute instance schedule accepts.\")",
)
def schedules_azure_accepts(resource: Resource) -> Iterator[str]:
    """A workstation has at most four start/stop schedules, each a five-field cron in a Windows time zone."""
    instance = compute_instance(resource)
    found = instance.get("schedules") if instance else None
    triggers = found.get("computeStartStop") if found and known(found) else None
    if not triggers or not known(triggers):
        return
    if len(triggers) > schedules.MAX_SCHEDULES:
        yield f"{resource.where}: {len(triggers)} schedules; Azure allows at most {schedules.MAX_SCHEDULES} per compute instance"
    for trigger in triggers:
        cron = trigger.get("cron") if known(trigger) and trigger.get("triggerType") == "Cron" else None
        if not cron or not known(cron):
            continue
        expression, zone = cron.get("expression"), cron.get("timeZone", "UTC")
        if known(expression) and (problem := schedules.cron_problem(expression)):
            yield f"{resource.where}: cron {expression!r}: {problem}"
        if known(zone) and (problem := schedules.time_zone_problem(zone)):
            yield f"{resource.where}: timeZone {zone!r}: {problem}"


@rule(
    "platform",
    source=f"{_CREATE_COMPUTE_INSTANCE}, Configure idle shutdown: \"If the compute instance is also configured with a "
    "managed identity, the compute instance won't shut down due to inactivity unless the managed identity has "
    "contributor access to the Azure Machine Learning workspace.\" Contributor is a privileged role here "
    "(least-privilege-roles), so a workstation that shuts down when idle has no managed identity.",
)
def idle_shutdown_without_a_managed_identity(resource: Resource) -> Iterator[str]:
    """A workstation with idle shutdown has no managed identity (idle shutdown would need it to hold Contributor)."""
    instance = compute_instance(resource)
    identity = resource.get("identity.type") if instance is not None else None
    if instance and instance.get("idleTimeBeforeShutdown") and identity not in (None, "None"):
        yield (f"{resource.where}: identity {identity} with idle shutdown: Azure shuts it down only if that identity holds "
               "Contributor on the workspace, a privileged role; drop the identity")  # fmt: skip


@rule(
    "platform",
    source=f"{_CREATE_COMPUTE_INSTANCE}, Create: \"Name is required and must be between 3 to 24 characters long.\", "
    "\"Valid characters are upper and lower case letters, digits, and the - character.\", \"Name must start with a "
    "letter\", \"If - character is used, then it needs to be followed by at least one letter later in the name\"",
)
def compute_instance_name_azure_accepts(resource: Resource) -> Iterator[str]:
    """A workstation's name is 3-24 letters, digits and hyphens, starting with a letter, each hyphen followed by a letter."""
    name = resource.get("computeName") if compute_instance(resource) is not None else None
    if name and known(name) and (problem := COMPUTE_INSTANCE_NAME.check(name)):
        yield f"{resource.where}: {problem}"


@rule(
    "platform",
    source=f"{_CREATE_COMPUTE_INSTANCE}, Prerequisites: \"In the storage account, the \"Allow storage account key "
    "access\" option must be enabled for compute instance creation to be successful.\"",
    whole_stack=True,
)
def compute_instances_need_storage_key_access(stack: Stack) -> Iterator[str]:
    """A workspace with workstations keeps shared key access on its storage."""
    for workspace in stack.of_type(WORKSPACE):
        instances = [
            compute for compute in stack.of_type(COMPUTE)
            if compute_instance(compute) is not None and workspace.urn in compute.depends_on("workspaceName")
        ]  # fmt: skip
        if not instances:
            continue
        for account in stack.sources(workspace, "storageAccount", STORAGE):
            if account.get("allowSharedKeyAccess") is False:
                yield f"{account.where}: allowSharedKeyAccess is false, but {instances[0].where} needs it to be created"


def _private_endpoints(stack: Stack) -> list[tuple[Resource, str, str, str]]:
    """(endpoint, group, target resource ID, subnet ID) for every private link connection with known values."""
    found = []
    for endpoint in stack.of_type(PRIVATE_ENDPOINT):
        subnet = endpoint.get("subnet.id")
        for connection in endpoint.get("privateLinkServiceConnections", []) or []:
            target = connection.get("privateLinkServiceId") if known(connection) else None
            if known(subnet, target) and target:
                found += [(endpoint, group, target, subnet) for group in connection.get("groupIds") or []]
    return found


@rule(
    "platform",
    whole_stack=True,
    source="Network isolation with Azure Machine Learning registries (how-to-registry-network-isolation): \"Create a "
    "private endpoint to the registry, storage, and ACR in the **same subnet** as the private endpoint of the Azure "
    "Machine Learning workspace. If you're trying to connect to multiple registries, create private endpoint for each "
    "registry and associated storage and ACRs.\" Its storage and ACR live in the managed resource group "
    "\"azureml-rg-<name-of-your-registry>_<GUID>\"; the storage endpoint's \"Sub-resource\" is \"Blob\".",
)
def ml_registry_reached_privately_from_a_vnet(stack: Stack) -> Iterator[str]:
    """An isolated stack reaches each ML registry, its storage and its ACR through private endpoints beside the workspace's."""
    if not stack.of_type(VIRTUAL_NETWORK):
        return
    registries = sorted({scope for assignment in stack.of_type(ROLE_ASSIGNMENT)
                         if known(scope := assignment.get("scope", "")) and ML_REGISTRY_SCOPE.fullmatch(scope)})  # fmt: skip
    endpoints = _private_endpoints(stack)
    workspace_subnets = {subnet for _, group, _, subnet in endpoints if group == "amlworkspace"}
    for registry in registries:
        name = registry.rsplit("/", 1)[-1]
        managed = re.compile(rf"/subscriptions/[^/]+/resourceGroups/azureml-rg-{re.escape(name)}_[^/]+/providers/(?P<type>[^/]+/[^/]+)/[^/]+", re.I)
        needed = {
            "amlregistry": ("the registry", lambda target: target.lower() == registry.lower()),
            "blob": ("its storage", lambda target: (m := managed.fullmatch(target)) is not None and m["type"].lower() == "microsoft.storage/storageaccounts"),
            "registry": ("its ACR", lambda target: (m := managed.fullmatch(target)) is not None and m["type"].lower() == "microsoft.containerregistry/registries"),
        }  # fmt: skip
        for group, (what, matches) in needed.items():
            found = [(endpoint, subnet) for endpoint, g, target, subnet in endpoints if g == group and matches(target)]
            if not found:
                yield f"ML registry {name!r}: this stack has a VNet but no private endpoint to {what} (group {group})"
            for endpoint, subnet in found:
                if workspace_subnets and subnet not in workspace_subnets:
                    yield f"{endpoint.where}: to {what} of ML registry {name!r}, in another subnet than the workspace's private endpoint"


@rule(
    "platform",
    source="Network isolation with Azure Machine Learning registries: \"Clients need to be connected to the VNet to "
    "which the registry is connected with a private endpoint.\" dev's stage and CI run on GitHub-hosted runners, "
    "outside any VNet, and they publish: the registry keeps public network access, with Entra ID auth.",
)
def ml_registry_reachable_from_ci(resource: Resource) -> Iterator[str]:
    """The ML registry stays reachable from dev and from CI: public network access, Entra ID auth."""
    if resource.type == ML_REGISTRY and resource.get("publicNetworkAccess") not in ("Enabled", UNKNOWN_VALUE):
        yield f"{resource.where}: publicNetworkAccess is {resource.get('publicNetworkAccess')!r}; dev and CI publish from outside any VNet"


@rule(
    "platform",
    source="Secure an Azure Machine Learning workspace with virtual networks, Prerequisites: \"Your Azure Container "
    "Registry must be Premium version.\" An isolated environment gives the ML registry's system-created ACR a private "
    "endpoint (how-to-registry-network-isolation), and its example creates it \"acrAccountSku\": \"Premium\".",
)
def ml_registry_acr_is_premium(resource: Resource) -> Iterator[str]:
    """The ML registry's system-created container registry is Premium in every region, so prod can reach it privately."""
    if resource.type != ML_REGISTRY:
        return
    for region in resource.get("regionDetails", []) or []:
        for details in (region.get("acrDetails") or [{}]) if known(region) else ():
            sku = details.get("systemCreatedAcrAccount", {}).get("acrAccountSku") if known(details) else UNKNOWN_VALUE
            if sku not in ("Premium", UNKNOWN_VALUE):
                yield f"{resource.where}: region {region.get('location')!r} has an ACR of SKU {sku!r}; allowed: Premium"


@rule(
    "platform",
    whole_stack=True,
    source="Network isolation in batch endpoints (learn.microsoft.com/azure/machine-learning/how-to-secure-batch-"
    "endpoint): \"Ensure blob, file, queue, and table private endpoints are configured for the storage accounts ... "
    "Batch deployments require all the four to properly work.\"",
)
def storage_reached_privately_for_batch(stack: Stack) -> Iterator[str]:
    """In a stack with a VNet, the workspace's storage has private endpoints for blob, file, queue and table."""
    if not stack.of_type(VIRTUAL_NETWORK):
        return
    storage = {resource.urn for resource in stack.of_type(STORAGE)}
    present = set()
    for endpoint in stack.of_type(PRIVATE_ENDPOINT):
        targets = set(endpoint.depends_on("privateLinkServiceConnections"))
        if targets & storage:
            present |= set(_groups(endpoint))
    for group in ("blob", "file", "queue", "table"):
        if group not in present:
            yield f"the workspace's storage has no private endpoint for {group}: batch deployments need all four"


@rule(
    "platform",
    source="Azure's secure workspace template (azure-quickstart-templates, quickstarts/microsoft.machinelearningservices/"
    "machine-learning-end-to-end-secure/modules/vnet.bicep): its training subnet, for compute without a public IP, sets "
    "\"privateLinkServiceNetworkPolicies: 'Disabled'\"",
)
def training_subnet_allows_private_link_services(resource: Resource) -> Iterator[str]:
    """The training subnet, where compute without a public IP runs, has private link service network policies off."""
    if resource.type != VIRTUAL_NETWORK:
        return
    for subnet in resource.get("subnets", []) or []:
        if known(subnet) and subnet.get("name") == Names.TRAINING_SUBNET and subnet.get("privateLinkServiceNetworkPolicies") != "Disabled":
            yield (f"{resource.where}: subnet {Names.TRAINING_SUBNET} has privateLinkServiceNetworkPolicies "
                   f"{subnet.get('privateLinkServiceNetworkPolicies')!r}; allowed: Disabled")  # fmt: skip
