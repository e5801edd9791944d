"""Bad stack config fails before any resource is declared, with one message per bad value naming its key."""

import pytest

from infra import settings
from stack_harness import PlatformMocks, RecordingMonitor, evaluate, stack_config, with_setting

NS = "azureml-platform"


def problems_for(config, stack="dev"):
    with pytest.raises(settings.SettingsError) as raised:
        settings.parse(config, stack)
    return raised.value.problems


def only_problem(config, stack="dev"):
    problems = problems_for(config, stack)
    assert len(problems) == 1, problems
    return problems[0]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_stack_files_are_valid(stack):
    parsed = settings.parse(stack_config(stack), stack)
    assert parsed.environment == stack
    assert parsed.tags == {"project": NS, "stack": stack, "managed-by": "pulumi"}


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
