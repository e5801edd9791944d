"""The data scientists: the team's access to the workspace (TeamAccess), and a personal compute instance, a managed
workstation with Jupyter, VS Code and the SDK, for each listed user (Workstations).

The team gets what a data scientist needs and no more (infra/roles.py, TEAM_ROLES): through its Entra group when
the stack names one (`dataScientistsGroup`, principalType Group), otherwise each listed user directly (principalType
User). Never both, so a listed user who is also in the group holds each role once.

A workstation has no managed identity. With one, idle shutdown needs a privileged grant: "If the compute instance is
also configured with a managed identity, the compute instance won't shut down due to inactivity unless the managed
identity has contributor access to the Azure Machine Learning workspace." ("Create an Azure Machine Learning compute
instance", Configure idle shutdown). Without one, its user works as themselves: notebooks reach data with the user's
own Entra token ("The same behavior applies when you work with data interactively via a Jupyter Notebook on your
local computer or compute instance.", "Set up authentication between Azure Machine Learning and other services",
Accessing storage services), which the team's Storage Blob Data Reader covers. Azure grants it nothing, so there is
no role of Azure's own to avoid repeating either.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_azure_native import authorization

from infra import roles
from infra.arm import declare
from infra.context import StackContext
from infra.naming import workstation_user_part
from infra.network import PrivateNetwork
from infra.settings import ScheduleSettings, Settings
from infra.workspace import Workspace

# What Azure cannot change on an existing compute instance; a change replaces it (deleted first: its name stays)
# instead of failing the update (pulumi/pulumi-azure-native#577: "changing these properties results in a preview
# showing they will be updated but the actual update fails"; the specs carry no such marks, replaceOnChanges is the
# workaround). "It isn't possible to change the virtual machine size of compute instance once it's created."; "SSH
# access can't be enabled or disabled after creation." ("Create an Azure Machine Learning compute instance").
# Idle shutdown through ARM: "ARM Templates: only configurable during new compute instance creation" (ibid.); the
# schedules likewise: a PUT leaves them as they were (Azure/bicep-types-az#2543: "properties.properties.schedules.
# computeStartStop. no matter what changes you do to the API on the property it is not changed"). disableLocalAuth:
# "Update=false" (Az.MachineLearningServices, ICompute.DisableLocalAuth). The subnet and public IP: the network
# resources are made when the instance is ("Stopping the instance doesn't remove the resources", Secure an Azure
# Machine Learning training environment with virtual networks). The assigned user: the instance, its disk and its
# files outside the workspace share are that person's; it is never handed to someone else.
IMMUTABLE = (
    "properties.properties.vmSize",
    "properties.properties.sshSettings",
    "properties.properties.idleTimeBeforeShutdown",
    "properties.properties.schedules",
    "properties.properties.subnet",
    "properties.properties.enableNodePublicIp",
    "properties.properties.personalComputeInstanceSettings",
    "properties.disableLocalAuth",
)


@dataclass(frozen=True)
class TeamAccessArgs:
    stack: StackContext
    workspace: Workspace


class TeamAccess(pulumi.ComponentResource):
    """The team's roles on the workspace and its storage: to the group, or to each listed user."""

    def __init__(self, name: str, args: TeamAccessArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("azureml-platform:infra:TeamAccess", name, None, opts)
        stack, workspace = args.stack, args.workspace
        settings = stack.settings

        def grants(prefix: str) -> tuple:
            return (
                (f"{prefix}-workspace", roles.AZUREML_DATA_SCIENTIST, workspace.workspace.id),
                (f"{prefix}-blob-data", roles.STORAGE_BLOB_DATA_READER, workspace.storage.id),
            )

        self.assignments: list[pulumi.CustomResource] = []
        for prefix, principal_id, principal_type in team_principals(settings):
            self.assignments += roles.grant_all(grants(prefix), principal_id=principal_id, principal_type=principal_type,
                                                subscription_id=stack.subscription_id, parent=self)  # fmt: skip
        self.register_outputs({})


def team_principals(settings: Settings) -> list[tuple[str, str, authorization.PrincipalType]]:
    """Who the team's roles go to, as (logical name prefix, object ID, principal type): the data scientists' group
    when the stack names one, else each listed user."""
    if settings.data_scientists_group:
        return [("team", settings.data_scientists_group, authorization.PrincipalType.GROUP)]
    users = settings.workstations.users if settings.workstations else ()
    return [(f"user-{workstation_user_part(user.name)}", user.object_id, authorization.PrincipalType.USER) for user in users]


@dataclass(frozen=True)
class WorkstationsArgs:
    stack: StackContext
    workspace: Workspace
    network: PrivateNetwork | None  # None: no VNet, instances with a public IP (inbound closed)


def _schedules(schedule: ScheduleSettings | None) -> dict | None:
    if schedule is None:
        return None
    triggers = [("Start", expression) for expression in schedule.start] + [("Stop", expression) for expression in schedule.stop]
    return {
        "computeStartStop": [
            {"action": action, "triggerType": "Cron", "cron": {"expression": expression, "timeZone": schedule.time_zone},
             "status": "Enabled"}
            for action, expression in triggers
        ]
    }  # fmt: skip


class Workstations(pulumi.ComponentResource):
    """One compute instance per listed user, assigned to them. Declared by their wire properties (infra/arm.py):
    as typed `machinelearningservices.Compute` resources, each would compute 51 alias URNs, and 20 of them would
    put the program over its time budget. tests/test_infra_workstations.py holds the properties to what
    `ComputeInstanceArgs` sends."""

    def __init__(self, name: str, args: WorkstationsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("azureml-platform:infra:Workstations", name, None, opts)
        stack, workspace, vnet = args.stack, args.workspace, args.network
        settings, names = stack.settings, stack.names
        # user name (as the stack file lists it) -> its compute instance
        self.instances: dict[str, pulumi.CustomResource] = {}
        config = settings.workstations
        for user in config.users if config else ():
            instance = {
                "vmSize": config.vm_size,
                # create on behalf of: "assign the instance to them" (Create on behalf of); the tenant is the
                # deployer's, the one the workspace and its users live in
                "personalComputeInstanceSettings": {"assignedUser": {"objectId": user.object_id, "tenantId": stack.tenant_id}},
                # the REST API's own create-on-behalf example ("Create an ComputeInstance Compute") pairs the assigned
                # user with Personal: "If Personal, only the creator can access applications on this compute
                # instance"; Shared would open them to "any workspace user ... depending on his/her assigned role",
                # and the team's role holds computes/applicationaccess/action
                "applicationSharingPolicy": "Personal",
                "computeInstanceAuthorizationType": "personal",
                "sshSettings": {"sshPublicAccess": "Disabled"},
                "idleTimeBeforeShutdown": config.idle_shutdown,
                "schedules": _schedules(config.schedule),
                # SSO stays off only for instances with a setup script or custom app ("single sign-on (SSO) will be
                # disabled during creation if the compute instance has a setup script or custom app"); these have
                # neither
                "enableSSO": True,
                # no public IP needs a subnet of a VNet with a workspace private endpoint ("You must use a workspace
                # private endpoint for the compute resource to communicate with Azure Machine Learning services from
                # the VNet"); outside one, Azure requires it (inbound closed but for the AzureMachineLearning tag)
                "subnet": {"id": vnet.training_subnet_id} if vnet else None,
                "enableNodePublicIp": vnet is None,
            }
            self.instances[user.name] = declare(
                "azure-native:machinelearningservices:Compute",
                f"workstation-{workstation_user_part(user.name)}",
                {
                    "computeName": names.workstation(user.name),
                    "resourceGroupName": stack.resource_group_name,
                    "workspaceName": workspace.workspace.name,
                    "location": settings.location,
                    "properties": {
                        "computeType": "ComputeInstance",
                        "description": f"{user.name}'s workstation",
                        # what azure-ai-ml sends for an instance without SSH (ComputeInstance._to_rest_object:
                        # "disable_local_auth = not self.ssh_public_access_enabled"); Azure Policy's built-in
                        # "Configure Azure Machine Learning Computes to disable local authentication methods" covers
                        # ComputeInstance too
                        "disableLocalAuth": True,
                        "properties": {key: value for key, value in instance.items() if value is not None},
                    },
                    "tags": settings.tags,
                    "name": None,  # ARM's answer: the instance's name
                },
                pulumi.ResourceOptions(
                    parent=self,
                    depends_on=vnet.endpoints_ready if vnet else None,
                    replace_on_changes=list(IMMUTABLE),
                    delete_before_replace=True,
                ),
            )
        self.register_outputs({})
