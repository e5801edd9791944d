"""The CrossGuard pack (policies/): every policy passes on every stack and catches each violating case.

Pulumi ships no test harness for policy packs (pulumi/pulumi-policy#445), so these tests build the policies'
arguments as the policy server does (pulumi_policy/policy.py, Analyze and AnalyzeStack): the wire properties
the engine registered, deserialized and wrapped in the unknown-checking proxy, with parents and property
dependencies resolved to PolicyResource objects.
"""

import copy
from pathlib import Path

import pytest
import yaml
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
)
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from infra import rules, security
from policies import pack
from rule_cases import cases, entries
from stack_harness import ROOT, every_stack, run_stack

STACKS = every_stack()  # the stack files, each with a team, and the ML registry's
CASES = cases()
POLICIES = {policy.name: policy for policy in pack.policies()}


def _options(entry) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=entry.protect, ignore_changes=list(entry.resource.ignore_changes),
        delete_before_replace=entry.resource.delete_before_replace, aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0), additional_secret_outputs=list(entry.resource.additional_secret_outputs),
        parent=entry.parent or None,
    )  # fmt: skip


def _props(entry):
    return unknown_checking_proxy(deserialize_properties(copy.deepcopy(entry.props)))


def resource_args(entry) -> ResourceValidationArgs:
    return ResourceValidationArgs(entry.resource.type, _props(entry), entry.urn, entry.resource.name, _options(entry), None, {}, {})


def stack_args(items) -> StackValidationArgs:
    built = {entry.urn: PolicyResource(entry.resource.type, _props(entry), entry.urn, entry.resource.name, _options(entry),
                                       None, None, [], {}) for entry in items}  # fmt: skip
    for entry in items:
        resource = built[entry.urn]
        resource.parent = built.get(entry.parent)
        resource.property_dependencies = {
            prop: [built[urn] for urn in urns if urn in built] for prop, urns in entry.property_dependencies.items()
        }
    return StackValidationArgs(list(built.values()), {}, {})


def run_policy(policy, items) -> list[str]:
    found = []
    report = lambda message, urn=None: found.append(message)  # noqa: E731
    if isinstance(policy, ResourceValidationPolicy):
        for entry in items:
            policy.validate(resource_args(entry), report)
    else:
        policy.validate(stack_args(items), report)
    return found


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


def test_the_pack_runs_in_the_projects_virtualenv_and_serves_these_policies():
    project = yaml.safe_load((ROOT / "policies" / "PulumiPolicy.yaml").read_text())
    assert project["runtime"] == {"name": "python", "options": {"virtualenv": "../.venv"}}
    main = (ROOT / "policies" / "__main__.py").read_text()
    assert "PolicyPack(name=PACK_NAME, policies=policies())" in main
    assert "pulumi-policy" in Path(ROOT / "requirements.txt").read_text()
