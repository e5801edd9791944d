"""The Pulumi program: read and validate the stack's settings, build the platform, export the outputs."""

import pulumi
from pulumi_azure_native import authorization, resources

from infra import outputs, settings as stack_settings
from infra.collected_data import CollectedData, CollectedDataArgs
from infra.conformance import PolicyExemptions, PolicyExemptionsArgs
from infra.context import StackContext
from infra.identity import AutomationIdentity, AutomationIdentityArgs
from infra.inference import InferenceCluster, InferenceClusterArgs
from infra.ml_registry import MlRegistryAccess, MlRegistryAccessArgs
from infra.naming import Names
from infra.network import PrivateNetwork, PrivateNetworkArgs
from infra.resource_logs import ResourceLogs, ResourceLogsArgs
from infra.training import TrainingClusters, TrainingClustersArgs
from infra.workspace import Workspace, WorkspaceArgs
from infra.workstations import TeamAccess, TeamAccessArgs, Workstations, WorkstationsArgs

# fails with every bad config value listed before any resource is declared
settings = stack_settings.load()
names = Names.build(settings.project, settings.stack, settings.name_prefix, settings.name_generation)
client = authorization.get_client_config_output()

group = resources.ResourceGroup(
    "resource-group", resource_group_name=names.resource_group, location=settings.location, tags=settings.tags
)
stack = StackContext(settings, names, group.name, tenant_id=client.tenant_id, subscription_id=client.subscription_id)
platform = Workspace("workspace", WorkspaceArgs(stack))
network = PrivateNetwork("network", PrivateNetworkArgs(stack, platform)) if settings.network.isolated else None
training = TrainingClusters("training", TrainingClustersArgs(stack, platform, network))
inference = InferenceCluster("inference", InferenceClusterArgs(stack, platform, network))
automation = AutomationIdentity("automation", AutomationIdentityArgs(stack, platform, owner_object_id=client.object_id))
team = TeamAccess("team", TeamAccessArgs(stack, platform))
workstations = Workstations("workstations", WorkstationsArgs(stack, platform, network))
resource_logs = ResourceLogs("resource-logs", ResourceLogsArgs(stack, platform, inference.cluster.id))
collected = CollectedData("collected-data", CollectedDataArgs(stack, platform.storage.name, platform.workspace.workspace_id))
# the Azure Policy findings the platform keeps, each exempt under the enterprise's assignments (infra/conformance.py)
exemption_targets = {
    "workspace": [platform.workspace.id], "storage": [platform.storage.id], "key-vault": [platform.key_vault.id],
    "registry": [platform.registry.id], "aks": [inference.cluster.id], "app-insights": [platform.app_insights.id],
    "log-analytics": [platform.logs.id], "training-computes": [c.id for c in (training.cpu, training.gpu) if c is not None],
    **({"vnet": [network.vnet.id], "nat-public-ip": [network.egress_ip.id]} if network else {}),
}  # fmt: skip
exemptions = PolicyExemptions("policy-exemptions", PolicyExemptionsArgs(settings.environment, settings.policy, exemption_targets))
ml_registry = MlRegistryAccess("ml-registry", MlRegistryAccessArgs(stack, automation, network)) if settings.ml_registry else None

pulumi.export(outputs.SUBSCRIPTION_ID, client.subscription_id)
pulumi.export(outputs.TENANT_ID, client.tenant_id)
pulumi.export(outputs.RESOURCE_GROUP, group.name)
pulumi.export(outputs.LOCATION, settings.location)
pulumi.export(outputs.WORKSPACE, platform.workspace.name)
pulumi.export(outputs.ENVIRONMENT, settings.environment)
pulumi.export(outputs.CPU_CLUSTER, training.cpu.name)
if training.gpu is not None:  # never export None: the engine drops it (infra/outputs.py, OPTIONAL)
    pulumi.export(outputs.GPU_CLUSTER, training.gpu.name)
pulumi.export(outputs.KUBERNETES_COMPUTE, inference.compute.name)
pulumi.export(outputs.KUBERNETES_INSTANCE_TYPE, inference.instance_type_name)
pulumi.export(outputs.KEY_VAULT_URI, platform.key_vault.properties.vault_uri)
pulumi.export(outputs.STORAGE_ACCOUNT, platform.storage.name)
pulumi.export(outputs.NETWORK_ISOLATION, "private" if settings.network.isolated else "public")
pulumi.export(outputs.REGISTRY_LOGIN_SERVER, platform.registry.login_server)
pulumi.export(outputs.AUTOMATION_CLIENT_ID, automation.application.client_id)
# an empty object when no one is listed: the engine keeps it (it drops only None)
pulumi.export(outputs.WORKSTATIONS, {user: instance.name for user, instance in workstations.instances.items()})
if ml_registry is not None:
    pulumi.export(outputs.ML_REGISTRY_NAME, ml_registry.name)
    pulumi.export(outputs.ML_REGISTRY_ACCESS, ml_registry.access)
if automation.client_secret is not None:
    pulumi.export(outputs.AUTOMATION_CLIENT_SECRET, automation.client_secret)
