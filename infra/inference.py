"""The Kubernetes inference cluster: AKS, the Azure ML extension, and its attachment to the workspace.

The legacy `AKS` compute type is gone: an AKS cluster serves Azure ML through the
`Microsoft.AzureML.Kubernetes` cluster extension and is attached as `Kubernetes` compute.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import pulumi
from pulumi_azure_native import containerservice, kubernetesconfiguration
from pulumi_azure_native import machinelearningservices as ml

from infra import roles
from infra.context import StackContext
from infra.workspace import Workspace

EXTENSION_NAME = "azureml"
EXTENSION_TYPE = "Microsoft.AzureML.Kubernetes"
# the extension installs itself (and creates this namespace) cluster-wide
EXTENSION_NAMESPACE = "azureml"
SYSTEM_POOL = "system"


def _flag(value: bool) -> str:
    return "True" if value else "False"  # the extension reads its settings as these strings


def _pem_base64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass(frozen=True)
class InferenceClusterArgs:
    stack: StackContext
    workspace: Workspace


class InferenceCluster(pulumi.ComponentResource):
    def __init__(self, name: str, args: InferenceClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("azureml-platform:infra:InferenceCluster", name, None, opts)
        stack, workspace = args.stack, args.workspace
        settings, names = stack.settings, stack.names
        aks_settings, inference = settings.aks, settings.inference

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
                type=containerservice.ResourceIdentityType.SYSTEM_ASSIGNED
            ),
            enable_rbac=True,
            # Entra ID sign-in and Azure RBAC for Kubernetes authorization; no local admin kubeconfig
            aad_profile=containerservice.ManagedClusterAADProfileArgs(
                managed=True, enable_azure_rbac=True, tenant_id=stack.tenant_id
            ),
            disable_local_accounts=True,
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
                )
            ],
            network_profile=containerservice.ContainerServiceNetworkProfileArgs(
                network_plugin=containerservice.NetworkPlugin.AZURE,
                network_plugin_mode=containerservice.NetworkPluginMode.OVERLAY,
            ),
            tags=settings.tags,
            # the autoscaler owns the node count once the cluster exists
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["agentPoolProfiles[0].count"]),
        )

        configuration = {
            "enableTraining": "False",  # training runs on AmlCompute
            "enableInference": "True",
            "inferenceRouterServiceType": inference.router_service_type,
            "allowInsecureConnections": _flag(inference.allow_insecure_connections),
            "inferenceRouterHA": _flag(inference.high_availability),
            "clusterPurpose": inference.cluster_purpose,
        }
        protected = None
        if not inference.allow_insecure_connections:
            configuration["sslCname"] = inference.ssl_cname
            protected = pulumi.Output.secret(
                {
                    "scoringFe.sslCert": _pem_base64(inference.tls_certificate),
                    "scoringFe.sslKey": _pem_base64(inference.tls_key),
                }
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
            configuration_settings=configuration,
            configuration_protected_settings=protected,
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

        instance_type = inference.instance_type
        self.instance_type_name = instance_type.name
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
                properties=ml.KubernetesPropertiesArgs(
                    namespace=inference.namespace,
                    default_instance_type=instance_type.name,
                    instance_types={
                        instance_type.name: ml.InstanceTypeSchemaArgs(
                            resources=ml.InstanceTypeSchemaResourcesArgs(
                                requests={"cpu": instance_type.cpu_request, "memory": instance_type.memory_request},
                                limits={"cpu": instance_type.cpu_limit, "memory": instance_type.memory_limit},
                            )
                        )
                    },
                ),
            ),
            tags=settings.tags,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[self.extension, *kubelet_grants],
                # an attachment cannot be updated in place; its name stays, so detach before re-attaching
                replace_on_changes=["properties"],
                delete_before_replace=True,
            ),
        )
        self.register_outputs({"kubernetes_compute_name": self.compute.name})
