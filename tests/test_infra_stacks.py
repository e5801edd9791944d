"""The real program, run under Pulumi mocks with each stack file's config: what every stack provisions."""

import base64
import json

import pulumi
import pytest

from infra import roles
from infra.network import PRIVATE_DNS_ZONES
from infra.settings import parse
from stack_harness import (
    FAKE_PEM,
    PlatformMocks,
    RecordingMonitor,
    evaluate,
    fake_kubeconfig,
    is_secret,
    reveal,
    run_stack,
    stack_config,
    stack_names,
    with_setting,
)

STACKS = stack_names()
ML = "azure-native:machinelearningservices"
NETWORK = "azure-native:network"
AKS = "azure-native:containerservice:ManagedCluster"


@pytest.fixture(scope="module", params=STACKS)
def stack(request):
    return run_stack(request.param)


@pytest.fixture(scope="module")
def settings(stack):
    return parse(stack.config, stack.stack)


def state(stack, token, name=None):
    return stack.one(token, name).state


def test_the_repo_has_a_dev_and_a_prod_stack():
    assert {"dev", "prod"} <= set(STACKS)


def test_every_cloud_resource_belongs_to_a_component(stack):
    components = {r.urn for r in stack.resources if not r.custom}
    loose = [r.name for r in stack.resources if r.custom and r.parent not in components]
    assert loose == ["resource-group"]


def test_resource_group(stack, settings):
    group = stack.one("azure-native:resources:ResourceGroup").inputs
    assert group["location"] == settings.location
    assert group["tags"] == {
        "project": "azureml-platform", "stack": stack.stack, "managed-by": "pulumi", "environment": settings.environment
    }


def test_workspace_based_application_insights(stack, settings):
    insights = stack.one("azure-native:applicationinsights:Component").inputs
    assert stack.one("azure-native:operationalinsights:Workspace").inputs["retentionInDays"] == (
        settings.log_retention_days
    )
    assert insights["workspaceResourceId"] == stack.one("azure-native:operationalinsights:Workspace").id
    assert insights["ingestionMode"] == "LogAnalytics"


def test_storage_account(stack, settings):
    account = stack.one("azure-native:storage:StorageAccount").inputs
    assert account["kind"] == "StorageV2"
    assert account["sku"] == {"name": settings.storage_sku}
    assert account["minimumTlsVersion"] == "TLS1_2"
    assert account["enableHttpsTrafficOnly"] is True
    assert account["allowBlobPublicAccess"] is False
    rules = account["networkRuleSet"]
    workspace_id = stack.one(f"{ML}:Workspace").id
    if settings.network.isolated:
        # the internet is denied; the workspace comes in by a resource instance rule, the VNet by private endpoint
        assert rules["defaultAction"] == "Deny"
        assert rules["resourceAccessRules"] == [{"resourceId": workspace_id, "tenantId": stack.outputs["tenant_id"]}]
    else:
        assert rules["defaultAction"] == "Allow"


def test_storage_firewall_takes_the_allowed_ranges_and_single_addresses_bare():
    config = with_setting(stack_config("prod"), "azureml-platform:network.allowedIpRanges", ["20.61.0.0/24", "40.74.28.7/32"])
    rules = evaluate("prod", config).one("azure-native:storage:StorageAccount").inputs["networkRuleSet"]
    assert [rule["iPAddressOrRange"] for rule in rules["ipRules"]] == ["20.61.0.0/24", "40.74.28.7"]


def test_key_vault(stack, settings):
    vault = stack.one("azure-native:keyvault:Vault").inputs["properties"]
    assert vault["enableRbacAuthorization"] is True
    assert vault["enableSoftDelete"] is True
    assert vault["softDeleteRetentionInDays"] == settings.key_vault.soft_delete_retention_days
    assert vault.get("enablePurgeProtection", False) is (settings.environment == "prod")
    assert vault["networkAcls"] == {"defaultAction": "Deny", "bypass": "AzureServices"}


def test_registry(stack, settings):
    resource = stack.one("azure-native:containerregistry:Registry")
    registry = resource.inputs
    assert registry["adminUserEnabled"] is False
    assert registry["sku"] == {"name": settings.registry_sku}
    assert registry["zoneRedundancy"] == ("Enabled" if settings.registry_zone_redundancy else "Disabled")
    assert resource.ignore_changes == ("zoneRedundancy",)  # set at creation; never an update of an existing one
    assert registry["networkRuleBypassOptions"] == "AzureServices"
    assert registry.get("networkRuleSet") == ({"defaultAction": "Deny"} if settings.network.isolated else None)


def test_workspace_links_its_dependencies(stack, settings):
    workspace = stack.one(f"{ML}:Workspace").inputs
    ids = {
        "storageAccount": "azure-native:storage:StorageAccount",
        "keyVault": "azure-native:keyvault:Vault",
        "applicationInsights": "azure-native:applicationinsights:Component",
        "containerRegistry": "azure-native:containerregistry:Registry",
    }
    for key, token in ids.items():
        assert workspace[key] == stack.one(token).id, key
    assert workspace["identity"] == {"type": "SystemAssigned"}
    assert workspace["v1LegacyMode"] is False
    assert workspace["publicNetworkAccess"] == settings.workspace.public_network_access
    # no managed network: it cannot hold the Kubernetes compute
    assert workspace["managedNetwork"]["isolationMode"] == "Disabled"
    # behind a firewall, images build on the CPU cluster, inside the VNet
    assert workspace.get("imageBuildCompute") == (stack.outputs["cpu_cluster_name"] if settings.network.isolated else None)


def grants(stack, principal_id):
    """(role name, scope's last segment) for every role assignment to `principal_id`."""
    return {
        (r.role_name, r.inputs["scope"].rsplit("/", 1)[-1])
        for r in stack.of_type("azure-native:authorization:RoleAssignment")
        if r.inputs["principalId"] == principal_id
    }


def test_workspace_identity_gets_only_the_role_azure_does_not_grant_itself(stack):
    principal = state(stack, f"{ML}:Workspace")["identity"]["principalId"]
    assert grants(stack, principal) == {("Key Vault Secrets Officer", state(stack, "azure-native:keyvault:Vault")["name"])}


def test_every_identity_has_its_own_principal(stack):
    principals = [r.state["identity"]["principalId"] for r in stack.resources if "principalId" in r.state.get("identity", {})]
    principals += [state(stack, "azure-native:managedidentity:UserAssignedIdentity")["principalId"]]
    principals += [state(stack, AKS)["identityProfile"]["kubeletidentity"]["objectId"]]
    principals += [state(stack, "azuread:index/servicePrincipal:ServicePrincipal")["objectId"]]
    assert len(principals) == len(set(principals)) >= 4


def test_automation_identity_federates_with_github(stack, settings):
    application = state(stack, "azuread:index/application:Application")
    principal = state(stack, "azuread:index/servicePrincipal:ServicePrincipal")
    credential = state(stack, "azuread:index/applicationFederatedIdentityCredential:ApplicationFederatedIdentityCredential")
    assert principal["clientId"] == application["clientId"]
    assert credential["applicationId"] == stack.one("azuread:index/application:Application").id
    assert credential["issuer"] == "https://token.actions.githubusercontent.com"
    assert credential["audiences"] == ["api://AzureADTokenExchange"]
    assert credential["subject"] == f"repo:{settings.github_repository}:environment:{settings.github_environment}"
    # no long-lived secret unless config asks for one
    assert not stack.of_type("azuread:index/applicationPassword:ApplicationPassword")
    assert not stack.of_type("azure-native:keyvault:Secret")


def test_automation_identity_is_scoped_to_the_workspace_and_the_ml_registry(stack, settings):
    principal = state(stack, "azuread:index/servicePrincipal:ServicePrincipal")["objectId"]
    assert grants(stack, principal) == {
        ("AzureML Data Scientist", state(stack, f"{ML}:Workspace")["name"]),
        ("Storage Blob Data Contributor", state(stack, "azure-native:storage:StorageAccount")["name"]),
        # dev publishes the model it tested; prod reads it (tests/test_ml_registry.py)
        (f"ML registry {'publisher' if settings.environment == 'dev' else 'reader'}", stack.outputs["ml_registry_name"]),
    }


def aml_cluster(stack, name):
    return stack.one(f"{ML}:Compute", name).inputs["properties"]


def test_cpu_cluster(stack, settings):
    cluster = aml_cluster(stack, "cpu-cluster")
    assert cluster["computeType"] == "AmlCompute"
    properties = cluster["properties"]
    assert properties["vmSize"] == settings.cpu_cluster.vm_size
    assert properties["scaleSettings"] == {
        "minNodeCount": 0,
        "maxNodeCount": settings.cpu_cluster.max_nodes,
        "nodeIdleTimeBeforeScaleDown": f"PT{settings.cpu_cluster.idle_seconds_before_scale_down}S",
    }
    assert properties["remoteLoginPortPublicAccess"] == "Disabled"
    assert "userAccountCredentials" not in properties


def test_clusters_sit_in_the_training_subnet_without_public_ips_once_the_workspace_is_reachable(stack, settings):
    # the workspace's own private endpoints (the ML registry's come later, from the stage's first promotion on)
    endpoints = {r.urn for r in stack.of_type(f"{NETWORK}:PrivateEndpoint") if not r.name.startswith("pe-mlregistry")}
    for cluster in [r for r in stack.of_type(f"{ML}:Compute") if r.name.endswith("-cluster")]:
        properties = cluster.inputs["properties"]["properties"]
        if settings.network.isolated:
            vnet = stack.one(f"{NETWORK}:VirtualNetwork").id
            assert properties["subnet"] == {"id": f"{vnet}/subnets/snet-training"}
            assert properties["enableNodePublicIp"] is False
            assert endpoints <= set(cluster.dependencies)
        else:
            assert "subnet" not in properties and properties["enableNodePublicIp"] is True


def test_gpu_cluster_follows_its_setting(stack, settings):
    gpu = [r for r in stack.of_type(f"{ML}:Compute") if r.name == "gpu-cluster"]
    assert bool(gpu) is settings.gpu_cluster.enabled
    assert settings.gpu_cluster.enabled is (settings.environment == "prod")
    if gpu:
        properties = gpu[0].inputs["properties"]["properties"]
        assert properties["vmSize"].startswith("Standard_N")
        assert properties["scaleSettings"]["minNodeCount"] == 0


def test_clusters_read_data_with_their_own_identity_and_leave_acrpull_to_azure(stack):
    storage = state(stack, "azure-native:storage:StorageAccount")["name"]
    for cluster in stack.of_type(f"{ML}:Compute"):
        if cluster.inputs["properties"]["computeType"] == "AmlCompute":
            # "A managed identity is automatically granted ACRPull role on workspace ACR"
            assert grants(stack, cluster.state["identity"]["principalId"]) == {("Storage Blob Data Contributor", storage)}


def test_aks_runs_as_its_own_identity_with_entra_id_azure_rbac_and_local_accounts(stack, settings):
    cluster = stack.one(AKS)
    aks = cluster.inputs
    identity = stack.one("azure-native:managedidentity:UserAssignedIdentity")
    assert aks["identity"] == {"type": "UserAssigned", "userAssignedIdentities": [identity.id]}
    assert aks["aadProfile"]["managed"] is True and aks["aadProfile"]["enableAzureRBAC"] is True
    assert aks["disableLocalAccounts"] is False  # the Azure ML extension needs them
    pool = aks["agentPoolProfiles"][0]
    assert (pool["minCount"], pool["maxCount"]) == (settings.aks.min_nodes, settings.aks.max_nodes)
    if settings.network.isolated:
        vnet = stack.one(f"{NETWORK}:VirtualNetwork").id
        assert pool["vnetSubnetID"] == f"{vnet}/subnets/snet-aks"
        # the identity holds Network Contributor on its subnet before the cluster is created
        subnet_role = stack.one("azure-native:authorization:RoleAssignment", "aks-subnet-network")
        assert subnet_role.inputs["principalId"] == identity.state["principalId"]
        assert subnet_role.inputs["scope"] == pool["vnetSubnetID"]
        assert subnet_role.urn in cluster.dependencies
    else:
        assert "vnetSubnetID" not in pool


def test_aks_hardening(stack, settings):
    aks = stack.one(AKS).inputs
    assert aks["autoUpgradeProfile"] == {"upgradeChannel": "patch", "nodeOSUpgradeChannel": "NodeImage"}
    network = aks["networkProfile"]
    assert (network["networkPlugin"], network["networkPluginMode"]) == ("azure", "overlay")
    assert (network["networkDataplane"], network["networkPolicy"]) == ("cilium", "cilium")
    assert aks["agentPoolProfiles"][0]["enableEncryptionAtHost"] is settings.aks.encryption_at_host
    logs = stack.one("azure-native:operationalinsights:Workspace").id
    if settings.aks.container_insights:
        addon = aks["addonProfiles"]["omsagent"]
        assert addon["enabled"] is True and addon["config"]["useAADAuth"] == "true"
        assert addon["config"]["logAnalyticsWorkspaceResourceID"] == logs
    else:
        assert "omsagent" not in aks["addonProfiles"]
    assert aks["addonProfiles"]["azurepolicy"] == {"enabled": True}
    # the stack files leave the API server open to Entra-authorized calls; run command is off everywhere
    assert aks["apiServerAccessProfile"] == {"disableRunCommand": True}
    security = aks["securityProfile"]
    assert security["workloadIdentity"] == {"enabled": True} and aks["oidcIssuerProfile"] == {"enabled": True}
    assert security["imageCleaner"] == {"enabled": True, "intervalHours": 24}
    assert security.get("defender") == ({"logAnalyticsWorkspaceResourceId": logs, "securityMonitoring": {"enabled": True}}
                                        if settings.aks.defender else None)  # fmt: skip
    assert aks["agentPoolProfiles"][0]["securityProfile"] == {"sshAccess": "Disabled"}


def test_aks_api_server_takes_the_authorized_ranges():
    config = with_setting(stack_config("prod"), "azureml-platform:aks.authorizedIpRanges", ["203.0.113.0/24"])
    aks = evaluate("prod", config).one(AKS).inputs
    assert aks["apiServerAccessProfile"] == {"authorizedIPRanges": ["203.0.113.0/24"], "disableRunCommand": True}


def test_azureml_extension(stack, settings):
    extension = stack.one("azure-native:kubernetesconfiguration:Extension").inputs
    assert extension["extensionType"] == "Microsoft.AzureML.Kubernetes"
    assert extension["clusterName"] == state(stack, "azure-native:containerservice:ManagedCluster")["name"]
    assert (extension["clusterRp"], extension["clusterResourceName"]) == ("Microsoft.ContainerService", "managedClusters")
    configuration = extension["configurationSettings"]
    aks = stack.one(AKS)
    # what `az k8s-extension create` fills in for an AKS cluster (AzureMLKubernetes.py)
    assert {key: configuration[key] for key in ("clusterId", "cluster_name", "prometheus.prometheusSpec.externalLabels.cluster_name")} == dict.fromkeys(
        ("clusterId", "cluster_name", "prometheus.prometheusSpec.externalLabels.cluster_name"), aks.id)
    assert configuration["cluster_name_friendly"] == aks.state["name"]
    assert (configuration["location"], configuration["jobSchedulerLocation"]) == (settings.location,) * 2
    assert configuration["domain"] == f"{settings.location}.cloudapp.azure.com"
    assert (configuration["servicebus.enabled"], configuration["relayserver.enabled"], configuration["nginxIngress.enabled"]) == (
        "false", "false", "true")
    assert "identity" not in extension  # the CLI makes none for an AKS cluster
    assert extension["scope"] == {"cluster": {"releaseNamespace": "azureml"}}
    assert configuration["enableInference"] == "True"
    assert configuration["inferenceRouterServiceType"] == settings.inference.router_service_type
    assert configuration["allowInsecureConnections"] == str(settings.inference.allow_insecure_connections)
    assert configuration["inferenceRouterHA"] == str(settings.inference.high_availability)
    if settings.environment == "prod":
        assert configuration["sslCname"] == settings.inference.ssl_cname
        protected = extension["configurationProtectedSettings"]
        assert is_secret(protected)
        assert base64.b64decode(reveal(protected)["scoringFe.sslKey"]).decode() == FAKE_PEM
        assert set(reveal(protected)) == {"scoringFe.sslCert", "scoringFe.sslKey"}
        assert FAKE_PEM not in json.dumps(configuration)
    else:
        assert "configurationProtectedSettings" not in extension


def test_kubelet_can_pull_images_and_read_models(stack):
    kubelet = state(stack, "azure-native:containerservice:ManagedCluster")["identityProfile"]["kubeletidentity"]
    assert grants(stack, kubelet["objectId"]) == {
        ("AcrPull", state(stack, "azure-native:containerregistry:Registry")["name"]),
        ("Storage Blob Data Reader", state(stack, "azure-native:storage:StorageAccount")["name"]),
    }


def test_the_instance_type_is_a_custom_resource_in_the_cluster(stack, settings):
    """Created as the page documents (an InstanceType custom resource), through the cluster's API server."""
    instance_type = stack.one("kubernetes:amlarc.azureml.com/v1alpha1:InstanceType")
    instance = settings.inference.instance_type
    assert instance_type.inputs["metadata"]["name"] == instance.name == stack.outputs["kubernetes_instance_type"]
    assert instance_type.inputs["spec"] == {
        "resources": {
            "requests": {"cpu": instance.cpu_request, "memory": instance.memory_request},
            "limits": {"cpu": instance.cpu_limit, "memory": instance.memory_limit},
        }
    }
    assert stack.one("azure-native:kubernetesconfiguration:Extension").urn in instance_type.dependencies  # its CRD
    provider = stack.one("pulumi:providers:kubernetes")
    assert instance_type.request.provider.startswith(provider.urn)
    kubeconfig = provider.inputs["kubeconfig"]
    assert is_secret(kubeconfig) and reveal(kubeconfig) == fake_kubeconfig(stack.one(AKS).state["name"])


def test_a_preview_never_asks_for_cluster_credentials():
    """The read-only previewer may not list admin credentials: in a preview the kubeconfig stays unknown."""
    credentials = "azure-native:containerservice:listManagedClusterAdminCredentials"
    for preview in (True, False):
        monitor = RecordingMonitor(PlatformMocks())
        provider = evaluate("dev", stack_config("dev"), monitor, preview=preview).one("pulumi:providers:kubernetes")
        assert isinstance(reveal(provider.inputs["kubeconfig"]), pulumi.output.Unknown) is preview
        assert (credentials in monitor.mocks.invokes) is not preview


def test_kubernetes_compute_is_attached_and_replaced_on_change(stack, settings):
    compute = stack.one(f"{ML}:Compute", "kubernetes-compute")
    attach = compute.inputs["properties"]
    assert attach["computeType"] == "Kubernetes"
    assert attach["resourceId"] == stack.one(AKS).id
    assert attach["properties"] == {"namespace": settings.inference.namespace}
    assert compute.replace_on_changes == ("properties",)
    assert compute.delete_before_replace is True
    assert stack.one("azure-native:kubernetesconfiguration:Extension").urn in compute.dependencies
    assert stack.one("kubernetes:amlarc.azureml.com/v1alpha1:InstanceType").urn in compute.dependencies


def test_the_private_network(stack, settings):
    network = [r for r in stack.resources if r.type.startswith(("azure-native:network:", "azure-native:privatedns:"))]
    if not settings.network.isolated:
        assert network == []
        return
    address = settings.network
    vnet = stack.one(f"{NETWORK}:VirtualNetwork").inputs
    assert vnet["addressSpace"] == {"addressPrefixes": [address.address_space]}
    subnets = {subnet["name"]: subnet for subnet in vnet["subnets"]}
    nat = stack.one(f"{NETWORK}:NatGateway")
    assert subnets["snet-training"]["natGateway"] == {"id": nat.id}  # image builds, pip and conda
    assert {name: subnet["addressPrefix"] for name, subnet in subnets.items()} == {
        "snet-training": address.training_subnet, "snet-aks": address.aks_subnet,
        "snet-private-endpoints": address.private_endpoint_subnet,
    }  # fmt: skip
    assert subnets["snet-private-endpoints"]["privateEndpointNetworkPolicies"] == "Disabled"
    assert all(subnet["defaultOutboundAccess"] is False for subnet in subnets.values())
    # one private endpoint per private link group, each in the subnet and registered in its zones
    endpoints = {r.inputs["privateLinkServiceConnections"][0]["groupIds"][0]: r for r in stack.of_type(f"{NETWORK}:PrivateEndpoint")
                 if not r.name.startswith("pe-mlregistry")}  # the ML registry's: tests/test_ml_registry.py
    assert set(endpoints) == set(PRIVATE_DNS_ZONES) - {"amlregistry"}
    storage = "azure-native:storage:StorageAccount"
    targets = {"amlworkspace": f"{ML}:Workspace", "blob": storage, "file": storage, "queue": storage, "table": storage,
               "vault": "azure-native:keyvault:Vault", "registry": "azure-native:containerregistry:Registry"}  # fmt: skip
    zones = {r.inputs["privateZoneName"]: r for r in stack.of_type("azure-native:privatedns:PrivateZone")}
    groups = {r.inputs["privateEndpointName"]: r for r in stack.of_type(f"{NETWORK}:PrivateDnsZoneGroup")}
    for group, endpoint in endpoints.items():
        assert endpoint.inputs["privateLinkServiceConnections"][0]["privateLinkServiceId"] == stack.one(targets[group]).id
        assert endpoint.inputs["subnet"]["id"] == f"{stack.one(f'{NETWORK}:VirtualNetwork').id}/subnets/snet-private-endpoints"
        configs = groups[endpoint.state["name"]].inputs["privateDnsZoneConfigs"]
        assert [config["privateDnsZoneId"] for config in configs] == [zones[zone].id for zone in PRIVATE_DNS_ZONES[group]]
    links = stack.of_type("azure-native:privatedns:VirtualNetworkLink")
    assert sorted(link.inputs["privateZoneName"] for link in links) == sorted(zones)
    assert all(link.inputs["virtualNetwork"] == {"id": stack.one(f"{NETWORK}:VirtualNetwork").id} for link in links)


# what a batch scoring job reaches (how-to-secure-batch-endpoint: the workspace, its storage's blob, file, queue and
# table, Key Vault, the container registry its image comes from), by private link group
BATCH_SERVICES = {"amlworkspace": f"{ML}:Workspace", "blob": "azure-native:storage:StorageAccount",
                  "file": "azure-native:storage:StorageAccount", "queue": "azure-native:storage:StorageAccount",
                  "table": "azure-native:storage:StorageAccount", "vault": "azure-native:keyvault:Vault",
                  "registry": "azure-native:containerregistry:Registry"}  # fmt: skip


def test_every_service_a_batch_job_reaches_has_prods_private_endpoint_and_dns_zone(capsys):
    prod = run_stack("prod")
    endpoints = {(r.inputs["privateLinkServiceConnections"][0]["groupIds"][0], r.inputs["privateLinkServiceConnections"][0]["privateLinkServiceId"]): r
                 for r in prod.of_type(f"{NETWORK}:PrivateEndpoint")}  # fmt: skip
    zones = {r.id: r.inputs["privateZoneName"] for r in prod.of_type("azure-native:privatedns:PrivateZone")}
    groups = {r.inputs["privateEndpointName"]: r.inputs for r in prod.of_type(f"{NETWORK}:PrivateDnsZoneGroup")}
    listed = []
    for group, token in BATCH_SERVICES.items():
        endpoint = endpoints[(group, prod.one(token).id)]
        found = [zones[config["privateDnsZoneId"]] for config in groups[endpoint.state["name"]]["privateDnsZoneConfigs"]]
        assert found == list(PRIVATE_DNS_ZONES[group])
        listed.append(f"{token.rsplit(':', 1)[-1]:<16} {group:<13} {endpoint.state['name']:<40} {', '.join(found)}")
    print("\n".join(listed))  # the table docs/security.md's network section gives
    assert len(listed) == 7


def test_prod_protects_stateful_resources_and_dev_protects_nothing(stack, settings):
    protected = {r.type.rsplit(":", 1)[-1] for r in stack.resources if r.protect}
    if settings.environment == "prod":
        assert protected == {"Workspace", "StorageAccount", "Vault", "Registry"}
        assert stack.one(f"{ML}:Workspace").protect
    else:
        assert protected == set()


def test_environments_differ_where_they_should():
    dev, prod = (parse(stack_config(name), name) for name in ("dev", "prod"))
    assert (dev.network.isolated, prod.network.isolated) == (False, True)
    assert prod.cpu_cluster.max_nodes > dev.cpu_cluster.max_nodes
    assert (dev.protect, prod.protect) == (False, True)
    assert (dev.inference.allow_insecure_connections, prod.inference.allow_insecure_connections) == (True, False)


def test_collected_data_is_deleted_after_each_workloads_keep_days(stack):
    """One lifecycle rule per workload that keeps its collected data for a set time: the blobs under its folder of
    the data collector in the workspace's default container (azureml-blobstore-<workspace ID>), deleted once older."""
    from jobs.workloads import load_workloads

    workspace = stack.one(f"{ML}:Workspace").state
    storage = stack.one("azure-native:storage:StorageAccount").state
    policy = stack.one("azure-native:storage:ManagementPolicy").inputs
    assert policy["accountName"] == storage["name"] and policy["managementPolicyName"] == "default"
    rules = {rule["name"]: rule for rule in policy["policy"]["rules"]}
    kept = {workload.name: workload.monitor.keep_days for workload in load_workloads() if workload.monitor.keep_days}
    assert kept and set(rules) == {"collected" + name.replace("-", "") for name in kept}
    for name, days in kept.items():
        definition = rules["collected" + name.replace("-", "")]["definition"]
        assert definition["filters"] == {
            "blobTypes": ["blockBlob", "appendBlob"],
            "prefixMatch": [f"azureml-blobstore-{workspace['workspaceId']}/modelDataCollector/{name}/"],
        }
        assert definition["actions"] == {"baseBlob": {"delete": {"daysAfterModificationGreaterThan": days}}}


def test_resource_logs_go_to_the_stacks_log_analytics_workspace(stack, settings):
    """One diagnostic setting per resource Azure documents resource logs for: each category named and enabled,
    resource-specific tables, no deprecated retentionPolicy; the blob service's on the service, not the account."""
    from infra import resource_logs

    logs = stack.one("azure-native:operationalinsights:Workspace").id
    storage = stack.one("azure-native:storage:StorageAccount").id
    sent = {setting.inputs["resourceUri"]: setting.inputs for setting in stack.of_type("azure-native:monitor:DiagnosticSetting")}
    blob = resource_logs.BLOB_CATEGORIES + ((resource_logs.BLOB_READ_CATEGORY,) if settings.log_blob_reads else ())
    assert {uri: [entry["category"] for entry in inputs["logs"]] for uri, inputs in sent.items()} == {
        stack.one(f"{ML}:Workspace").id: list(resource_logs.WORKSPACE_CATEGORIES),
        stack.one("azure-native:keyvault:Vault").id: list(resource_logs.KEY_VAULT_CATEGORIES),
        stack.one(AKS).id: list(resource_logs.AKS_CATEGORIES),
        f"{storage}/blobServices/default": list(blob),
        stack.one("azure-native:containerregistry:Registry").id: list(resource_logs.REGISTRY_CATEGORIES),
    }
    for inputs in sent.values():
        assert inputs["workspaceId"] == logs and inputs["logAnalyticsDestinationType"] == "Dedicated"
        assert all(entry == {"category": entry["category"], "enabled": True} for entry in inputs["logs"])
        assert "metrics" not in inputs and "storageAccountId" not in inputs
    assert settings.log_blob_reads is (settings.environment == "prod")  # reads are rows too: prod only


def test_storage_meets_the_policies_it_can(stack):
    """A week at most for any SAS (and Block), infrastructure encryption, soft delete for blobs and containers."""
    account = stack.one("azure-native:storage:StorageAccount")
    assert account.inputs["sasPolicy"] == {"sasExpirationPeriod": "7.00:00:00", "expirationAction": "Block"}
    assert account.inputs["encryption"] == {"keySource": "Microsoft.Storage", "requireInfrastructureEncryption": True}
    assert "encryption.requireInfrastructureEncryption" in account.ignore_changes  # set only when an account is created
    service = stack.one("azure-native:storage:BlobServiceProperties")
    assert (service.inputs["accountName"], service.inputs["blobServicesName"]) == (account.state["name"], "default")
    assert service.inputs["deleteRetentionPolicy"] == service.inputs["containerDeleteRetentionPolicy"] == {"enabled": True, "days": 7}
