"""The automation identity: what CI and the post-provision stage (`python -m jobs`) sign in as.

GitHub Actions signs in through OIDC (a federated credential for one repository environment), so
by default no long-lived secret exists. A client secret is made only when config asks for one, and
then lives only as a Pulumi secret and in the stack's Key Vault.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_azuread as azuread
from pulumi_azure_native import keyvault

from infra import roles
from infra.context import StackContext
from infra.workspace import Workspace

GITHUB_OIDC_ISSUER = "https://token.actions.githubusercontent.com"
ENTRA_TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
# rotate by replacing the password (`pulumi up --replace`) well before it lapses
CLIENT_SECRET_LIFETIME = "4320h"  # 180 days
CLIENT_SECRET_NAME = "automation-client-secret"


@dataclass(frozen=True)
class AutomationIdentityArgs:
    stack: StackContext
    workspace: Workspace
    # the deployer: owns the application, so it can rotate its credentials
    owner_object_id: pulumi.Input[str]


class AutomationIdentity(pulumi.ComponentResource):
    def __init__(self, name: str, args: AutomationIdentityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("azureml-platform:infra:AutomationIdentity", name, None, opts)
        stack, workspace = args.stack, args.workspace
        settings = stack.settings
        child = pulumi.ResourceOptions(parent=self)
        self.application = azuread.Application(
            "application",
            display_name=stack.names.automation_app,
            owners=[args.owner_object_id],
            sign_in_audience="AzureADMyOrg",
            tags=settings.entra_tags,
            opts=child,
        )
        self.service_principal = azuread.ServicePrincipal(
            "service-principal",
            client_id=self.application.client_id,
            owners=[args.owner_object_id],
            tags=settings.entra_tags,
            opts=child,
        )
        azuread.ApplicationFederatedIdentityCredential(
            "github-oidc",
            application_id=self.application.id,
            display_name=f"github-{settings.github_environment}",
            description=f"GitHub Actions, environment {settings.github_environment} of {settings.github_repository}",
            issuer=GITHUB_OIDC_ISSUER,
            audiences=[ENTRA_TOKEN_EXCHANGE_AUDIENCE],
            subject=settings.oidc_subject,
            opts=child,
        )
        self.client_secret: pulumi.Output[str] | None = None
        if settings.create_client_secret:
            password = azuread.ApplicationPassword(
                "client-secret",
                application_id=self.application.id,
                display_name="post-provision stage",
                end_date_relative=CLIENT_SECRET_LIFETIME,
                opts=child,
            )
            self.client_secret = pulumi.Output.secret(password.value)
            keyvault.Secret(
                "client-secret-in-key-vault",
                resource_group_name=stack.resource_group_name,
                vault_name=workspace.key_vault.name,
                secret_name=CLIENT_SECRET_NAME,
                properties=keyvault.SecretPropertiesArgs(value=self.client_secret, content_type="client secret"),
                tags=settings.tags,
                opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["properties"]),
            )

        # least privilege: this workspace (and its storage account) only, nothing wider than the group
        roles.grant_all(
            (
                # jobs, data/model/environment assets, online endpoints and deployments, logs; no compute or
                # workspace changes
                ("automation-workspace", roles.AZUREML_DATA_SCIENTIST, workspace.workspace.id),
                # uploads local data and code to the default datastore; reads job outputs and logs
                ("automation-blob-data", roles.STORAGE_BLOB_DATA_CONTRIBUTOR, workspace.storage.id),
            ),
            principal_id=self.service_principal.object_id,
            subscription_id=stack.subscription_id,
            parent=self,
        )
        self.register_outputs({"client_id": self.application.client_id})
