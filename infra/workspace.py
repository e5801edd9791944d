"""The Azure ML workspace and what it is built on: logs, storage, Key Vault, registry."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_azure_native import applicationinsights, containerregistry, keyvault, operationalinsights, storage
from pulumi_azure_native import machinelearningservices as ml

from infra import roles
from infra.context import StackContext


@dataclass(frozen=True)
class WorkspaceArgs:
    stack: StackContext


class Workspace(pulumi.ComponentResource):
    def __init__(self, name: str, args: WorkspaceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("azureml-platform:infra:Workspace", name, None, opts)
        stack = args.stack
        settings, names = stack.settings, stack.names
        common = dict(resource_group_name=stack.resource_group_name, location=settings.location, tags=settings.tags)
        child = pulumi.ResourceOptions(parent=self)
        # stateful: losing one loses data, models or secrets, so prod protects them
        stateful = pulumi.ResourceOptions(parent=self, protect=settings.protect)

        logs = operationalinsights.Workspace(
            "logs",
            workspace_name=names.log_analytics,
            sku=operationalinsights.WorkspaceSkuArgs(name=operationalinsights.WorkspaceSkuNameEnum.PER_GB2018),
            retention_in_days=settings.log_retention_days,
            **common,
            opts=child,
        )
        # workspace-based: classic Application Insights is retired
        self.app_insights = applicationinsights.Component(
            "app-insights",
            resource_name_=names.app_insights,
            kind="web",
            application_type=applicationinsights.ApplicationType.WEB,
            workspace_resource_id=logs.id,
            ingestion_mode=applicationinsights.IngestionMode.LOG_ANALYTICS,
            **common,
            opts=child,
        )
        self.storage = storage.StorageAccount(
            "storage",
            account_name=names.storage_account,
            kind=storage.Kind.STORAGE_V2,
            sku=storage.SkuArgs(name=storage.SkuName.STANDARD_LRS),
            minimum_tls_version=storage.MinimumTlsVersion.TLS1_2,
            enable_https_traffic_only=True,
            allow_blob_public_access=False,
            allow_cross_tenant_replication=False,
            # shared keys stay on: the workspace's default datastores authenticate with the account key
            **common,
            opts=stateful,
        )
        self.key_vault = keyvault.Vault(
            "key-vault",
            vault_name=names.key_vault,
            properties=keyvault.VaultPropertiesArgs(
                tenant_id=stack.tenant_id,
                sku=keyvault.SkuArgs(family=keyvault.SkuFamily.A, name=keyvault.SkuName.STANDARD),
                enable_rbac_authorization=True,
                enable_soft_delete=True,
                soft_delete_retention_in_days=settings.key_vault.soft_delete_retention_days,
                # None, not False: Azure refuses to switch purge protection off once set
                enable_purge_protection=True if settings.key_vault.purge_protection else None,
            ),
            **common,
            opts=stateful,
        )
        self.registry = containerregistry.Registry(
            "registry",
            registry_name=names.registry,
            sku=containerregistry.SkuArgs(name=settings.registry_sku),
            admin_user_enabled=False,
            **common,
            opts=stateful,
        )
        self.workspace = ml.Workspace(
            "workspace",
            workspace_name=names.workspace,
            friendly_name=f"{settings.project} ({settings.stack})",
            identity=ml.ManagedServiceIdentityArgs(type=ml.ManagedServiceIdentityType.SYSTEM_ASSIGNED),
            storage_account=self.storage.id,
            key_vault=self.key_vault.id,
            application_insights=self.app_insights.id,
            container_registry=self.registry.id,
            v1_legacy_mode=False,
            public_network_access=settings.workspace.public_network_access,
            managed_network=ml.ManagedNetworkSettingsArgs(isolation_mode=settings.workspace.isolation_mode),
            sku=ml.SkuArgs(name="Basic", tier="Basic"),
            **common,
            opts=stateful,
        )
        self.principal_id = self.workspace.identity.apply(lambda identity: identity.principal_id)

        # what the workspace identity needs to run jobs and build environments
        roles.grant_all(
            (
                ("workspace-blob-data", roles.STORAGE_BLOB_DATA_CONTRIBUTOR, self.storage.id),  # datastores, outputs
                ("workspace-file-data", roles.STORAGE_FILE_DATA_PRIVILEGED_CONTRIBUTOR, self.storage.id),  # snapshots
                ("workspace-secrets", roles.KEY_VAULT_SECRETS_OFFICER, self.key_vault.id),  # connection secrets
                ("workspace-image-push", roles.ACR_PUSH, self.registry.id),  # builds environment images
            ),
            principal_id=self.principal_id,
            subscription_id=stack.subscription_id,
            parent=self,
        )
        self.register_outputs({"workspace_name": self.workspace.name})
