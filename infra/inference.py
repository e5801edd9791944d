"""The Kubernetes inference cluster: AKS, the Azure ML extension, its instance types, and its attachment to
the workspace.

The legacy `AKS` compute type is gone: an AKS cluster serves Azure ML through the
`Microsoft.AzureML.Kubernetes` cluster extension and is attached as `Kubernetes` compute.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as kubernetes
from pulumi_azure_native import containerservice, kubernetesconfiguration, managedidentity
from pulumi_azure_native import machinelearningservices as ml
from pulumi_kubernetes.apiextensions import CustomResource

from infra import roles, settings as stack_settings
from infra.context import StackContext
from infra.network import PrivateNetwork
from infra.workspace import Workspace

EXTENSION_NAME = "azureml"
EXTENSION_TYPE = "Microsoft.AzureML.Kubernetes"
# the extension installs itself (and creates this namespace) cluster-wide; `az k8s-extension create` forces it
EXTENSION_NAMESPACE = "azureml"
SYSTEM_POOL = "system"
# "In Kubernetes clusters, instance types are represented as a custom resource definition (CRD) installed with
# the Azure Machine Learning extension." (Create and manage instance types)
INSTANCE_TYPE_API_VERSION = "amlarc.azureml.com/v1alpha1"
# the interval Azure Policy's "Deploy Image Cleaner on Azure Kubernetes Service" sets (defaultIntervalHours)
IMAGE_CLEANER_HOURS = 24


def _flag(value: bool) -> str:
    return "True" if value else "False"  # the extension reads its settings as these strings


def _pem_base64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _decoded(kubeconfigs) -> str:
    return base64.b64decode(kubeconfigs[0].value).decode()


@dataclass(frozen=True)
class InferenceClusterArgs:
    stack: StackContext
    workspace: Workspace
    network: PrivateNetwork | None  # None: AKS makes its own VNet


class InferenceCluster(pulumi.ComponentResource):
    def __init__(self, name: str, args: InferenceClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("azureml-platform:infra:InferenceCluster", name, None, opts)
        stack, workspace, vnet = args.stack, args.workspace, args.network
        settings, names = stack.settings, stack.names
        aks_settings, inference = settings.aks, settings.inference

        # the control plane's identity exists before the cluster, so it can hold its subnet role when the cluster
        # is created: "The cluster identity used by the AKS cluster must have at least Network Contributor
        # permissions on the subnet within your virtual network." (Azure CNI networking concepts)
        identity = managedidentity.UserAssignedIdentity(
            "aks-identity",
            resource_name_=names.aks_identity,
            resource_group_name=stack.resource_group_name,
            location=settings.location,
            tags=settings.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        subnet_grants = []
        if vnet is not None:
            subnet_grants = roles.grant_all(
                (("aks-subnet-network", roles.NETWORK_CONTRIBUTOR, vnet.aks_subnet_id),),
                principal_id=identity.principal_id,
                subscription_id=stack.subscription_id,
                parent=self,
            )

        self.cluster = containerservice.ManagedCluster(
            "aks",
            resource_name_=names.aks,
            resource_group_name=stack.resource_group_name,
            location=settings.location,
            dns_prefix=names.aks_dns_prefix,
            kubernetes_version=aks_settings.kubernetes_version,
            sku=containerservice.ManagedClusterSKUArgs(
                name=containerservice.ManagedClusterSKUName.BASE, tier=aks_settings.tier
            ),
            identity=containerservice.ManagedClusterIdentityArgs(
                type=containerservice.ResourceIdentityType.USER_ASSIGNED, user_assigned_identities=[identity.id]
            ),
            enable_rbac=True,
            # Entra ID sign-in and Azure RBAC for Kubernetes authorization. Local accounts stay enabled: "Disabling
            # local accounts for AKS is not supported by Azure Machine Learning." (Azure ML extension, Limitations)
            aad_profile=containerservice.ManagedClusterAADProfileArgs(
                managed=True, enable_azure_rbac=True, tenant_id=stack.tenant_id
            ),
            disable_local_accounts=False,
            # patch releases of the minor version it runs, and a newly patched node image each week
            auto_upgrade_profile=containerservice.ManagedClusterAutoUpgradeProfileArgs(
                upgrade_channel=containerservice.UpgradeChannel.PATCH,
                node_os_upgrade_channel=containerservice.NodeOSUpgradeChannel.NODE_IMAGE,
            ),
            # no `az aks command invoke`: the deployer reaches the API server with its own credentials
            api_server_access_profile=containerservice.ManagedClusterAPIServerAccessProfileArgs(
                authorized_ip_ranges=list(aks_settings.authorized_ip_ranges) or None, disable_run_command=True
            ),
            addon_profiles={
                # the Azure Policy add-on: enforces the enterprise's Kubernetes policies in the cluster (the key is
                # the one its built-in DeployIfNotExists definition and `az aks show` use)
                "azurepolicy": containerservice.ManagedClusterAddonProfileArgs(enabled=True),
                # Container Insights into the stack's Log Analytics workspace, signing in with Entra ID
                **({"omsagent": containerservice.ManagedClusterAddonProfileArgs(
                    enabled=True, config={"logAnalyticsWorkspaceResourceID": workspace.logs.id, "useAADAuth": "true"},
                )} if aks_settings.container_insights else {}),
            },  # fmt: skip
            # the OIDC issuer and workload identity (pods sign in as managed identities, no secrets); Image Cleaner
            # removes unused, vulnerable images from the nodes; Defender's sensor reports to the stack's workspace
            oidc_issuer_profile=containerservice.ManagedClusterOIDCIssuerProfileArgs(enabled=True),
            security_profile=containerservice.ManagedClusterSecurityProfileArgs(
                workload_identity=containerservice.ManagedClusterSecurityProfileWorkloadIdentityArgs(enabled=True),
                image_cleaner=containerservice.ManagedClusterSecurityProfileImageCleanerArgs(
                    enabled=True, interval_hours=IMAGE_CLEANER_HOURS
                ),
                defender=containerservice.ManagedClusterSecurityProfileDefenderArgs(
                    log_analytics_workspace_resource_id=workspace.logs.id,
                    security_monitoring=containerservice.ManagedClusterSecurityProfileDefenderSecurityMonitoringArgs(enabled=True),
                ) if aks_settings.defender else None,
            ),  # fmt: skip
            agent_pool_profiles=[
                containerservice.ManagedClusterAgentPoolProfileArgs(
                    name=SYSTEM_POOL,
                    mode=containerservice.AgentPoolMode.SYSTEM,
                    vm_size=aks_settings.vm_size,
                    os_type=containerservice.OSType.LINUX,
                    type=containerservice.AgentPoolType.VIRTUAL_MACHINE_SCALE_SETS,
                    enable_auto_scaling=True,
                    min_count=aks_settings.min_nodes,
                    max_count=aks_settings.max_nodes,
                    count=aks_settings.min_nodes,
                    # "can only be set at cluster or node pool creation time" (Host-based encryption on AKS)
                    enable_encryption_at_host=aks_settings.encryption_at_host,
                    vnet_subnet_id=vnet.aks_subnet_id if vnet else None,
                    # no SSH server on the nodes ("SSH service will be turned off on the node")
                    security_profile=containerservice.AgentPoolSecurityProfileArgs(ssh_access=containerservice.AgentPoolSSHAccess.DISABLED),
                )
            ],
            # Azure CNI overlay with Cilium as the data plane and the network policy engine ("Cilium is our
            # recommended Network Policy engine"); pods and services outside the VNet's ranges
            network_profile=containerservice.ContainerServiceNetworkProfileArgs(
                network_plugin=containerservice.NetworkPlugin.AZURE,
                network_plugin_mode=containerservice.NetworkPluginMode.OVERLAY,
                network_dataplane=containerservice.NetworkDataplane.CILIUM,
                network_policy=containerservice.NetworkPolicy.CILIUM,
                pod_cidr=str(stack_settings.AKS_POD_CIDR),
                service_cidr=str(stack_settings.AKS_SERVICE_CIDR),
                dns_service_ip=stack_settings.AKS_DNS_SERVICE_IP,
                load_balancer_sku=containerservice.LoadBalancerSku.STANDARD,
                outbound_type=containerservice.OutboundType.LOAD_BALANCER,
            ),
            tags=settings.tags,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[*subnet_grants, *(vnet.endpoints_ready if vnet else [])],
                # the autoscaler owns the node count once the cluster exists
                ignore_changes=["agentPoolProfiles[0].count"],
            ),
        )

        self.extension = kubernetesconfiguration.Extension(
            "azureml-extension",
            extension_name=EXTENSION_NAME,
            extension_type=EXTENSION_TYPE,
            cluster_name=self.cluster.name,
            cluster_resource_name="managedClusters",
            cluster_rp="Microsoft.ContainerService",
            resource_group_name=stack.resource_group_name,
            release_train="stable",
            auto_upgrade_minor_version=True,
            scope=kubernetesconfiguration.ScopeArgs(
                cluster=kubernetesconfiguration.ScopeClusterArgs(release_namespace=EXTENSION_NAMESPACE)
            ),
            # no extension identity: `az k8s-extension create` gives one only to Arc clusters ("We do not create
            # any identities for managedClusters", azure-cli-extensions k8s_extension/custom.py)
            configuration_settings=self._configuration(stack),
            configuration_protected_settings=self._protected_configuration(stack),
            opts=pulumi.ResourceOptions(parent=self),
        )

        # the nodes pull the deployment images and download the models
        kubelet_grants = roles.grant_all(
            (
                ("kubelet-image-pull", roles.ACR_PULL, workspace.registry.id),
                ("kubelet-model-read", roles.STORAGE_BLOB_DATA_READER, workspace.storage.id),
            ),
            principal_id=self.cluster.identity_profile.apply(lambda profile: profile["kubeletidentity"].object_id),
            subscription_id=stack.subscription_id,
            parent=self,
        )

        self.instance_type = self._instance_type(stack, names)
        self.instance_type_name = inference.instance_type.name
        self.compute = ml.Compute(
            "kubernetes-compute",
            compute_name=names.kubernetes_compute,
            resource_group_name=stack.resource_group_name,
            workspace_name=workspace.workspace.name,
            location=settings.location,
            properties=ml.KubernetesArgs(
                compute_type="Kubernetes",
                resource_id=self.cluster.id,
                description="AKS inference cluster (Azure ML extension)",
                properties=ml.KubernetesPropertiesArgs(namespace=inference.namespace),
            ),
            tags=settings.tags,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[self.extension, self.instance_type, *kubelet_grants],
                # an attachment cannot be updated in place; its name stays, so detach before re-attaching
                replace_on_changes=["properties"],
                delete_before_replace=True,
            ),
        )
        self.register_outputs({"kubernetes_compute_name": self.compute.name})

    def _configuration(self, stack: StackContext) -> dict:
        """What `az k8s-extension create --extension-type Microsoft.AzureML.Kubernetes` sends for an AKS cluster
        (azure-cli-extensions, partner_extensions/AzureMLKubernetes.py), plus the router settings of the stack."""
        inference, location = stack.settings.inference, stack.settings.location
        configuration = {
            "enableTraining": "False",  # training runs on AmlCompute
            "enableInference": "True",
            "inferenceRouterServiceType": inference.router_service_type,
            "allowInsecureConnections": _flag(inference.allow_insecure_connections),
            "inferenceRouterHA": _flag(inference.high_availability),
            "clusterPurpose": inference.cluster_purpose,
            # the CLI fills these from the cluster: clusterId and the Prometheus label from `cluster_name`
            # (its ARM ID), the location for the job scheduler too, and the AKS defaults for relay and ingress
            "cluster_name": self.cluster.id,
            "clusterId": self.cluster.id,
            "prometheus.prometheusSpec.externalLabels.cluster_name": self.cluster.id,
            "cluster_name_friendly": self.cluster.name,
            "domain": f"{location}.cloudapp.azure.com",
            "location": location,
            "jobSchedulerLocation": location,
            "servicebus.enabled": "false",
            "relayserver.enabled": "false",
            "nginxIngress.enabled": "true",
        }
        if not inference.allow_insecure_connections:
            configuration["sslCname"] = inference.ssl_cname
        return configuration

    @staticmethod
    def _protected_configuration(stack: StackContext) -> pulumi.Output | None:
        """The router's TLS certificate and key, base64 PEM text as the CLI sends them; only ever a secret."""
        inference = stack.settings.inference
        if inference.allow_insecure_connections:
            return None
        return pulumi.Output.secret(
            {"scoringFe.sslCert": _pem_base64(inference.tls_certificate), "scoringFe.sslKey": _pem_base64(inference.tls_key)}
        )

    def _instance_type(self, stack: StackContext, names) -> CustomResource:
        """The deployments' instance type, created as the custom resource the page documents: no source says the
        compute's `instanceTypes` property creates one, and `kubectl apply` of this resource is the documented
        way ("To create a new instance type, create a new custom resource for the instance type CRD")."""
        instance = stack.settings.inference.instance_type
        # Local accounts are on (the extension needs them), so the deployer, who may list the cluster's admin
        # credentials, reaches the API server. A preview never asks for them: the read-only previewer may not,
        # and with an unknown kubeconfig the provider previews without contacting the cluster.
        if pulumi.runtime.is_dry_run():
            kubeconfig = pulumi.Output.from_input(pulumi.output.UNKNOWN)
        else:
            credentials = containerservice.list_managed_cluster_admin_credentials_output(
                resource_group_name=stack.resource_group_name, resource_name=self.cluster.name
            )
            kubeconfig = credentials.kubeconfigs.apply(_decoded)
        provider = kubernetes.Provider(
            "aks-provider",
            kubeconfig=pulumi.Output.secret(kubeconfig),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.cluster]),
        )
        return CustomResource(
            "instance-type",
            api_version=INSTANCE_TYPE_API_VERSION,
            kind="InstanceType",
            metadata={"name": instance.name, "labels": stack.settings.tags},
            spec={
                "resources": {
                    "requests": {"cpu": instance.cpu_request, "memory": instance.memory_request},
                    "limits": {"cpu": instance.cpu_limit, "memory": instance.memory_limit},
                }
            },
            # the CRD comes with the extension
            opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[self.extension]),
        )
