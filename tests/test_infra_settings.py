"""Bad stack config fails before any resource is declared, with one message per bad value naming its key."""

import pytest

from infra import settings
from stack_harness import PlatformMocks, RecordingMonitor, evaluate, only_problem, problems_for, stack_config, with_setting

NS = "azureml-platform"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_stack_files_are_valid(stack):
    parsed = settings.parse(stack_config(stack), stack)
    assert parsed.environment == stack
    assert parsed.tags == {"project": NS, "stack": stack, "managed-by": "pulumi", "environment": stack}


def test_missing_required_key():
    problem = only_problem(with_setting(stack_config("dev"), f"{NS}:githubRepository", remove=True))
    assert problem == f"{NS}:githubRepository is required"


def test_missing_required_key_inside_an_object():
    problem = only_problem(with_setting(stack_config("dev"), f"{NS}:cpuCluster.vmSize", remove=True))
    assert problem == f"{NS}:cpuCluster.vmSize is required"


def test_missing_location_names_the_provider_key():
    problem = only_problem(with_setting(stack_config("dev"), "azure-native:location", remove=True))
    assert problem.startswith("azure-native:location is required")


def test_invalid_value_lists_what_is_allowed():
    problem = only_problem(with_setting(stack_config("dev"), f"{NS}:registrySku", "Gold"))
    assert problem == f"{NS}:registrySku is 'Gold'; allowed: Basic, Standard, Premium"


def test_invalid_github_repository():
    problem = only_problem(with_setting(stack_config("dev"), f"{NS}:githubRepository", "just-a-name"))
    assert f"{NS}:githubRepository" in problem and "owner/repo" in problem


def test_min_nodes_greater_than_max_nodes():
    config = with_setting(stack_config("dev"), f"{NS}:cpuCluster.minNodes", 3)
    problem = only_problem(config)
    assert problem.startswith(f"{NS}:cpuCluster.minNodes (3) is greater than {NS}:cpuCluster.maxNodes (2)")


def test_min_nodes_greater_than_max_nodes_on_aks():
    problem = only_problem(with_setting(stack_config("dev"), f"{NS}:aks.minNodes", 5))
    assert f"{NS}:aks.minNodes (5) is greater than {NS}:aks.maxNodes" in problem


def test_gpu_cluster_with_a_non_gpu_vm_size():
    config = with_setting(stack_config("prod"), f"{NS}:gpuCluster.vmSize", "Standard_DS3_v2")
    problem = only_problem(config, "prod")
    assert problem.startswith(f"{NS}:gpuCluster.vmSize is 'Standard_DS3_v2', not a GPU size")
    assert "N-series" in problem


def test_a_switched_off_gpu_cluster_is_not_checked():
    config = with_setting(stack_config("dev"), f"{NS}:gpuCluster.vmSize", "Standard_DS3_v2")
    assert settings.parse(config, "dev").gpu_cluster.enabled is False


@pytest.mark.parametrize(
    "prefix, kinds",
    [
        ("My_Team", ("storage account", "Key Vault")),  # upper case and '_' break storage and Key Vault names
        ("platformteamalpha", ("storage account", "Key Vault")),  # too long for their 24 characters
    ],
)
def test_name_prefix_that_makes_invalid_storage_or_key_vault_names(prefix, kinds):
    problem = only_problem(with_setting(stack_config("dev"), f"{NS}:namePrefix", prefix))
    assert problem.startswith(f"{NS}:namePrefix {prefix!r} (stack 'dev')")
    for kind in kinds:
        assert f"invalid {kind} name" in problem


@pytest.mark.parametrize("key", [f"{NS}:cpuCluster.maxNodes", f"{NS}:aks.minNodes", f"{NS}:logRetentionDays"])
def test_non_numeric_count(key):
    problem = only_problem(with_setting(stack_config("dev"), key, "two"))
    assert problem == f"{key} is 'two'; expected a whole number"


def test_unknown_environment():
    problem = only_problem(with_setting(stack_config("dev"), f"{NS}:environment", "staging"))
    assert problem == f"{NS}:environment is 'staging'; allowed: dev, prod"


@pytest.mark.parametrize("key", [f"{NS}:gpuClusters", f"{NS}:cpuCluster.maxNode", f"{NS}:inference.instanceType.gpu"])
def test_unknown_setting(key):
    problem = only_problem(with_setting(stack_config("dev"), key, 1) if "." in key else {**stack_config("dev"), key: "1"})
    assert problem.startswith(f"{key} is not a known setting; known: ")


def test_prod_must_be_hardened():
    config = with_setting(stack_config("prod"), f"{NS}:keyVault.purgeProtection", False)
    assert only_problem(config, "prod") == f"{NS}:keyVault.purgeProtection is false; allowed in prod: true"


def test_tls_secrets_are_required_and_never_echoed():
    config = with_setting(stack_config("prod"), f"{NS}:inferenceTlsKey", remove=True)
    assert only_problem(config, "prod") == (
        f"{NS}:inferenceTlsKey is required when {NS}:inference.allowInsecureConnections is false (set it with --secret)"
    )
    leaked = "hunter2-not-a-pem"
    problem = only_problem(with_setting(stack_config("prod"), f"{NS}:inferenceTlsKey", leaked), "prod")
    assert problem.startswith(f"{NS}:inferenceTlsKey is not PEM text") and leaked not in problem


def test_every_bad_value_is_reported_at_once():
    config = stack_config("dev")
    for key, value in ((f"{NS}:environment", "qa"), (f"{NS}:cpuCluster.maxNodes", "x"), (f"{NS}:registrySku", "Gold")):
        config = with_setting(config, key, value)
    assert len(problems_for(config)) == 3


def test_the_program_declares_nothing_when_settings_are_bad():
    monitor = RecordingMonitor(PlatformMocks())
    config = with_setting(stack_config("dev"), f"{NS}:cpuCluster.minNodes", 9)
    with pytest.raises(settings.SettingsError, match=r"cpuCluster\.minNodes \(9\) is greater"):
        evaluate("dev", config, monitor=monitor)
    assert monitor.requests == {}


@pytest.mark.parametrize("mode", ["AllowInternetOutbound", "AllowOnlyApprovedOutbound"])
def test_a_managed_network_is_refused_because_it_cannot_hold_kubernetes_compute(mode):
    problem = only_problem(with_setting(stack_config("prod"), f"{NS}:workspace.isolationMode", mode), "prod")
    assert problem.startswith(f"{NS}:workspace.isolationMode is {mode!r}; a managed virtual network cannot hold")
    assert "Kubernetes and attached VMs aren't supported in an Azure Machine Learning managed virtual network." in problem


def test_prod_must_have_its_own_network():
    config = with_setting(stack_config("prod"), f"{NS}:network.isolated", False)
    assert only_problem(config, "prod").startswith(f"{NS}:network.isolated is false; prod keeps compute")


@pytest.mark.parametrize(
    "key, value, says",
    [
        ("trainingSubnet", "10.70.0.0/24", "is outside azureml-platform:network.addressSpace"),
        ("aksSubnet", "10.60.0.128/25", "overlaps"),
        ("aksSubnet", "10.60.4.0/29", "it needs at least 12"),  # 6 nodes + 1 upgrade surge + 5 reserved
        ("addressSpace", "172.16.0.0/12", "the Docker bridge network"),
        ("addressSpace", "10.244.0.0/14", "AKS's pod range"),
        ("privateEndpointSubnet", "10.60.1.0/33", "expected an IPv4 CIDR"),
    ],
)
def test_bad_network_address_plans(key, value, says):
    problems = problems_for(with_setting(stack_config("prod"), f"{NS}:network.{key}", value), "prod")
    assert any(problem.startswith(f"{NS}:network.{key}") and says in problem for problem in problems), problems


@pytest.mark.parametrize(
    "value, says",
    [(["10.1.2.0/24"], "a private range"), (["20.61.0.0/31"], "no /31"), (["not-an-ip"], "expected an IPv4 address"),
     ("20.61.0.0/24", None)],
)  # fmt: skip
def test_allowed_ip_ranges_are_public_ipv4(value, says):
    config = with_setting(stack_config("prod"), f"{NS}:network.allowedIpRanges", value)
    if says is None:  # one range on its own is read as a list of one
        assert settings.parse(config, "prod").network.allowed_ip_ranges == ("20.61.0.0/24",)
    else:
        assert says in only_problem(config, "prod")


def test_a_switched_off_network_is_not_checked():
    config = with_setting(stack_config("dev"), f"{NS}:network.addressSpace", "not a cidr")
    assert settings.parse(config, "dev").network.isolated is False


def test_registry_features_need_premium():
    config = with_setting(stack_config("dev"), f"{NS}:registryZoneRedundancy", True)
    assert only_problem(config).startswith(f"{NS}:registryZoneRedundancy is true with registrySku 'Basic'")
    problems = problems_for(with_setting(stack_config("prod"), f"{NS}:registrySku", "Standard"), "prod")
    assert any("private endpoints need a Premium registry" in problem for problem in problems), problems


def test_storage_sku_must_suit_a_workspace():
    problem = only_problem(with_setting(stack_config("dev"), f"{NS}:storageSku", "Premium_LRS"))
    assert problem.startswith(f"{NS}:storageSku is 'Premium_LRS'; allowed: Standard_LRS")


def test_aks_authorized_ranges_and_switches():
    assert "expected an IPv4 address or CIDR" in only_problem(
        with_setting(stack_config("dev"), f"{NS}:aks.authorizedIpRanges", ["somewhere"]))
    assert only_problem(with_setting(stack_config("dev"), f"{NS}:aks.encryptionAtHost", "maybe")) == (
        f"{NS}:aks.encryptionAtHost is 'maybe'; allowed: true, false")
    too_many = [f"20.{i // 250}.{i % 250}.0/24" for i in range(201)]
    assert "the limit is 200" in only_problem(with_setting(stack_config("dev"), f"{NS}:aks.authorizedIpRanges", too_many))


def test_a_nodeport_router_is_refused_since_its_port_setting_is_not_sent():
    problem = only_problem(with_setting(stack_config("dev"), f"{NS}:inference.routerServiceType", "NodePort"))
    assert problem == f"{NS}:inference.routerServiceType is 'NodePort'; allowed: LoadBalancer, ClusterIP"
