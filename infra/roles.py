"""Azure built-in roles the platform grants, and the one way it grants them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Iterable, Union

import pulumi
from pulumi_azure_native import authorization

from infra.arm import declare

# built-in role definition IDs (the same in every Azure tenant)
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
AZUREML_DATA_SCIENTIST = "f6c7c914-8db3-469d-8ca1-694a8f32e121"
KEY_VAULT_SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
NETWORK_CONTRIBUTOR = "4d97b98b-1d4f-4787-a291-c67834d212e7"
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
STORAGE_BLOB_DATA_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"

# what a data scientist needs, and all the team gets (a group, or each listed user): AzureML Data Scientist "Can
# perform all actions within an Azure Machine Learning workspace, except for creating or deleting compute resources
# and modifying the workspace itself" ("Manage access to Azure Machine Learning workspaces"); its actions include
# the ones the user of a compute instance made on their behalf needs (computes/start, stop, restart,
# applicationaccess, updateSchedules: "Create an Azure Machine Learning compute instance", Create on behalf of).
# Storage Blob Data Reader: "To access these storage services, you must have at least Storage Blob Data Reader
# access to the storage account" (identity-based data access from a notebook on a compute instance: "Set up
# authentication between Azure Machine Learning and other services", Accessing storage services).
TEAM_ROLES = (AZUREML_DATA_SCIENTIST, STORAGE_BLOB_DATA_READER)

# The ML registry's two custom roles (infra/ml_registry.py), with exactly the actions "Manage Azure Machine Learning
# registries" lists ("Add users to the registry"): to only read assets, registries/read ("list registries and get
# registry metadata") and registries/assets/read ("browse assets and use the assets in a workspace"); to create them
# too, registries/assets/write ("Create assets in registries"). Not registries/assets/delete: a promoted version is
# archived, never deleted. The built-in AzureML Registry User grants registries/assets/*, delete included.
ML_REGISTRY_ROLE_ACTIONS = {
    "reader": ("Microsoft.MachineLearningServices/registries/read", "Microsoft.MachineLearningServices/registries/assets/read"),
    "publisher": ("Microsoft.MachineLearningServices/registries/read", "Microsoft.MachineLearningServices/registries/assets/read",
                  "Microsoft.MachineLearningServices/registries/assets/write"),
}  # fmt: skip


def ml_registry_role_guid(kind: str, registry_id: str) -> str:
    """A custom role's name (a GUID), the same for the same registry wherever it is computed: the registry's stack
    defines the role under it, and the rules recognise it at that registry's scope."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"azureml-platform/ml-registry-{kind}/{registry_id.lower()}"))


NAMES = {
    ACR_PULL: "AcrPull",
    AZUREML_DATA_SCIENTIST: "AzureML Data Scientist",
    KEY_VAULT_SECRETS_OFFICER: "Key Vault Secrets Officer",
    NETWORK_CONTRIBUTOR: "Network Contributor",
    STORAGE_BLOB_DATA_CONTRIBUTOR: "Storage Blob Data Contributor",
    STORAGE_BLOB_DATA_READER: "Storage Blob Data Reader",
}


@dataclass(frozen=True)
class CustomRole:
    """A role the platform defines itself (infra/ml_registry.py), by its full role definition ID."""

    definition_id: pulumi.Input[str]
    name: str


Role = Union[str, CustomRole]  # a built-in role's GUID (NAMES), or a custom role


def role_definition_id(subscription_id: pulumi.Input[str], role: str) -> pulumi.Output[str]:
    return pulumi.Output.concat(
        "/subscriptions/", subscription_id, "/providers/Microsoft.Authorization/roleDefinitions/", role
    )


def grant_all(
    grants: Iterable[tuple[str, Role, pulumi.Input[str]]],
    *,
    principal_id: pulumi.Input[str],
    subscription_id: pulumi.Input[str],
    parent: pulumi.Resource,
    principal_type: authorization.PrincipalType = authorization.PrincipalType.SERVICE_PRINCIPAL,
) -> list[pulumi.CustomResource]:
    """One role assignment per (resource name, role, scope) for one principal: a service principal or managed
    identity (the default), or the data scientists' Entra group or one of them (GROUP, USER; TEAM_ROLES only).

    principalType is set so that ARM does not look the principal up in Entra ID, which fails for
    an identity created seconds earlier (replication delay). Declared by their wire properties (infra/arm.py): the
    typed class would compute 9 alias URNs for each, and a team of 20 has 40 of them.
    """
    return [
        declare(
            "azure-native:authorization:RoleAssignment",
            name,
            {
                "roleDefinitionId": role.definition_id if isinstance(role, CustomRole) else role_definition_id(subscription_id, role),
                "scope": scope,
                "principalId": principal_id,
                "principalType": principal_type.value,
                "description": f"{role.name if isinstance(role, CustomRole) else NAMES[role]}, granted by Pulumi",
                "name": None,  # ARM's answer: the assignment's GUID
            },
            pulumi.ResourceOptions(parent=parent),
        )
        for name, role, scope in grants
    ]
