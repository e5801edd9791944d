"""The real program, run under Pulumi mocks with each stack file's config: what every stack provisions."""

import base64
import json

import pytest

from infra import roles
from infra.settings import parse
from stack_harness import FAKE_PEM, is_secret, reveal, run_stack, stack_config, stack_names

STACKS = stack_names()
ML = "azure-native:machinelearningservices"


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
    assert group["tags"] == {"project": "azureml-platform", "stack": stack.stack, "managed-by": "pulumi"}


def test_workspace_based_application_insights(stack, settings):
    insights = stack.one("azure-native:applicationinsights:Component").inputs
    assert stack.one("azure-native:operationalinsights:Workspace").inputs["retentionInDays"] == (
        settings.log_retention_days
    )
    assert insights["workspaceResourceId"] == stack.one("azure-native:operationalinsights:Workspace").id
    assert insights["ingestionMode"] == "LogAnalytics"


def test_storage_account(stack):
    account = stack.one("azure-native:storage:StorageAccount").inputs
    assert account["kind"] == "StorageV2"
    assert account["minimumTlsVersion"] == "TLS1_2"
    assert account["enableHttpsTrafficOnly"] is True
    assert account["allowBlobPublicAccess"] is False


def test_key_vault(stack, settings):
    vault = stack.one("azure-native:keyvault:Vault").inputs["properties"]
    assert vault["enableRbacAuthorization"] is True
    assert vault["enableSoftDelete"] is True
    assert vault["softDeleteRetentionInDays"] == settings.key_vault.soft_delete_retention_days
    assert vault.get("enablePurgeProtection", False) is (settings.environment == "prod")


def test_registry_without_admin_user(stack, settings):
    registry = stack.one("azure-native:containerregistry:Registry").inputs
    assert registry["adminUserEnabled"] is False
    assert registry["sku"] == {"name": settings.registry_sku}


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
    assert workspace["managedNetwork"]["isolationMode"] == settings.workspace.isolation_mode


def grants(stack, principal_id):
    """(role name, scope's last segment) for every role assignment to `principal_id`."""
    return {
        (roles.NAMES[r.inputs["roleDefinitionId"].rsplit("/", 1)[-1]], r.inputs["scope"].rsplit("/", 1)[-1])
        for r in stack.of_type("azure-native:authorization:RoleAssignment")
        if r.inputs["principalId"] == principal_id
    }


def test_workspace_identity_roles(stack):
    principal = state(stack, f"{ML}:Workspace")["identity"]["principalId"]
    storage = state(stack, "azure-native:storage:StorageAccount")["name"]
    assert grants(stack, principal) == {
        ("Storage Blob Data Contributor", storage),
        ("Storage File Data Privileged Contributor", storage),
        ("Key Vault Secrets Officer", state(stack, "azure-native:keyvault:Vault")["name"]),
        ("AcrPush", state(stack, "azure-native:containerregistry:Registry")["name"]),
    }


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


def test_automation_identity_is_scoped_to_the_workspace(stack):
    principal = state(stack, "azuread:index/servicePrincipal:ServicePrincipal")["objectId"]
    assert grants(stack, principal) == {
        ("AzureML Data Scientist", state(stack, f"{ML}:Workspace")["name"]),
        ("Storage Blob Data Contributor", state(stack, "azure-native:storage:StorageAccount")["name"]),
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


def test_gpu_cluster_follows_its_setting(stack, settings):
    gpu = [r for r in stack.of_type(f"{ML}:Compute") if r.name == "gpu-cluster"]
    assert bool(gpu) is settings.gpu_cluster.enabled
    assert settings.gpu_cluster.enabled is (settings.environment == "prod")
    if gpu:
        properties = gpu[0].inputs["properties"]["properties"]
        assert properties["vmSize"].startswith("Standard_N")
        assert properties["scaleSettings"]["minNodeCount"] == 0


def test_clusters_pull_images_with_their_own_identity(stack):
    registry = state(stack, "azure-native:containerregistry:Registry")["name"]
    for cluster in stack.of_type(f"{ML}:Compute"):
        if cluster.inputs["properties"]["computeType"] == "AmlCompute":
            assert ("AcrPull", registry) in grants(stack, cluster.state["identity"]["principalId"])


def test_aks_uses_managed_identity_and_azure_rbac(stack, settings):
    aks = stack.one("azure-native:containerservice:ManagedCluster").inputs
    assert aks["identity"] == {"type": "SystemAssigned"}
    assert aks["aadProfile"]["managed"] is True and aks["aadProfile"]["enableAzureRBAC"] is True
    assert aks["disableLocalAccounts"] is True
    pool = aks["agentPoolProfiles"][0]
    assert (pool["minCount"], pool["maxCount"]) == (settings.aks.min_nodes, settings.aks.max_nodes)


def test_azureml_extension(stack, settings):
    extension = stack.one("azure-native:kubernetesconfiguration:Extension").inputs
    assert extension["extensionType"] == "Microsoft.AzureML.Kubernetes"
    assert extension["clusterName"] == state(stack, "azure-native:containerservice:ManagedCluster")["name"]
    assert (extension["clusterRp"], extension["clusterResourceName"]) == ("Microsoft.ContainerService", "managedClusters")
    configuration = extension["configurationSettings"]
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


def test_kubernetes_compute_is_attached_and_replaced_on_change(stack, settings):
    compute = stack.one(f"{ML}:Compute", "kubernetes-compute")
    attach = compute.inputs["properties"]
    assert attach["computeType"] == "Kubernetes"
    assert attach["resourceId"] == stack.one("azure-native:containerservice:ManagedCluster").id
    kubernetes = attach["properties"]
    instance = settings.inference.instance_type
    assert kubernetes["namespace"] == settings.inference.namespace
    assert kubernetes["defaultInstanceType"] == instance.name
    assert kubernetes["instanceTypes"] == {
        instance.name: {
            "resources": {
                "requests": {"cpu": instance.cpu_request, "memory": instance.memory_request},
                "limits": {"cpu": instance.cpu_limit, "memory": instance.memory_limit},
            }
        }
    }
    assert compute.replace_on_changes == ("properties",)
    assert compute.delete_before_replace is True
    assert stack.one("azure-native:kubernetesconfiguration:Extension").urn in compute.dependencies


def test_prod_protects_stateful_resources_and_dev_protects_nothing(stack, settings):
    protected = {r.type.rsplit(":", 1)[-1] for r in stack.resources if r.protect}
    if settings.environment == "prod":
        assert protected == {"Workspace", "StorageAccount", "Vault", "Registry"}
        assert stack.one(f"{ML}:Workspace").protect
    else:
        assert protected == set()


def test_environments_differ_where_they_should():
    dev, prod = (parse(stack_config(name), name) for name in ("dev", "prod"))
    assert dev.workspace.isolation_mode == "Disabled" and prod.workspace.isolation_mode != "Disabled"
    assert prod.cpu_cluster.max_nodes > dev.cpu_cluster.max_nodes
    assert (dev.protect, prod.protect) == (False, True)
    assert (dev.inference.allow_insecure_connections, prod.inference.allow_insecure_connections) == (True, False)
