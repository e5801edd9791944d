"""The stack's own virtual network (`network.isolated`): compute without public IPs, private endpoints for
the workspace and what it is built on, and the private DNS zones that resolve them inside the VNet.

Azure ML's managed network is no option here: "Kubernetes and attached VMs aren't supported in an Azure
Machine Learning managed virtual network." (Workspace managed network isolation, Limitations). This is the
design Azure documents instead ("Secure an Azure Machine Learning workspace with virtual networks"; "Secure
an Azure Machine Learning training environment with virtual networks"; "Secure Azure Kubernetes Service
inferencing environment"), and the one that holds AKS: "your workspace and its associated resources
(storage, key vault, Azure Container Registry) must have private endpoints or service endpoints in the same
or peered VNet as AKS cluster's VNet."
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from infra.arm import declare
from infra.context import StackContext
from infra.naming import Names
from infra.workspace import Workspace

# private link group -> the private DNS zones its records live in ("Azure Private Endpoint DNS configuration";
# amlworkspace: "Configure a private endpoint for an Azure Machine Learning workspace")
PRIVATE_DNS_ZONES = {
    "amlworkspace": ("privatelink.api.azureml.ms", "privatelink.notebooks.azure.net"),
    "blob": ("privatelink.blob.core.windows.net",),
    # "Port 445 must be open for private network communications between your compute instances and the
    # default storage account during training": the workspace's file share
    "file": ("privatelink.file.core.windows.net",),
    # batch deployments: "Ensure blob, file, queue, and table private endpoints are configured for the storage
    # accounts ... Batch deployments require all the four to properly work." (how-to-secure-batch-endpoint)
    "queue": ("privatelink.queue.core.windows.net",),
    "table": ("privatelink.table.core.windows.net",),
    "vault": ("privatelink.vaultcore.azure.net",),
    "registry": ("privatelink.azurecr.io",),
    # "Azure Machine Learning registry (Microsoft.MachineLearningServices/registries) | amlregistry |
    # privatelink.api.azureml.ms" (how-to-registry-network-isolation): the workspace's zone, no new one
    "amlregistry": ("privatelink.api.azureml.ms",),
}


STORAGE_GROUPS = ("blob", "file", "queue", "table")


@dataclass(frozen=True)
class PrivateNetworkArgs:
    stack: StackContext
    workspace: Workspace


class PrivateNetwork(pulumi.ComponentResource):
    def __init__(self, name: str, args: PrivateNetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("azureml-platform:infra:PrivateNetwork", name, None, opts)
        stack, workspace = args.stack, args.workspace
        settings, names, address = stack.settings, stack.names, stack.settings.network
        common = dict(resourceGroupName=stack.resource_group_name, location=settings.location, tags=settings.tags)
        child = pulumi.ResourceOptions(parent=self)

        # "If you use a compute cluster configured for no public IP address, you must provide some way for
        # the cluster to access the public internet" (image builds, pip/conda): a NAT gateway, the option the
        # training page recommends over default outbound access
        self.egress_ip = egress_ip = declare(
            "azure-native:network:PublicIPAddress",
            "nat-public-ip",
            {
                "publicIpAddressName": names.nat_public_ip,
                "sku": {"name": "Standard", "tier": "Regional"},
                "publicIPAllocationMethod": "Static",
                **common,
            },
            child,
        )
        nat = declare(
            "azure-native:network:NatGateway",
            "nat-gateway",
            {"natGatewayName": names.nat_gateway, "sku": {"name": "Standard"}, "publicIpAddresses": [{"id": egress_ip.id}], **common},
            child,
        )
        # subnets inline, so the VNet owns them (separate Subnet resources would fight it over `subnets`);
        # no default outbound access: each subnet's egress is explicit (NAT gateway; AKS's load balancer)
        self.vnet = declare(
            "azure-native:network:VirtualNetwork",
            "vnet",
            {
                "virtualNetworkName": names.virtual_network,
                "addressSpace": {"addressPrefixes": [address.address_space]},
                "subnets": [
                    {
                        "name": Names.TRAINING_SUBNET,
                        "addressPrefix": address.training_subnet,
                        "natGateway": {"id": nat.id},
                        "defaultOutboundAccess": False,
                        # compute without a public IP: Microsoft's secure workspace template disables it on its
                        # training subnet (azure-quickstart-templates, machine-learning-end-to-end-secure, vnet.bicep)
                        "privateLinkServiceNetworkPolicies": "Disabled",
                    },
                    {"name": Names.AKS_SUBNET, "addressPrefix": address.aks_subnet, "defaultOutboundAccess": False},
                    {
                        "name": Names.PRIVATE_ENDPOINT_SUBNET,
                        "addressPrefix": address.private_endpoint_subnet,
                        "defaultOutboundAccess": False,
                        # "Disable network policies for private endpoints before adding the private endpoint."
                        "privateEndpointNetworkPolicies": "Disabled",
                    },
                ],
                **common,
            },
            child,
        )
        self.training_subnet_id = self._subnet_id(Names.TRAINING_SUBNET)
        self.aks_subnet_id = self._subnet_id(Names.AKS_SUBNET)

        global_ = dict(resourceGroupName=stack.resource_group_name, tags=settings.tags)
        zones = {}
        for zone_name in sorted({zone for group in PRIVATE_DNS_ZONES.values() for zone in group}):
            zone = declare(
                "azure-native:privatedns:PrivateZone",
                f"dns-{zone_name}",
                # private DNS zones are global resources
                {"privateZoneName": zone_name, "location": "global", **global_},
                child,
            )
            declare(
                "azure-native:privatedns:VirtualNetworkLink",
                f"dns-link-{zone_name}",
                {
                    "virtualNetworkLinkName": names.virtual_network,
                    "privateZoneName": zone_name,
                    "virtualNetwork": {"id": self.vnet.id},
                    "registrationEnabled": False,
                    "location": "global",
                    **global_,
                },
                pulumi.ResourceOptions(parent=self, depends_on=[zone]),
            )
            zones[zone_name] = zone

        # target -> (resource, private link groups); storage needs all four: both shipped workloads serve in batch
        targets = {
            "workspace": (workspace.workspace, ("amlworkspace",)),
            "storage": (workspace.storage, STORAGE_GROUPS),
            "keyvault": (workspace.key_vault, ("vault",)),
            "registry": (workspace.registry, ("registry",)),
        }
        self._stack, self._zones = stack, zones
        # what compute in the VNet needs before its first start: "You must use a workspace private endpoint for
        # the compute resource to communicate with Azure Machine Learning services from the VNet."
        self.endpoints_ready: list[pulumi.Resource] = []
        for target, (resource, groups) in targets.items():
            for group in groups:
                self.endpoints_ready += self.connect(target, resource.id, group, self)
        self.register_outputs({"virtual_network_id": self.vnet.id})

    def connect(self, target: str, resource_id: pulumi.Input[str], group: str, parent: pulumi.Resource) -> list[pulumi.Resource]:
        """A private endpoint in the private endpoint subnet to one private link group of a resource, and its DNS
        records in the stack's zones for that group: the endpoint and its zone group."""
        stack = self._stack
        endpoint_name = stack.names.private_endpoint(target, group)
        endpoint = declare(
            "azure-native:network:PrivateEndpoint",
            f"pe-{target}-{group}",
            {
                "privateEndpointName": endpoint_name,
                "subnet": {"id": self._subnet_id(Names.PRIVATE_ENDPOINT_SUBNET)},
                "privateLinkServiceConnections": [{"name": endpoint_name, "privateLinkServiceId": resource_id, "groupIds": [group]}],
                "resourceGroupName": stack.resource_group_name,
                "location": stack.settings.location,
                "tags": stack.settings.tags,
            },
            pulumi.ResourceOptions(parent=parent),
        )
        dns = declare(
            "azure-native:network:PrivateDnsZoneGroup",
            f"pe-{target}-{group}-dns",
            {
                "privateDnsZoneGroupName": "default",
                "privateEndpointName": endpoint_name,
                "resourceGroupName": stack.resource_group_name,
                "privateDnsZoneConfigs": [
                    {"name": zone.replace(".", "-"), "privateDnsZoneId": self._zones[zone].id} for zone in PRIVATE_DNS_ZONES[group]
                ],
            },
            pulumi.ResourceOptions(parent=parent, depends_on=[endpoint]),
        )
        return [endpoint, dns]

    def _subnet_id(self, subnet: str) -> pulumi.Output[str]:
        return pulumi.Output.concat(self.vnet.id, "/subnets/", subnet)
