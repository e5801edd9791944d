"""Azure built-in roles the platform grants, and the one way it grants them."""

from __future__ import annotations

from typing import Iterable

import pulumi
from pulumi_azure_native import authorization

# built-in role definition IDs (the same in every Azure tenant)
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
AZUREML_DATA_SCIENTIST = "f6c7c914-8db3-469d-8ca1-694a8f32e121"
KEY_VAULT_SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
NETWORK_CONTRIBUTOR = "4d97b98b-1d4f-4787-a291-c67834d212e7"
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
STORAGE_BLOB_DATA_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"

NAMES = {
    ACR_PULL: "AcrPull",
    AZUREML_DATA_SCIENTIST: "AzureML Data Scientist",
    KEY_VAULT_SECRETS_OFFICER: "Key Vault Secrets Officer",
    NETWORK_CONTRIBUTOR: "Network Contributor",
    STORAGE_BLOB_DATA_CONTRIBUTOR: "Storage Blob Data Contributor",
    STORAGE_BLOB_DATA_READER: "Storage Blob Data Reader",
}


def role_definition_id(subscription_id: pulumi.Input[str], role: str) -> pulumi.Output[str]:
    return pulumi.Output.concat(
        "/subscriptions/", subscription_id, "/providers/Microsoft.Authorization/roleDefinitions/", role
    )


def grant_all(
    grants: Iterable[tuple[str, str, pulumi.Input[str]]],
    *,
    principal_id: pulumi.Input[str],
    subscription_id: pulumi.Input[str],
    parent: pulumi.Resource,
) -> list[authorization.RoleAssignment]:
    """One role assignment per (resource name, role, scope) for a service principal or managed identity.

    principalType is set so that ARM does not look the principal up in Entra ID, which fails for
    an identity created seconds earlier (replication delay).
    """
    return [
        authorization.RoleAssignment(
            name,
            role_definition_id=role_definition_id(subscription_id, role),
            scope=scope,
            principal_id=principal_id,
            principal_type=authorization.PrincipalType.SERVICE_PRINCIPAL,
            description=f"{NAMES[role]}, granted by Pulumi",
            opts=pulumi.ResourceOptions(parent=parent),
        )
        for name, role, scope in grants
    ]
