"""A stack's configuration as frozen dataclasses, validated before any resource is declared.

`parse` is pure (a dict of config keys to Pulumi's raw string values in, `Settings` out) so that
every bad-input case is testable without a Pulumi runtime; `load` feeds it the running stack's
config. All problems are reported at once, one line per bad value, each naming its config key.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from infra import schedules
from infra.naming import COMPUTE_INSTANCE as COMPUTE_INSTANCE_RULE
from infra.naming import WORKSTATION_USER_LENGTH, Names

PROJECT = "azureml-platform"
# the ML registry's own Pulumi project (ml-registry/Pulumi.yaml), and the one environment that may publish to it
ML_REGISTRY_PROJECT = "azureml-platform-ml-registry"
PUBLISHING_ENVIRONMENT = "dev"
# a fully qualified stack name, as a StackReference takes it (the DIY backends' organization is "organization")
STACK_REFERENCE = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
ENVIRONMENTS = ("dev", "prod")
LOCATION_KEY = "azure-native:location"

# N-series VM sizes are Azure's GPU sizes (NC, ND, NG, NV)
GPU_VM_SIZE = re.compile(r"Standard_N[CDGV]\w*", re.IGNORECASE)
VM_SIZE = re.compile(r"Standard_\w+")
# Kubernetes resource quantities: "500m", "2", "1.5", "4Gi", "512Mi"
QUANTITY = re.compile(r"\d+(\.\d+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?")
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
GITHUB_REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
AZURE_LOCATION = re.compile(r"[a-z]+[a-z0-9]*")

PUBLIC_NETWORK_ACCESS = ("Enabled", "Disabled")
# Azure ML managed network modes. Only Disabled works with the platform's Kubernetes compute: "Kubernetes
# and attached VMs aren't supported in an Azure Machine Learning managed virtual network." (Workspace
# managed network isolation, Limitations). Isolation comes from the stack's own VNet instead (network.*).
ISOLATION_MODES = ("Disabled",)
MANAGED_NETWORK_MODES = ("AllowInternetOutbound", "AllowOnlyApprovedOutbound")
REGISTRY_SKUS = ("Basic", "Standard", "Premium")
# the workspace's default storage: no premium and no hierarchical namespace (concept-workspace: "You can't
# use an existing Azure Storage account if it is ... A premium account"). Geo-redundant kinds are allowed
# but Azure ML does not fail its default storage over (how-to-high-availability-machine-learning).
STORAGE_SKUS = ("Standard_LRS", "Standard_ZRS", "Standard_GRS", "Standard_RAGRS", "Standard_GZRS", "Standard_RAGZRS")
# "Do not use the 172.17.0.0/16 IP address range for your VNet. This is the default subnet range used by the
# Docker bridge network" (Configure a private endpoint for an Azure Machine Learning workspace, Prerequisites)
DOCKER_BRIDGE = ipaddress.ip_network("172.17.0.0/16")
# AKS's own address spaces (Azure CNI overlay): pods and services get addresses outside the VNet, which
# must not overlap them
AKS_POD_CIDR = ipaddress.ip_network("10.244.0.0/16")
AKS_SERVICE_CIDR = ipaddress.ip_network("10.245.0.0/16")
AKS_DNS_SERVICE_IP = "10.245.0.10"
# Azure keeps the first four addresses and the last one of every subnet
SUBNET_RESERVED_ADDRESSES = 5
# "The upper limit for the number of IP ranges you can specify is 200." (AKS API server authorized IP ranges)
AKS_AUTHORIZED_RANGES_LIMIT = 200
AKS_TIERS = ("Free", "Standard")
# NodePort is left out: the az CLI's k8s-extension also sets scoringFe.serviceType.nodePort for it (azure-cli-extensions,
# k8s-extension's AzureMLKubernetes partner code), which infra/inference.py does not send
ROUTER_SERVICE_TYPES = ("LoadBalancer", "ClusterIP")
CLUSTER_PURPOSES = ("DevTest", "FastProd")
# the compute namespace must exist before attach: `default`, or the extension's own `azureml`
COMPUTE_NAMESPACES = ("default", "azureml")
# never committed: each operator sets them with `pulumi config set --secret` (docs/platform-engineers.md)
SECRET_KEYS = (f"{PROJECT}:inferenceTlsCertificate", f"{PROJECT}:inferenceTlsKey")
PEM = re.compile(r"\s*-----BEGIN [A-Z ]+-----.+-----END [A-Z ]+-----\s*", re.DOTALL)
# Entra object IDs (users, groups) are GUIDs
POLICY_ASSIGNMENT_KINDS = ("initiative", "definition")
# an assignment at a management group, subscription or resource group ("Azure Policy assignment structure")
POLICY_ASSIGNMENT_ID = re.compile(
    r"(/providers/Microsoft\.Management/managementGroups/[^/]+|/subscriptions/[^/]+(/resourceGroups/[^/]+)?)"
    r"/providers/Microsoft\.Authorization/policyAssignments/[^/]+",
    re.IGNORECASE,
)
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
BUILT_IN_DEFINITION_ID = re.compile(r"/providers/Microsoft\.Authorization/policyDefinitions/[0-9a-fA-F-]{36}", re.IGNORECASE)
GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
# a data scientist's name, the first part of their compute instance's name (infra/naming.py, Names.workstation)
USER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}")


def stack_tags(stack: str, project: str = PROJECT) -> dict[str, str]:
    """The tags on every resource of a stack; the delivery tools match on them too."""
    return {"project": project, "stack": stack, "managed-by": "pulumi"}


class SettingsError(ValueError):
    """Every bad config value of a stack, one line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid stack configuration:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class ClusterSettings:
    vm_size: str
    min_nodes: int
    max_nodes: int
    idle_seconds_before_scale_down: int
    low_priority: bool


@dataclass(frozen=True)
class GpuClusterSettings:
    enabled: bool
    cluster: ClusterSettings


@dataclass(frozen=True)
class WorkspaceSettings:
    public_network_access: str
    isolation_mode: str


@dataclass(frozen=True)
class NetworkSettings:
    """The stack's own VNet. `isolated` off (dev): no VNet, every service on its public endpoint with Entra
    auth. On (prod): compute without public IPs in the VNet, private endpoints for the workspace, storage,
    Key Vault and registry, and a data plane that denies the internet except `allowed_ip_ranges`."""

    isolated: bool
    address_space: str | None = None
    training_subnet: str | None = None
    aks_subnet: str | None = None
    private_endpoint_subnet: str | None = None
    # public IPv4 addresses or CIDRs of clients outside the VNet (office egress, self-hosted runners) that may
    # reach the storage data plane; CI adds its runner for the length of a job instead (docs/security.md, "Network: who reaches what")
    allowed_ip_ranges: tuple[str, ...] = ()


@dataclass(frozen=True)
class KeyVaultSettings:
    purge_protection: bool
    soft_delete_retention_days: int


@dataclass(frozen=True)
class AksSettings:
    vm_size: str
    min_nodes: int
    max_nodes: int
    tier: str
    kubernetes_version: str | None
    # who may reach the API server; empty: any address (Entra ID and Azure RBAC still authorize every call)
    authorized_ip_ranges: tuple[str, ...]
    # needs the subscription feature Microsoft.Compute/EncryptionAtHost registered (docs/platform-engineers.md)
    encryption_at_host: bool
    # Container Insights into the stack's Log Analytics workspace (billed per GB ingested)
    container_insights: bool
    # Microsoft Defender for Containers' sensor, reporting to the same workspace (its plan bills per vCore)
    defender: bool


@dataclass(frozen=True)
class InstanceTypeSettings:
    name: str
    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str


@dataclass(frozen=True)
class InferenceSettings:
    router_service_type: str
    allow_insecure_connections: bool
    high_availability: bool
    cluster_purpose: str
    namespace: str
    # the TLS host name the inference router serves; required when insecure connections are off
    ssl_cname: str | None
    # PEM text of the router's TLS certificate and key; None when insecure connections are allowed
    tls_certificate: str | None = field(repr=False)
    tls_key: str | None = field(repr=False)
    instance_type: InstanceTypeSettings


@dataclass(frozen=True)
class WorkstationUser:
    name: str  # names the compute instance (infra/naming.py, Names.workstation)
    object_id: str  # the Entra user the instance is assigned to


@dataclass(frozen=True)
class ScheduleSettings:
    """Cron triggers (NCronTab, infra/schedules.py) in one Windows time zone; at most four in all."""

    start: tuple[str, ...]
    stop: tuple[str, ...]
    time_zone: str


@dataclass(frozen=True)
class WorkstationSettings:
    """A personal compute instance per listed data scientist, all alike."""

    vm_size: str
    idle_shutdown: str  # ISO 8601, 15 minutes to 3 days
    schedule: ScheduleSettings | None
    users: tuple[WorkstationUser, ...]


@dataclass(frozen=True)
class PolicyAssignment:
    """An Azure Policy assignment of the enterprise's that judges the stack (its ID, at any scope above it)."""

    id: str
    kind: str  # "initiative": the Microsoft cloud security benchmark; "definition": one built-in definition
    definition_id: str | None = None  # kind "definition": the built-in definition it assigns


@dataclass(frozen=True)
class PolicySettings:
    """The assignments the stack declares its exemptions against (infra/conformance.py), and when they expire."""

    assignments: tuple[PolicyAssignment, ...] = ()
    exemptions_expire_on: datetime.date | None = None


@dataclass(frozen=True)
class MlRegistryLink:
    """Where an environment's stack reads the ML registry's outputs: a StackReference to its stack (ml-registry/)."""

    stack: str  # <organization>/<project>/<stack>
    environment: str

    @property
    def access(self) -> str:
        """dev publishes what it tested; every other environment only reads (infra/ml_registry.py)."""
        return "publish" if self.environment == PUBLISHING_ENVIRONMENT else "read"


@dataclass(frozen=True)
class Settings:
    project: str
    stack: str
    environment: str
    location: str
    name_prefix: str
    name_generation: int
    protect: bool
    github_repository: str
    github_environment: str
    create_client_secret: bool
    registry_sku: str
    registry_zone_redundancy: bool
    storage_sku: str
    log_retention_days: int
    log_blob_reads: bool  # the blob service's StorageRead resource logs too (infra/resource_logs.py)
    workspace: WorkspaceSettings
    network: NetworkSettings
    key_vault: KeyVaultSettings
    cpu_cluster: ClusterSettings
    gpu_cluster: GpuClusterSettings
    aks: AksSettings
    inference: InferenceSettings
    # None: the stack file has no workstations section
    workstations: WorkstationSettings | None = None
    # the Entra group of the data scientists, granted their roles once; None: each listed user is granted them
    data_scientists_group: str | None = None
    # the ML registry stack the environment promotes through; None: it has none (each environment trains its own)
    ml_registry: MlRegistryLink | None = None
    policy: PolicySettings = PolicySettings()

    @property
    def tags(self) -> dict[str, str]:
        # the environment too: rules (and the policy pack, which sees no stack config) read it from the tags
        return {**stack_tags(self.stack, self.project), "environment": self.environment}

    @property
    def entra_tags(self) -> list[str]:
        """Entra ID objects take plain strings, not key/value tags."""
        return [f"{key}:{value}" for key, value in self.tags.items()]

    @property
    def oidc_subject(self) -> str:
        return f"repo:{self.github_repository}:environment:{self.github_environment}"


_MISSING = object()


class _Reader:
    """Reads one config object (the namespace itself, or a structured value) and collects problems."""

    def __init__(self, values: Mapping[str, Any], key_of: Callable[[str], str], problems: list[str]):
        self.values = values
        self.key_of = key_of  # field -> the full config key users write, e.g. azureml-platform:cpuCluster.maxNodes
        self.problems = problems
        self.read: set[str] = set()

    def _raw(self, field: str, default: Any) -> Any:
        """The value, or _MISSING when it is absent (reported here when it has no default)."""
        self.read.add(field)
        value = self.values.get(field)
        if value is None:
            if default is _MISSING:
                self.problems.append(f"{self.key_of(field)} is required")
            return _MISSING
        return value

    def text(self, field: str, default: Any = _MISSING, choices=None, pattern=None, means: str = "") -> Any:
        value = self._raw(field, default)
        if value is _MISSING:
            return None if default is _MISSING else default
        value = value if isinstance(value, str) else json.dumps(value, default=str)  # YAML dates too
        if choices and value not in choices:
            self.problems.append(f"{self.key_of(field)} is {value!r}; allowed: {', '.join(choices)}")
        elif pattern and not pattern.fullmatch(value):
            self.problems.append(f"{self.key_of(field)} is {value!r}; expected {means}")
        return value

    def whole(self, field: str, default: Any = _MISSING, minimum: int = 0, maximum: int | None = None) -> Any:
        value = self._raw(field, default)
        if value is _MISSING:
            return None if default is _MISSING else default
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
            self.problems.append(f"{self.key_of(field)} is {value!r}; expected a whole number")
            return None
        value = int(value)
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"{minimum}-{maximum}" if maximum is not None else f"{minimum} or more"
            self.problems.append(f"{self.key_of(field)} is {value}; allowed: {bound}")
        return value

    def flag(self, field: str, default: Any = _MISSING) -> Any:
        value = self._raw(field, default)
        if value is _MISSING:
            return None if default is _MISSING else default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        self.problems.append(f"{self.key_of(field)} is {value!r}; allowed: true, false")
        return None

    def ranges(self, field: str, public_only: bool = False) -> tuple[str, ...]:
        """A list of IPv4 addresses or CIDRs (default: none)."""
        value = self._raw(field, ())
        if value is _MISSING or value == ():
            return ()
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                value = [value]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.problems.append(f"{self.key_of(field)} is {value!r}; expected a list of IPv4 addresses or CIDRs")
            return ()
        for item in value:
            try:
                network = ipaddress.IPv4Network(item, strict=True)
            except ValueError:
                self.problems.append(f"{self.key_of(field)} has {item!r}; expected an IPv4 address or CIDR such as 203.0.113.0/24")
                continue
            if public_only and network.prefixlen == 31:
                # "Small address ranges using /31 or /32 prefix sizes are not supported" (storage network rules);
                # a /32 is written as the single address it is
                self.problems.append(f"{self.key_of(field)} has {item!r}; storage firewall rules take no /31: list both addresses")
            elif public_only and not network.is_global:
                self.problems.append(
                    f"{self.key_of(field)} has {item!r}, a private range; allowed: public addresses only "
                    "(clients inside the VNet use the private endpoints)"
                )
        return tuple(value)

    def cidr(self, field: str) -> ipaddress.IPv4Network | None:
        value = self.text(field)
        if value is None:
            return None
        try:
            return ipaddress.IPv4Network(value, strict=True)
        except ValueError:
            self.problems.append(f"{self.key_of(field)} is {value!r}; expected an IPv4 CIDR such as 10.60.0.0/16")
            return None

    def secret(self, field: str) -> Any:
        """Like text, but a bad value is never echoed back."""
        value = self._raw(field, None)
        if value is _MISSING:
            return None
        if not isinstance(value, str) or not PEM.fullmatch(value):
            self.problems.append(f"{self.key_of(field)} is not PEM text (-----BEGIN ...-----)")
        return value

    def items(self, field: str) -> list[tuple[int, _Reader]]:
        """A list of objects (default: none), each read by its own reader: `field[0].name`..."""
        value = self._raw(field, ())
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        if value is _MISSING or value == ():
            return []
        if not isinstance(value, list):
            self.problems.append(f"{self.key_of(field)} is {value!r}; expected a list (a YAML sequence)")
            return []
        found = []
        for index, item in enumerate(value):
            prefix = f"{self.key_of(field)}[{index}]"
            if not isinstance(item, dict):
                self.problems.append(f"{prefix} is {item!r}; expected an object (a YAML mapping)")
                continue
            found.append((index, _Reader(item, lambda sub, prefix=prefix: f"{prefix}.{sub}", self.problems)))
        return found

    def texts(self, field: str) -> tuple[str, ...]:
        """One string or a list of them (default: none)."""
        value = self._raw(field, ())
        if value is _MISSING or value == ():
            return ()
        if isinstance(value, str) and value.startswith("["):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.problems.append(f"{self.key_of(field)} is {value!r}; expected a string or a list of strings")
            return ()
        return tuple(value)

    def has(self, field: str) -> bool:
        """Whether an optional field is present (marking it read either way)."""
        self.read.add(field)
        return self.values.get(field) is not None

    def section(self, field: str) -> _Reader:
        value = self._raw(field, _MISSING)
        if isinstance(value, str):  # Pulumi hands structured values over as JSON text
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        if value is not _MISSING and not isinstance(value, dict):
            self.problems.append(f"{self.key_of(field)} is {value!r}; expected an object (a YAML mapping)")
        prefix = self.key_of(field)
        if not isinstance(value, dict):  # already reported once; its fields would only repeat it
            return _Reader({}, lambda sub: f"{prefix}.{sub}", [])
        return _Reader(value, lambda sub: f"{prefix}.{sub}", self.problems)

    def unknown(self) -> None:
        for name in sorted(set(self.values) - self.read):
            self.problems.append(
                f"{self.key_of(name)} is not a known setting; known: {', '.join(sorted(self.read))}"
            )


def _cluster(reader: _Reader, gpu: bool) -> ClusterSettings:
    vm_size = reader.text("vmSize", pattern=VM_SIZE, means="an Azure VM size such as Standard_DS3_v2")
    if gpu and vm_size and VM_SIZE.fullmatch(vm_size) and not GPU_VM_SIZE.fullmatch(vm_size):
        reader.problems.append(
            f"{reader.key_of('vmSize')} is {vm_size!r}, not a GPU size; allowed: an N-series size "
            "(Standard_NC*, Standard_ND*, Standard_NG*, Standard_NV*)"
        )
    cluster = ClusterSettings(
        vm_size=vm_size,
        min_nodes=reader.whole("minNodes", default=0),
        max_nodes=reader.whole("maxNodes", minimum=1),
        idle_seconds_before_scale_down=reader.whole("idleSecondsBeforeScaleDown", default=900, minimum=60),
        low_priority=reader.flag("lowPriority", default=False),
    )
    _check_node_range(reader, cluster.min_nodes, cluster.max_nodes)
    return cluster


def _check_node_range(reader: _Reader, min_nodes: Any, max_nodes: Any) -> None:
    if isinstance(min_nodes, int) and isinstance(max_nodes, int) and min_nodes > max_nodes:
        reader.problems.append(
            f"{reader.key_of('minNodes')} ({min_nodes}) is greater than {reader.key_of('maxNodes')} ({max_nodes}); "
            "allowed: minNodes <= maxNodes"
        )


def _network(reader: _Reader, nodes: dict[str, int]) -> NetworkSettings:
    """`nodes`: subnet field -> the most nodes it must hold at once (one address per node)."""
    isolated = reader.flag("isolated")
    if not isolated:
        # the address plan of a switched-off network may stay as a template, like a switched-off GPU cluster
        reader.read.update(reader.values)
        return NetworkSettings(isolated=bool(isolated))
    space = reader.cidr("addressSpace")
    subnets = {field: reader.cidr(field) for field in ("trainingSubnet", "aksSubnet", "privateEndpointSubnet")}
    reserved = {DOCKER_BRIDGE: "the Docker bridge network Azure ML compute uses", AKS_POD_CIDR: "AKS's pod range",
                AKS_SERVICE_CIDR: "AKS's service range"}
    for field, subnet in [("addressSpace", space), *subnets.items()]:
        for taken, what in reserved.items():
            if subnet is not None and subnet.overlaps(taken):
                reader.problems.append(f"{reader.key_of(field)} is {subnet}, which overlaps {taken}, {what}; allowed: any other range")
    known = {field: subnet for field, subnet in subnets.items() if subnet is not None}
    for field, subnet in known.items():
        if space is not None and not subnet.subnet_of(space):
            reader.problems.append(f"{reader.key_of(field)} ({subnet}) is outside {reader.key_of('addressSpace')} ({space})")
        needed = nodes.get(field, 0) + SUBNET_RESERVED_ADDRESSES
        if subnet.num_addresses < needed:
            reader.problems.append(
                f"{reader.key_of(field)} ({subnet}) has {subnet.num_addresses} addresses; it needs at least {needed} "
                f"(one per node at the clusters' maximum, plus {SUBNET_RESERVED_ADDRESSES} Azure reserves)"
            )
    fields = sorted(known)
    for i, first in enumerate(fields):
        for second in fields[i + 1:]:
            if known[first].overlaps(known[second]):
                reader.problems.append(f"{reader.key_of(first)} ({known[first]}) overlaps {reader.key_of(second)} ({known[second]})")
    return NetworkSettings(
        isolated=True,
        address_space=str(space) if space else None,
        training_subnet=str(subnets["trainingSubnet"]) if subnets["trainingSubnet"] else None,
        aks_subnet=str(subnets["aksSubnet"]) if subnets["aksSubnet"] else None,
        private_endpoint_subnet=str(subnets["privateEndpointSubnet"]) if subnets["privateEndpointSubnet"] else None,
        allowed_ip_ranges=reader.ranges("allowedIpRanges", public_only=True),
    )


def _schedule(reader: _Reader) -> ScheduleSettings:
    crons = {action: reader.texts(action) for action in ("start", "stop")}
    for action, expressions in crons.items():
        for index, expression in enumerate(expressions):
            if problem := schedules.cron_problem(expression):
                where = reader.key_of(action) + (f"[{index}]" if len(expressions) > 1 else "")
                reader.problems.append(f"{where} is {expression!r}: {problem}")
    count = len(crons["start"]) + len(crons["stop"])
    if count == 0:
        reader.problems.append(
            f"{reader.key_of('start')} and {reader.key_of('stop')} are both empty; set one, or remove the schedule"
        )
    elif count > schedules.MAX_SCHEDULES:
        reader.problems.append(
            f"{reader.key_of('start')} and {reader.key_of('stop')} make {count} schedules; Azure allows at most "
            f"{schedules.MAX_SCHEDULES} per compute instance (\"You can create a total of four schedules per compute instance.\")"
        )
    time_zone = reader.text("timeZone", default="UTC")
    if (problem := schedules.time_zone_problem(time_zone)) is not None:
        reader.problems.append(f"{reader.key_of('timeZone')} is {time_zone!r}: {problem}")
    reader.unknown()
    return ScheduleSettings(start=crons["start"], stop=crons["stop"], time_zone=time_zone)


def _workstations(reader: _Reader, gpu_enabled: Any, names: Names) -> WorkstationSettings:
    vm_size = reader.text("vmSize", pattern=VM_SIZE, means="an Azure VM size such as Standard_DS3_v2")
    if gpu_enabled is False and vm_size and GPU_VM_SIZE.fullmatch(vm_size):
        # compute instances draw on the same per-family quota as the clusters ("The dedicated cores per region per VM
        # family quota ... is unified and shared with Azure Machine Learning training compute cluster quota")
        reader.problems.append(
            f"{reader.key_of('vmSize')} is {vm_size!r}, a GPU size, but {PROJECT}:gpuCluster.enabled is false in this "
            "stack (GPU quota is often zero); allowed: a size without GPUs such as Standard_DS3_v2, or gpuCluster.enabled true"
        )
    idle_shutdown = reader.text("idleShutdown")
    if idle_shutdown is not None and (problem := schedules.idle_shutdown_problem(idle_shutdown)) is not None:
        reader.problems.append(f"{reader.key_of('idleShutdown')} is {idle_shutdown!r}: {problem}")
    schedule = _schedule(reader.section("schedule")) if reader.has("schedule") else None
    users: list[WorkstationUser] = []
    object_ids: dict[str, tuple[int, str]] = {}  # lower-case object ID -> (index, name) of its first listing
    instances: dict[str, tuple[int, str]] = {}  # instance name -> (index, name) of the user whose it is
    key = reader.key_of("users")
    for index, item in reader.items("users"):
        name = item.text("name", pattern=USER_NAME, means="a name starting with a letter: letters, digits, '.', '_', '-'")
        object_id = item.text("objectId", pattern=GUID, means="an Entra object ID (a GUID)")
        item.unknown()
        if name is None or object_id is None or not USER_NAME.fullmatch(name) or not GUID.fullmatch(object_id):
            continue
        if object_id.lower() in object_ids:
            first, first_name = object_ids[object_id.lower()]
            reader.problems.append(
                f"{key}[{index}].objectId is {key}[{first}].objectId too ({first_name!r}); list each person once"
            )
            continue
        object_ids[object_id.lower()] = (index, name)
        instance = names.workstation(name)
        if instance in instances:
            first, first_name = instances[instance]
            reader.problems.append(
                f"{key}[{index}].name {name!r} makes the compute instance name {instance!r}, as {key}[{first}].name "
                f"{first_name!r} does; allowed: names that still differ in lower case, with punctuation as '-', cut "
                f"to their first {WORKSTATION_USER_LENGTH} characters"
            )
            continue
        if (problem := COMPUTE_INSTANCE_RULE.check(instance)) is not None:
            reader.problems.append(f"{key}[{index}].name {name!r} {problem}")
            continue
        instances[instance] = (index, name)
        users.append(WorkstationUser(name=name, object_id=object_id))
    reader.unknown()
    return WorkstationSettings(vm_size=vm_size, idle_shutdown=idle_shutdown, schedule=schedule, users=tuple(users))


def _policy(reader: _Reader, today: datetime.date) -> PolicySettings:
    """The enterprise's policy assignments, and the date every exemption declared against them expires on: required
    with any assignment, and later than today, so that each waiver is reviewed again."""
    assignments = []
    for _, item in reader.items("assignments"):
        assignment_id = item.text("id", pattern=POLICY_ASSIGNMENT_ID,
                                  means="/subscriptions/<id>/providers/Microsoft.Authorization/policyAssignments/<name>, or one at a management group")  # fmt: skip
        kind = item.text("kind", choices=POLICY_ASSIGNMENT_KINDS)
        definition_id = None
        if kind == "definition":
            definition_id = item.text("definitionId", pattern=BUILT_IN_DEFINITION_ID,
                                      means="/providers/Microsoft.Authorization/policyDefinitions/<GUID>, a built-in definition")  # fmt: skip
        item.unknown()
        assignments.append(PolicyAssignment(assignment_id, kind, definition_id))
    expires = reader.text("exemptionsExpireOn", default=None, pattern=ISO_DATE, means="a date, YYYY-MM-DD")
    expires_on = None
    if expires and ISO_DATE.fullmatch(expires):
        try:
            expires_on = datetime.date.fromisoformat(expires)
        except ValueError:
            reader.problems.append(f"{reader.key_of('exemptionsExpireOn')} is {expires!r}, not a date")
        else:
            if expires_on <= today:
                reader.problems.append(f"{reader.key_of('exemptionsExpireOn')} is {expires}, not after today ({today}): "
                                       "review the kept findings (docs/security.md, \"Azure Policy\") and set a later date")  # fmt: skip
    if assignments and not expires:
        reader.problems.append(f"{reader.key_of('exemptionsExpireOn')} is required with {reader.key_of('assignments')}: "
                               "every exemption expires, to be reviewed again")  # fmt: skip
    reader.unknown()
    return PolicySettings(tuple(assignments), expires_on)


def _hardened(problems: list[str], settings: Settings) -> None:
    """prod is hardened by construction, not by convention."""
    if settings.environment != "prod":
        return
    ns = PROJECT
    if not settings.protect:
        problems.append(f"{ns}:protect is false; prod must protect its stateful resources: allowed: true")
    if not settings.key_vault.purge_protection:
        problems.append(f"{ns}:keyVault.purgeProtection is false; allowed in prod: true")
    if settings.inference.allow_insecure_connections:
        problems.append(f"{ns}:inference.allowInsecureConnections is true; allowed in prod: false")
    if not settings.network.isolated:
        problems.append(f"{ns}:network.isolated is false; prod keeps compute and the data plane off the internet: allowed: true")


def _isolation_mode(reader: _Reader) -> str | None:
    value = reader.text("isolationMode", default="Disabled")
    if value in MANAGED_NETWORK_MODES:
        reader.problems.append(
            f"{reader.key_of('isolationMode')} is {value!r}; a managed virtual network cannot hold the platform's "
            "Kubernetes compute (\"Kubernetes and attached VMs aren't supported in an Azure Machine Learning managed "
            "virtual network.\"): allowed: Disabled, with network.isolated for the stack's own VNet"
        )
    elif value not in ISOLATION_MODES:
        reader.problems.append(f"{reader.key_of('isolationMode')} is {value!r}; allowed: {', '.join(ISOLATION_MODES)}")
    return value


def _subnet_nodes(cpu: _Reader, gpu: _Reader, gpu_enabled: Any, aks: _Reader, workstations: int) -> dict[str, int]:
    """The most nodes each subnet holds at once, from the raw cluster sizes (already validated elsewhere) and the
    number of workstations: "Each compute instance requires one IP address. Each *node* within a compute cluster
    ... requires one IP address." (Secure an Azure Machine Learning training environment with virtual networks)"""

    def most(reader: _Reader) -> int:
        value = reader.values.get("maxNodes")
        return int(value) if isinstance(value, int) or (isinstance(value, str) and value.isdigit()) else 0

    # AKS surges one extra node per pool while it upgrades
    return {"trainingSubnet": most(cpu) + (most(gpu) if gpu_enabled else 0) + workstations, "aksSubnet": most(aks) + 1}


def parse(config: Mapping[str, Any], stack: str, project: str = PROJECT, today: datetime.date | None = None) -> Settings:
    """`config` maps full keys (`azureml-platform:environment`) to Pulumi's raw values (strings, JSON for objects);
    `today` (default: the date now) is what policy.exemptionsExpireOn must be after."""
    problems: list[str] = []
    own = {key.split(":", 1)[1]: value for key, value in config.items() if key.startswith(f"{project}:")}
    root = _Reader(own, lambda field: f"{project}:{field}", problems)

    location = config.get(LOCATION_KEY)
    if not location:
        problems.append(f"{LOCATION_KEY} is required (an Azure region such as westeurope)")
    elif not AZURE_LOCATION.fullmatch(location):
        problems.append(f"{LOCATION_KEY} is {location!r}; expected an Azure region name such as westeurope")

    environment = root.text("environment", choices=ENVIRONMENTS)
    name_prefix = root.text("namePrefix")
    name_generation = root.whole("nameGeneration", default=0)
    workspace = root.section("workspace")
    network = root.section("network")
    key_vault = root.section("keyVault")
    cpu = root.section("cpuCluster")
    gpu = root.section("gpuCluster")
    aks = root.section("aks")
    inference = root.section("inference")
    instance_type = inference.section("instanceType")

    gpu_enabled = gpu.flag("enabled")
    workstation_names = Names.build(project, stack, name_prefix or "", name_generation or 0)
    workstations = (
        _workstations(root.section("workstations"), gpu_enabled, workstation_names) if root.has("workstations") else None
    )
    group = root.text("dataScientistsGroup", default=None, pattern=GUID, means="the object ID (a GUID) of an Entra group")
    if group and workstations:
        for index, user in enumerate(workstations.users):
            if user.object_id.lower() == group.lower():
                problems.append(
                    f"{project}:dataScientistsGroup is the objectId of {project}:workstations.users[{index}] "
                    f"({user.name!r}), a user; expected the object ID of an Entra group"
                )
    ml_registry = None
    if root.has("mlRegistry"):
        link = root.section("mlRegistry")
        reference = link.text("stack", pattern=STACK_REFERENCE, means=f"<organization>/{ML_REGISTRY_PROJECT}/<stack>")
        link.unknown()
        if reference and STACK_REFERENCE.fullmatch(reference) and reference.split("/")[1] != ML_REGISTRY_PROJECT:
            problems.append(f"{project}:mlRegistry.stack is {reference!r}, a stack of project {reference.split('/')[1]!r}; "
                            f"expected one of the ML registry's project {ML_REGISTRY_PROJECT!r} (ml-registry/Pulumi.yaml)")  # fmt: skip
        ml_registry = MlRegistryLink(stack=reference, environment=environment) if reference else None
    settings = Settings(
        project=project,
        stack=stack,
        environment=environment,
        location=location,
        name_prefix=name_prefix,
        name_generation=name_generation,
        protect=root.flag("protect"),
        github_repository=root.text("githubRepository", pattern=GITHUB_REPOSITORY, means="owner/repo"),
        github_environment=root.text(
            "githubEnvironment", pattern=re.compile(r"[\w .-]{1,255}"), means="a GitHub environment name"
        ),
        create_client_secret=root.flag("createClientSecret", default=False),
        registry_sku=root.text("registrySku", choices=REGISTRY_SKUS),
        registry_zone_redundancy=root.flag("registryZoneRedundancy", default=False),
        storage_sku=root.text("storageSku", choices=STORAGE_SKUS),
        log_retention_days=root.whole("logRetentionDays", minimum=30, maximum=730),
        log_blob_reads=root.flag("logBlobReads"),
        workspace=WorkspaceSettings(
            public_network_access=workspace.text("publicNetworkAccess", choices=PUBLIC_NETWORK_ACCESS),
            isolation_mode=_isolation_mode(workspace),
        ),
        network=_network(network, _subnet_nodes(cpu, gpu, gpu_enabled, aks, len(workstations.users) if workstations else 0)),
        key_vault=KeyVaultSettings(
            purge_protection=key_vault.flag("purgeProtection"),
            soft_delete_retention_days=key_vault.whole("softDeleteRetentionDays", minimum=7, maximum=90),
        ),
        cpu_cluster=_cluster(cpu, gpu=False),
        # a switched-off GPU cluster is not read further, so its settings may stay as templates
        gpu_cluster=GpuClusterSettings(gpu_enabled, _cluster(gpu, gpu=True) if gpu_enabled else None),
        aks=AksSettings(
            vm_size=aks.text("vmSize", pattern=VM_SIZE, means="an Azure VM size such as Standard_D4s_v5"),
            min_nodes=aks.whole("minNodes", minimum=1),
            max_nodes=aks.whole("maxNodes", minimum=1),
            tier=aks.text("tier", choices=AKS_TIERS),
            kubernetes_version=aks.text(
                "kubernetesVersion", default=None, pattern=re.compile(r"\d+\.\d+(\.\d+)?"), means="e.g. 1.33"
            ),
            authorized_ip_ranges=aks.ranges("authorizedIpRanges"),
            encryption_at_host=aks.flag("encryptionAtHost"),
            container_insights=aks.flag("containerInsights"),
            defender=aks.flag("defender"),
        ),
        inference=InferenceSettings(
            router_service_type=inference.text("routerServiceType", choices=ROUTER_SERVICE_TYPES),
            allow_insecure_connections=inference.flag("allowInsecureConnections"),
            high_availability=inference.flag("highAvailability"),
            cluster_purpose=inference.text("clusterPurpose", choices=CLUSTER_PURPOSES),
            namespace=inference.text("namespace", choices=COMPUTE_NAMESPACES),
            ssl_cname=inference.text(
                "sslCname", default=None, pattern=re.compile(r"[a-z0-9.-]+\.[a-z]{2,}"), means="a DNS name"
            ),
            tls_certificate=root.secret("inferenceTlsCertificate"),
            tls_key=root.secret("inferenceTlsKey"),
            instance_type=InstanceTypeSettings(
                name=instance_type.text("name", pattern=DNS_LABEL, means="a lower-case DNS label"),
                cpu_request=instance_type.text("cpuRequest", pattern=QUANTITY, means="a Kubernetes CPU quantity"),
                memory_request=instance_type.text(
                    "memoryRequest", pattern=QUANTITY, means="a Kubernetes memory quantity"
                ),
                cpu_limit=instance_type.text("cpuLimit", pattern=QUANTITY, means="a Kubernetes CPU quantity"),
                memory_limit=instance_type.text("memoryLimit", pattern=QUANTITY, means="a Kubernetes memory quantity"),
            ),
        ),
        workstations=workstations,
        data_scientists_group=group,
        ml_registry=ml_registry,
        policy=_policy(root.section("policy"), today or datetime.date.today()) if root.has("policy") else PolicySettings(),
    )
    if gpu_enabled is False and gpu.values:
        gpu.read.update(gpu.values)  # the template fields of a switched-off cluster are known, not typos
    _check_node_range(aks, settings.aks.min_nodes, settings.aks.max_nodes)
    if len(settings.aks.authorized_ip_ranges) > AKS_AUTHORIZED_RANGES_LIMIT:
        problems.append(f"{project}:aks.authorizedIpRanges has {len(settings.aks.authorized_ip_ranges)} ranges; the limit is {AKS_AUTHORIZED_RANGES_LIMIT}")
    if settings.registry_zone_redundancy and settings.registry_sku != "Premium":
        problems.append(
            f"{project}:registryZoneRedundancy is true with registrySku {settings.registry_sku!r}; zone redundancy "
            "is a Premium feature: allowed: registrySku Premium, or registryZoneRedundancy false"
        )
    if settings.network.isolated and settings.registry_sku != "Premium":
        problems.append(
            f"{project}:registrySku is {settings.registry_sku!r} with network.isolated true; private endpoints need "
            "a Premium registry (\"Your Azure Container Registry must be Premium version.\"): allowed: Premium"
        )
    if settings.inference.allow_insecure_connections is False:
        tls_needs = (
            ("inference.sslCname", settings.inference.ssl_cname, ""),
            ("inferenceTlsCertificate", settings.inference.tls_certificate, " (set it with --secret)"),
            ("inferenceTlsKey", settings.inference.tls_key, " (set it with --secret)"),
        )
        problems += [
            f"{project}:{key} is required when {project}:inference.allowInsecureConnections is false{how}"
            for key, value, how in tls_needs
            if not value
        ]
    for reader in (root, workspace, network, key_vault, cpu, gpu, aks, inference, instance_type):
        reader.unknown()
    if name_prefix and not any(p.startswith(f"{project}:namePrefix") for p in problems):
        bad_names = Names.build(project, stack, name_prefix, name_generation or 0).problems()
        if bad_names:
            problems.append(f"{project}:namePrefix {name_prefix!r} (stack {stack!r}) " + "; ".join(bad_names))
    if not problems:
        _hardened(problems, settings)
    if problems:
        raise SettingsError(problems)
    return settings


def _running_config() -> tuple[dict[str, Any], str, str]:
    """The running stack's config, stack and project (`pulumi up`/`preview`, or a test under `set_mocks`)."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    return {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}, pulumi.get_stack(), pulumi.get_project()


def load() -> Settings:
    """The running platform stack's settings."""
    return parse(*_running_config())


# -- the ML registry's stack (ml-registry/) -------------------------------------------------------------------------

# the registry's system-created storage: the kinds the REST spec allows, without Premium (blob storage for model
# files; SystemCreatedStorageAccount.storageAccountType, registries.json 2025-12-01)
ML_REGISTRY_STORAGE_TYPES = ("Standard_LRS", "Standard_GRS", "Standard_RAGRS", "Standard_ZRS", "Standard_GZRS", "Standard_RAGZRS")


@dataclass(frozen=True)
class MlRegistrySettings:
    project: str
    stack: str
    location: str  # the primary region: "You can't change the primary region after registry creation"
    # more regions the registry replicates to; each environment's workspace region must be one of them
    replication_locations: tuple[str, ...]
    name_prefix: str
    name_generation: int
    storage_account_type: str

    @property
    def locations(self) -> tuple[str, ...]:
        return (self.location, *(where for where in self.replication_locations if where != self.location))

    @property
    def tags(self) -> dict[str, str]:
        # "shared": every environment reads it, and the rules treat it as prod's stateful resources
        return {**stack_tags(self.stack, self.project), "environment": "shared"}


def parse_ml_registry(config: Mapping[str, Any], stack: str, project: str = ML_REGISTRY_PROJECT) -> MlRegistrySettings:
    """The ML registry stack's config (`ml-registry/Pulumi.<stack>.yaml`), every problem at once, as `parse`."""
    from infra.naming import MlRegistryNames

    problems: list[str] = []
    own = {key.split(":", 1)[1]: value for key, value in config.items() if key.startswith(f"{project}:")}
    root = _Reader(own, lambda field: f"{project}:{field}", problems)
    location = config.get(LOCATION_KEY)
    if not location or not AZURE_LOCATION.fullmatch(location):
        problems.append(f"{LOCATION_KEY} is {location!r}; expected an Azure region name such as westeurope")
    replication = root.texts("replicationLocations")
    for index, where in enumerate(replication):
        if not AZURE_LOCATION.fullmatch(where):
            problems.append(f"{project}:replicationLocations[{index}] is {where!r}; expected an Azure region name such as northeurope")
    settings = MlRegistrySettings(
        project=project,
        stack=stack,
        location=location,
        replication_locations=replication,
        name_prefix=root.text("namePrefix"),
        name_generation=root.whole("nameGeneration", default=0),
        storage_account_type=root.text("storageAccountType", default="Standard_ZRS", choices=ML_REGISTRY_STORAGE_TYPES),
    )
    root.unknown()
    if settings.name_prefix and not problems:
        bad = MlRegistryNames.build(project, stack, settings.name_prefix, settings.name_generation).problems()
        problems += [f"{project}:namePrefix {settings.name_prefix!r} (stack {stack!r}) {problem}" for problem in bad]
    if problems:
        raise SettingsError(problems)
    return settings


def load_ml_registry() -> MlRegistrySettings:
    """The running ML registry stack's settings."""
    return parse_ml_registry(*_running_config())
