"""AmlCompute training clusters: CPU always, GPU behind a per-environment switch (GPU quota is often zero).

In an isolated stack they run in the VNet's training subnet without public IPs, and start only once the
private endpoints they reach the workspace through exist.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_azure_native import machinelearningservices as ml

from infra import roles
from infra.context import StackContext
from infra.network import PrivateNetwork
from infra.settings import ClusterSettings
from infra.workspace import Workspace


@dataclass(frozen=True)
class TrainingClustersArgs:
    stack: StackContext
    workspace: Workspace
    network: PrivateNetwork | None  # None: no VNet, nodes with public IPs (inbound closed)


class TrainingClusters(pulumi.ComponentResource):
    def __init__(self, name: str, args: TrainingClustersArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("azureml-platform:infra:TrainingClusters", name, None, opts)
        self._args = args
        names, settings = args.stack.names, args.stack.settings
        self.cpu = self._cluster("cpu", names.cpu_cluster, settings.cpu_cluster)
        gpu = settings.gpu_cluster
        self.gpu = self._cluster("gpu", names.gpu_cluster, gpu.cluster) if gpu.enabled else None
        self.register_outputs({"cpu_cluster_name": self.cpu.name})

    def _cluster(self, kind: str, compute_name: str, cluster: ClusterSettings) -> ml.Compute:
        stack, workspace, vnet = self._args.stack, self._args.workspace, self._args.network
        settings = stack.settings
        compute = ml.Compute(
            f"{kind}-cluster",
            compute_name=compute_name,
            resource_group_name=stack.resource_group_name,
            workspace_name=workspace.workspace.name,
            location=settings.location,
            # the cluster's own identity pulls images from the registry, whose admin user is off
            identity=ml.ManagedServiceIdentityArgs(type=ml.ManagedServiceIdentityType.SYSTEM_ASSIGNED),
            properties=ml.AmlComputeArgs(
                compute_type="AmlCompute",
                description=f"{kind.upper()} training cluster",
                disable_local_auth=True,
                properties=ml.AmlComputePropertiesArgs(
                    vm_size=cluster.vm_size,
                    vm_priority=ml.VmPriority.LOW_PRIORITY if cluster.low_priority else ml.VmPriority.DEDICATED,
                    os_type=ml.OsType.LINUX,
                    scale_settings=ml.ScaleSettingsArgs(
                        min_node_count=cluster.min_nodes,
                        max_node_count=cluster.max_nodes,
                        node_idle_time_before_scale_down=f"PT{cluster.idle_seconds_before_scale_down}S",
                    ),
                    remote_login_port_public_access=ml.RemoteLoginPortPublicAccess.DISABLED,
                    # nodes without public IPs need a subnet of a VNet; outside one, Azure requires them
                    subnet=ml.ResourceIdArgs(id=vnet.training_subnet_id) if vnet else None,
                    enable_node_public_ip=vnet is None,
                ),
            ),
            tags=settings.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=vnet.endpoints_ready if vnet else None),
        )
        # AcrPull is Azure's own grant: "A managed identity is automatically granted ACRPull role on workspace
        # ACR" (Set up authentication between Azure Machine Learning and other services). Data access is not.
        roles.grant_all(
            (
                (f"{kind}-blob-data", roles.STORAGE_BLOB_DATA_CONTRIBUTOR, workspace.storage.id),  # inputs, outputs
            ),
            principal_id=compute.identity.apply(lambda identity: identity.principal_id),
            subscription_id=stack.subscription_id,
            parent=self,
        )
        return compute
