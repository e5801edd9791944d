"""The Azure ML registry that promotes models from dev to prod: the registry itself (its own stack, ml-registry/),
and each environment's access to it (a StackReference to that stack, its roles, and in an isolated environment the
private endpoints to it).

Roles. The only built-in registry role, AzureML Registry User, grants "registries/assets/*": write and delete too.
So the registry stack defines two custom roles with exactly the actions "Manage Azure Machine Learning registries"
(how-to-manage-registries, "Add users to the registry") lists: a reader ("To let a user only read assets ...
create a custom role with the following permissions": registries/read, registries/assets/read) and a publisher,
which adds "registries/assets/write" ("Create assets in registries") but not ".../delete": a promoted version is
archived, never deleted (docs/operators.md, "Promotion"). dev's automation identity publishes; every other environment's automation
identity, and prod's data scientists, read. The rule `ml-registry-roles` holds every assignment at a registry's
scope to these two roles, and the publisher to the publishing environment.

A role definition "can be assigned" at the scopes its AssignableScopes lists: "root, management group,
subscriptions, or resource groups" (Azure RBAC, role-definitions, AssignableScopes): the registry's resource group.
Its display name must be unique in the tenant, so it carries the registry's name.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_azure_native import resources

from infra import outputs, roles
from infra.arm import declare
from infra.context import StackContext
from infra.identity import AutomationIdentity
from infra.naming import MlRegistryNames
from infra.network import PrivateNetwork
from infra.settings import MlRegistrySettings
from infra.workstations import team_principals

REGISTRY = "azure-native:machinelearningservices:Registry"
# the system-created container registry: a private endpoint to it (an isolated environment makes one) needs Premium
# ("Your Azure Container Registry must be Premium version.", the workspace's private endpoint prerequisites); the
# registry docs' own example creates it Premium
ACR_SKU = "Premium"


@dataclass(frozen=True)
class MlRegistryArgs:
    settings: MlRegistrySettings
    names: MlRegistryNames


class MlRegistry(pulumi.ComponentResource):
    """The ML registry, in its own resource group, and its two custom roles. Protected: it holds every promoted
    model (docs/operators.md, "The ML registry's stack": what tearing it down loses). Its regions' storage and ACR IDs are the
    primary region's: an environment in a replication region would need its own region's (none is, today)."""

    def __init__(self, name: str, args: MlRegistryArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("azureml-platform:infra:MlRegistry", name, None, opts)
        settings, names = args.settings, args.names
        protected = pulumi.ResourceOptions(parent=self, protect=True)
        self.group = resources.ResourceGroup(
            "resource-group", resource_group_name=names.resource_group, location=settings.location, tags=settings.tags,
            opts=protected,
        )  # fmt: skip
        region = lambda location: {  # noqa: E731  (one region's system-created storage and ACR, as azure-ai-ml sends)
            "location": location,
            "storageAccountDetails": [{"systemCreatedStorageAccount": {
                "storageAccountType": settings.storage_account_type, "storageAccountHnsEnabled": False,
                "allowBlobPublicAccess": False}}],
            "acrDetails": [{"systemCreatedAcrAccount": {"acrAccountSku": ACR_SKU}}],
        }  # fmt: skip
        self.registry = declare(
            REGISTRY,
            "registry",
            {
                "registryName": names.registry,
                "resourceGroupName": self.group.name,
                "location": settings.location,
                "identity": {"type": "SystemAssigned"},
                # Enabled, with Entra ID auth: dev publishes and CI runs on GitHub-hosted runners outside any VNet, and
                # with it off "Clients need to be connected to the VNet to which the registry is connected with a
                # private endpoint" (how-to-registry-network-isolation). Isolated environments add private endpoints
                "publicNetworkAccess": "Enabled",
                "regionDetails": [region(location) for location in settings.locations],
                "tags": settings.tags,
                "name": None,
                "discoveryUrl": None,
                "mlFlowRegistryUri": None,
            },
            protected,
        )
        self.roles = {
            kind: declare(
                "azure-native:authorization:RoleDefinition",
                f"{kind}-role",
                {
                    "roleDefinitionId": self.registry.id.apply(lambda registry_id, kind=kind: roles.ml_registry_role_guid(kind, registry_id)),
                    "scope": self.group.id,
                    "roleName": f"AzureML Registry {kind.title()} ({names.registry})",
                    "description": f"{'Reads' if kind == 'reader' else 'Reads and publishes'} the assets of the ML registry "
                                   f"{names.registry}; never deletes them (azureml-platform, infra/ml_registry.py)",
                    "roleType": "CustomRole",
                    "permissions": [{"actions": list(actions), "notActions": [], "dataActions": [], "notDataActions": []}],
                    "assignableScopes": [self.group.id],
                },
                pulumi.ResourceOptions(parent=self),
            )
            for kind, actions in roles.ML_REGISTRY_ROLE_ACTIONS.items()
        }  # fmt: skip
        details = self.registry.regionDetails[0]
        self.storage_id = details.apply(lambda d: d["storageAccountDetails"][0]["systemCreatedStorageAccount"]["armResourceId"]["resourceId"])
        self.acr_id = details.apply(lambda d: d["acrDetails"][0]["systemCreatedAcrAccount"]["armResourceId"]["resourceId"])
        self.register_outputs({"registry_id": self.registry.id})

    def exports(self) -> dict[str, pulumi.Input[str]]:
        """The stack outputs the environments read (infra/outputs.py, ML_REGISTRY_STACK)."""
        found = {
            "name": self.registry.name, "id": self.registry.id, "location": self.registry.location,
            "storage_id": self.storage_id, "acr_id": self.acr_id,
            "reader_role_id": self.roles["reader"].id, "publisher_role_id": self.roles["publisher"].id,
        }  # fmt: skip
        return {outputs.ML_REGISTRY_STACK[key]: value for key, value in found.items()}


@dataclass(frozen=True)
class MlRegistryAccessArgs:
    stack: StackContext
    automation: AutomationIdentity
    network: PrivateNetwork | None  # isolated environments reach the registry through private endpoints


class MlRegistryAccess(pulumi.ComponentResource):
    """An environment's way to the ML registry: its outputs (a StackReference), the roles of its automation identity
    (and in prod of its data scientists), and in an isolated environment the private endpoints to the registry."""

    def __init__(self, name: str, args: MlRegistryAccessArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("azureml-platform:infra:MlRegistryAccess", name, None, opts)
        stack, link = args.stack, args.stack.settings.ml_registry
        self.access = link.access
        reference = pulumi.StackReference(link.stack, opts=pulumi.ResourceOptions(parent=self))
        read = {key: reference.require_output(output) for key, output in outputs.ML_REGISTRY_STACK.items()}
        self.name, self.id = read["name"], read["id"]
        role = lambda kind: roles.CustomRole(read[f"{kind}_role_id"], f"AzureML Registry {kind.title()}")  # noqa: E731
        common = dict(subscription_id=stack.subscription_id, parent=self)
        automation_role = role("publisher" if self.access == "publish" else "reader")
        roles.grant_all((("automation-ml-registry", automation_role, self.id),),
                        principal_id=args.automation.service_principal.object_id, **common)  # fmt: skip
        if stack.settings.environment == "prod":
            # one environment grants the team: a second assignment of the same role to the same group at the same
            # scope is a 409 RoleAssignmentExists
            for prefix, principal_id, principal_type in team_principals(stack.settings):
                roles.grant_all(((f"{prefix}-ml-registry", role("reader"), self.id),), principal_id=principal_id,
                                principal_type=principal_type, **common)  # fmt: skip
        if args.network is not None:
            # "Create a private endpoint to the registry, storage, and ACR in the same subnet as the private endpoint
            # of the Azure Machine Learning workspace." (how-to-registry-network-isolation); storage: "Sub-resource
            # ... Blob"
            for target, resource_id, group in (("mlregistry", self.id, "amlregistry"),
                                                ("mlregistry-storage", read["storage_id"], "blob"),
                                                ("mlregistry-acr", read["acr_id"], "registry")):  # fmt: skip
                args.network.connect(target, resource_id, group, self)
        self.register_outputs({})

