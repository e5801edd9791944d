"""Names: valid for Azure, deterministic per stack, different between stacks."""

from dataclasses import astuple

import pytest

from infra.naming import ENDPOINT_RULE, RULES, Names, stack_suffix
from stack_harness import stack_names

PROJECT = "azureml-platform"


@pytest.mark.parametrize("stack", stack_names())
def test_every_name_of_every_stack_is_valid(stack):
    assert Names.build(PROJECT, stack, "mlp").problems() == []


def test_names_are_deterministic_and_differ_between_stacks():
    assert Names.build(PROJECT, "dev", "mlp") == Names.build(PROJECT, "dev", "mlp")
    dev, prod = Names.build(PROJECT, "dev", "mlp"), Names.build(PROJECT, "prod", "mlp")
    unique = ("storage_account", "key_vault", "registry", "workspace")
    for field in unique:
        assert getattr(dev, field) != getattr(prod, field), field


def test_a_new_name_generation_gives_fresh_globally_unique_names():
    # soft-deleted Key Vaults and workspaces hold their names after a destroy
    first, second = Names.build(PROJECT, "dev", "mlp", 0), Names.build(PROJECT, "dev", "mlp", 1)
    assert first.key_vault != second.key_vault and first.workspace != second.workspace
    assert stack_suffix(PROJECT, "dev", "mlp", 0).isalnum()


def test_hyphenated_stack_names_still_make_valid_storage_and_registry_names():
    names = Names.build(PROJECT, "dev-alice", "mlp")
    assert names.problems() == []
    assert "-" not in names.storage_account and "-" not in names.registry


@pytest.mark.parametrize(
    "rule, name",
    [
        ("storage_account", "Stmlpdev12345"),
        ("storage_account", "st"),
        ("key_vault", "kv--double-hyphen"),
        ("key_vault", "1kv-starts-with-digit"),
        ("key_vault", "kv-" + "x" * 22),
        ("registry", "cr-with-hyphen"),
        ("cpu_cluster", "a-compute-name-too-long"),
    ],
)
def test_rules_reject_invalid_names(rule, name):
    assert RULES[rule].check(name) is not None


@pytest.mark.parametrize("name", ["9-starts-with-digit", "e" * 33, "ends-with-hyphen-", "ab"])
def test_the_online_endpoint_rule_rejects_invalid_names(name):
    assert ENDPOINT_RULE.check(name) is not None


def test_every_name_has_a_rule():
    names = Names.build(PROJECT, "dev", "mlp")
    assert len(astuple(names)) == len(RULES)
