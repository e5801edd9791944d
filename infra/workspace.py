"""The Azure ML workspace and what it is built on: logs, storage, Key Vault, registry."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_azure_native import applicationinsights, containerregistry, keyvault, operationalinsights, storage
from pulumi_azure_native import machinelearningservices as ml

from infra import roles
from infra.context import StackContext


SOFT_DELETE_DAYS = 7
SAS_EXPIRATION_PERIOD = "7.00:00:00"  # DD.HH:MM:SS


@dataclass(frozen=True)
class WorkspaceArgs:
    stack: StackContext


def _storage_ip_rule(item: str) -> str:
    """Storage takes single addresses for /32 ("Small address ranges using /31 or /32 prefix sizes are not
    supported. Configure these ranges using individual IP address rules.")."""
    return item.removesuffix("/32")


class Workspace(pulumi.ComponentResource):
    def __init__(self, name: str, args: WorkspaceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("azureml-platform:infra:Workspace", name, None, opts)
        stack = args.stack
        settings, names = stack.settings, stack.names
        common = dict(resource_group_name=stack.resource_group_name, location=settings.location, tags=settings.tags)
        child = pulumi.ResourceOptions(parent=self)
        # stateful: losing one loses data, models or secrets, so prod protects them
        stateful = pulumi.ResourceOptions(parent=self, protect=settings.protect)

        self.logs = operationalinsights.Workspace(
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
            workspace_resource_id=self.logs.id,
            ingestion_mode=applicationinsights.IngestionMode.LOG_ANALYTICS,
            **common,
            opts=child,
        )
        isolated = settings.network.isolated
        # the workspace's ARM ID, known before it exists: storage names it in a resource instance rule, and
        # the workspace needs the storage account first
        workspace_id = pulumi.Output.concat(
            "/subscriptions/", stack.subscription_id, "/resourceGroups/", stack.resource_group_name,
            "/providers/Microsoft.MachineLearningServices/workspaces/", names.workspace,
        )  # fmt: skip
        self.storage = storage.StorageAccount(
            "storage",
            account_name=names.storage_account,
            kind=storage.Kind.STORAGE_V2,
            sku=storage.SkuArgs(name=settings.storage_sku),
            minimum_tls_version=storage.MinimumTlsVersion.TLS1_2,
            enable_https_traffic_only=True,
            allow_blob_public_access=False,
            allow_cross_tenant_replication=False,
            # a SAS valid for more than 7 days, or without a start, is refused: Azure Policy's "Storage SAS tokens
            # should adhere to 7 day maximum validity" denies any other policy, and "Out-of-policy SAS are those
            # which do not have a signed start or have a validity interval larger than the upper limit" (Create an
            # SAS expiration policy). A client that signs one without a start (azure-ai-ml's log listing on a
            # key-based datastore does) gets 403 (docs/security.md, "Azure Policy")
            sas_policy=storage.SasPolicyArgs(sas_expiration_period=SAS_EXPIRATION_PERIOD, expiration_action="Block"),
            # a second layer of encryption below the service's: "must configure ... at the time that you create the
            # account" (Enable infrastructure encryption), so an existing account keeps what it has (docs/security.md, "Azure Policy")
            encryption=storage.EncryptionArgs(key_source="Microsoft.Storage", require_infrastructure_encryption=True),
            public_network_access="Enabled",
            # isolated: the VNet comes through private endpoints; the workspace through a resource instance
            # rule ("Resource instances ... Microsoft.MachineLearningServices/Workspace", Secure an Azure Machine
            # Learning workspace with virtual networks); SDK clients outside only from allowed IP ranges
            network_rule_set=storage.NetworkRuleSetArgs(
                default_action="Deny" if isolated else "Allow",
                bypass="AzureServices",
                ip_rules=[storage.IPRuleArgs(i_p_address_or_range=_storage_ip_rule(item)) for item in settings.network.allowed_ip_ranges],
                resource_access_rules=(
                    [storage.ResourceAccessRuleArgs(resource_id=workspace_id, tenant_id=stack.tenant_id)] if isolated else []
                ),
            ),
            # shared keys stay on: the workspace's default datastores authenticate with the account key
            **common,
            opts=pulumi.ResourceOptions.merge(stateful, pulumi.ResourceOptions(ignore_changes=["encryption.requireInfrastructureEncryption"])),
        )
        # deleted blobs and containers stay recoverable for a week: the retention Azure Policy's "Configure soft
        # delete for blobs and containers" deploys (blobRetentionDays, containerRetentionDays: 7)
        self.blob_service = storage.BlobServiceProperties(
            "blob-service",
            account_name=self.storage.name,
            resource_group_name=stack.resource_group_name,
            blob_services_name="default",
            delete_retention_policy=storage.DeleteRetentionPolicyArgs(enabled=True, days=SOFT_DELETE_DAYS),
            container_delete_retention_policy=storage.DeleteRetentionPolicyArgs(enabled=True, days=SOFT_DELETE_DAYS),
            opts=child,
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
                # nothing outside reads secrets: Azure ML is a trusted service ("Azure Machine Learning" in Key
                # Vault's trusted services list), the VNet has its private endpoint, and secrets written through
                # ARM are "not affected by firewalls and virtual network rules" (Key Vault network security)
                network_acls=keyvault.NetworkRuleSetArgs(default_action="Deny", bypass="AzureServices"),
            ),
            **common,
            opts=stateful,
        )
        # firewall and zone redundancy are Premium features; Basic and Standard stay as Azure makes them
        premium = settings.registry_sku == "Premium"
        self.registry = containerregistry.Registry(
            "registry",
            registry_name=names.registry,
            sku=containerregistry.SkuArgs(name=settings.registry_sku),
            admin_user_enabled=False,
            public_network_access="Enabled",
            # "Configure the ACR for the workspace to Allow access by trusted services." (Secure an Azure Machine
            # Learning workspace with virtual networks)
            network_rule_bypass_options="AzureServices",
            network_rule_set=containerregistry.NetworkRuleSetArgs(default_action="Deny") if premium and isolated else None,
            zone_redundancy="Enabled" if settings.registry_zone_redundancy else "Disabled",
            **common,
            # zone redundancy is set when a registry is created: an existing one keeps what it has (docs/platform-engineers.md, "Zone redundancy of the registry")
            opts=pulumi.ResourceOptions.merge(stateful, pulumi.ResourceOptions(ignore_changes=["zoneRedundancy"])),
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
            # "If your workspace-dependent resources are network restricted, use an image-build-compute instead"
            # of the serverless build, which "works only when ... not under any network restriction"
            image_build_compute=names.cpu_cluster if isolated else None,
            sku=ml.SkuArgs(name="Basic", tier="Basic"),
            **common,
            opts=stateful,
        )
        self.principal_id = self.workspace.identity.apply(lambda identity: identity.principal_id)

        # Azure grants the workspace's system identity its own roles ("Managed by Microsoft"): Azure AI
        # Administrator on the resource group (control plane of storage, vault, registry, App Insights) and
        # Storage Blob Data Contributor on its storage; declaring one again is a 409 RoleAssignmentExists
        # (infra/constraints.py). No source lists a Key Vault data role for an RBAC vault, which the workspace
        # needs for its connection and datastore secrets: that one grant is ours.
        roles.grant_all(
            (("workspace-secrets", roles.KEY_VAULT_SECRETS_OFFICER, self.key_vault.id),),
            principal_id=self.principal_id,
            subscription_id=stack.subscription_id,
            parent=self,
        )
        self.register_outputs({"workspace_name": self.workspace.name})
