"""The CrossGuard pack (policies/): every policy passes on every stack and catches each violating case, run as the
policy server runs them (tests/policy_harness.py)."""


import pytest
import yaml
from pulumi_policy import EnforcementLevel, ResourceValidationPolicy
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from infra import rules, security
from policies import pack
from policy_harness import run_policy
from rule_cases import cases, entries
from stack_harness import ROOT, every_stack, run_stack

STACKS = every_stack()  # the stack files, each with a team, and the ML registry's
CASES = cases()
POLICIES = {policy.name: policy for policy in pack.policies()}


# the advisory report of the Azure Policy findings the platform keeps speaks on every stack without exemptions
ADVISORY_REPORTS = {registered.name for registered in rules.rules(["conformance"])}


@pytest.mark.parametrize("stack", STACKS)
def test_every_policy_passes_on_every_stack(stack):
    items = entries(run_stack(stack))
    found = {name: run_policy(policy, items) for name, policy in POLICIES.items() if name not in ADVISORY_REPORTS}
    assert {name: lines for name, lines in found.items() if lines} == {}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_policy_catches_a_violation(case):
    found = run_policy(POLICIES[case.rule], case.edit(entries(run_stack(case.stack))))
    assert any(case.says in message for message in found), found


def test_one_policy_per_rule_mandatory_but_for_style():
    assert set(POLICIES) == {registered.name for registered in rules.rules()}
    for registered in rules.rules():
        expected = EnforcementLevel.ADVISORY if registered.kind in ("style", "conformance") else EnforcementLevel.MANDATORY
        assert POLICIES[registered.name].enforcement_level == expected, registered.name
        assert isinstance(POLICIES[registered.name], ResourceValidationPolicy) == (registered.resource_check is not None)


@pytest.mark.parametrize("stack", ["prod", "prod+team"])
def test_policies_skip_what_a_preview_cannot_know(stack):
    """During a first preview, principal IDs and scopes of role assignments are unknown: the policies must
    neither fail on the proxy's UnknownValueError (it would downgrade the policy to advisory) nor misreport."""
    items = entries(run_stack(stack))
    for entry in items:
        if entry.resource.type == security.ROLE_ASSIGNMENT:
            entry.props.update(principalId=UNKNOWN_STRING_VALUE, scope=UNKNOWN_STRING_VALUE)
        if entry.resource.type == security.COMPUTE and entry.props["properties"]["computeType"] == "ComputeInstance":
            # a workstation's workspace and subnet do not exist yet either
            entry.props.update(workspaceName=UNKNOWN_STRING_VALUE)
            if "subnet" in entry.props["properties"]["properties"]:
                entry.props["properties"]["properties"]["subnet"] = {"id": UNKNOWN_STRING_VALUE}
    assert {name: found for name, policy in POLICIES.items() if name not in ADVISORY_REPORTS and (found := run_policy(policy, items))} == {}


def test_the_pack_and_the_programs_run_in_the_infra_environment_and_serve_these_policies():
    """One environment, installed by uv from the lock's default group (infra), for the programs and the pack."""
    import tomllib

    infra = {"name": "python", "options": {"toolchain": "uv", "virtualenv": ".venv-infra"}}
    for project_file, prefix in (("Pulumi.yaml", ""), ("ml-registry/Pulumi.yaml", "../"), ("policies/PulumiPolicy.yaml", "../")):
        runtime = yaml.safe_load((ROOT / project_file).read_text())["runtime"]
        assert runtime == {**infra, "options": {**infra["options"], "virtualenv": prefix + ".venv-infra"}}, project_file
    main = (ROOT / "policies" / "__main__.py").read_text()
    assert "PolicyPack(name=PACK_NAME, policies=policies())" in main
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["uv"]["default-groups"] == ["infra"]
    assert any(pin.startswith("pulumi-policy==") for pin in project["dependency-groups"]["infra"])
